"""Abstention: thresholds fitted to the requested share of validation images, stored in the checkpoint."""

import lightning as L
import pytest
import torch

from skinlesion.inference.decision import Thresholds
from skinlesion.inference.loading import load_classifier
from skinlesion.inference.torch_backend import thresholds_of
from skinlesion.models.abstention import AbstainParams, class_gaussian, fit_abstention
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.graph import InferenceGraph
from skinlesion.models.ood import ood_score
from skinlesion.models.temperature import update_checkpoint_buffers

CLASSES = ["a", "b", "c", "d"]


@pytest.fixture
def model() -> SkinLesionClassifier:
    torch.manual_seed(0)
    return SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False).eval()


def tap_features(model: SkinLesionClassifier, n: int, seed: int) -> dict:
    """Outputs shaped like ``collect_outputs``: per tapped stage, features around 4 class centres."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    with torch.no_grad():
        dims = [t.shape[1] for t in InferenceGraph(model).features(torch.zeros(1, 3, 32, 32))[1]]
    taps = [torch.eye(4, d)[y] * 6 + torch.randn(n, d, generator=g) for d in dims]
    logits = torch.nn.functional.one_hot(y, 4) * torch.linspace(0.2, 4.0, n)[:, None]  # mixed confidence
    return {"taps": taps, "logits": logits.float(), "targets": y}


def test_the_taps_are_the_deeper_half_of_the_backbone(model):
    assert model.ood_taps == [model.backbone.stages[2]]  # simple_cnn: 4 stages -> the third
    lite0 = SkinLesionClassifier(CLASSES, backbone="efficientnet_lite0", pretrained=False)
    assert lite0.ood_taps == list(lite0.backbone.body.blocks[4:7])  # stem, 7 blocks, head -> blocks 4-6


def test_class_gaussian_recovers_means_and_precision():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(20000) % 2
    x = (
        torch.randn(20000, 2, generator=g) * torch.tensor([1.0, 2.0])
        + torch.tensor([[0.0, 0.0], [5.0, 5.0]])[y]
    )
    means, precision = class_gaussian(x, y, 2)
    torch.testing.assert_close(means, torch.tensor([[0.0, 0.0], [5.0, 5.0]]), atol=0.05, rtol=0)
    torch.testing.assert_close(precision, torch.diag(torch.tensor([1.0, 0.25])), atol=0.03, rtol=0)


def test_each_gate_turns_away_the_requested_share_of_val(model):
    train, val = tap_features(model, 400, 0), tap_features(model, 400, 1)
    params = AbstainParams(ood_reject=0.10, confidence_reject=0.05)
    _, summary = fit_abstention(model, val, train, params)
    score = ood_score(model, val["taps"])
    assert (score > summary["abstain/ood_threshold"]).float().mean() == pytest.approx(0.10, abs=0.01)
    assert summary["abstain/val_rejected"] == pytest.approx(0.10 + 0.9 * 0.05, abs=0.015)
    t = thresholds_of(model)
    assert t.ood_score == pytest.approx(summary["abstain/ood_threshold"], rel=1e-5)
    assert t.confidence == pytest.approx(summary["abstain/confidence_threshold"], rel=1e-5)
    far = [torch.full((1, f.shape[1]), -8.0) for f in val["taps"]]  # nowhere near a class
    assert ood_score(model, far).item() > 10 * t.ood_score


def test_bad_abstain_settings_are_refused():
    with pytest.raises(ValueError, match="ood_reject"):
        AbstainParams(ood_reject=0.7)
    with pytest.raises(ValueError, match="other_catch"):
        AbstainParams(other_catch=1.5)


def save(model: SkinLesionClassifier, path) -> None:
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)


def test_fitted_statistics_of_any_size_travel_in_the_checkpoint(tmp_path, model):
    train, val = tap_features(model, 80, 0), tap_features(model, 40, 1)
    buffers, _ = fit_abstention(model, val, train, AbstainParams())
    save(model, tmp_path / "m.ckpt")
    loaded = load_classifier(tmp_path / "m.ckpt")
    for name, value in buffers.items():
        torch.testing.assert_close(getattr(loaded, name), value)
    assert thresholds_of(loaded) == thresholds_of(model)
    update_checkpoint_buffers(tmp_path / "m.ckpt", {"ood_threshold": torch.tensor(7.5)})
    assert thresholds_of(load_classifier(tmp_path / "m.ckpt")).ood_score == 7.5


def test_a_checkpoint_from_before_abstention_loads_with_the_gates_off(tmp_path, model):
    save(model, tmp_path / "old.ckpt")
    ckpt = torch.load(tmp_path / "old.ckpt", weights_only=True)
    post_fit = ("temperature", "confidence_", "ood_", "set_")
    for name in [k for k in ckpt["state_dict"] if k.startswith(post_fit)]:
        del ckpt["state_dict"][name]
    torch.save(ckpt, tmp_path / "old.ckpt")
    loaded = load_classifier(tmp_path / "old.ckpt")
    assert thresholds_of(loaded) == Thresholds()  # every gate off, no prediction sets
    assert loaded.temperature.item() == 1.0 and loaded.ood_scale.numel() == 0
