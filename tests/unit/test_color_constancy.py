"""Shades of Gray colour constancy inside the model: it removes a colour cast, is off by default,
travels with the checkpoint, and the ONNX export computes the same thing."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image

from skinlesion.inference.loading import load_classifier
from skinlesion.inference.onnx_export import check_parity, export_onnx
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.colour import shades_of_gray
from skinlesion.models.graph import InferenceGraph
from tests.helpers import CLASSES

CAST = torch.tensor([1.25, 1.0, 0.75]).view(1, 3, 1, 1)  # warm light: red up, blue down


def classifier(**kw) -> SkinLesionClassifier:
    torch.manual_seed(0)
    return SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False, image_size=32, **kw).eval()


def photos(n: int = 4, size: int = 32) -> torch.Tensor:
    """[0, 1] images dim enough that the cast never clips."""
    torch.manual_seed(1)
    return 0.1 + 0.6 * torch.rand(n, 3, size, size)


def normalised(model: SkinLesionClassifier, rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - model.input_mean.view(1, 3, 1, 1)) / model.input_std.view(1, 3, 1, 1)


def test_a_cast_photo_and_the_original_give_the_same_model_input():
    model = classifier(color_constancy=6)
    rgb = photos()
    plain, cast = normalised(model, rgb), normalised(model, rgb * CAST)
    assert (plain - cast).abs().max() > 0.3  # the cast is large before correction
    fixed_plain, fixed_cast = model.color_correct(plain), model.color_correct(cast)
    assert (fixed_plain - fixed_cast).abs().max() < 0.02


def test_corrected_channels_share_one_illuminant_estimate():
    rgb = (photos() * CAST).clamp(0, 1)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.5)
    out = shades_of_gray((rgb - 0.5) / 0.5, mean, std, p=6) * 0.5 + 0.5
    e = out.pow(6).mean(dim=(2, 3)).pow(1 / 6)
    assert torch.allclose(e, e.mean(1, keepdim=True).expand_as(e), rtol=1e-3)
    assert out.min() >= 0 and out.max() <= 1


def test_off_by_default_and_for_old_checkpoints():
    model = classifier()
    x = torch.randn(2, 3, 32, 32)
    assert model.hparams.color_constancy == 0 and model.color_correct(x) is x
    assert not any(k.startswith("input_") for k in model.state_dict())  # nothing new in checkpoints


def test_the_setting_travels_with_the_checkpoint_and_into_every_path(tmp_path: Path):
    model = classifier(color_constancy=6)
    path = tmp_path / "cc.ckpt"
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    torch.save(checkpoint, path)
    loaded = load_classifier(path)
    assert loaded.hparams.color_constancy == 6
    x = normalised(model, photos(2) * CAST)
    seen: list[torch.Tensor] = []  # what reaches the first backbone stage, on each path
    loaded.backbone.stages[0].register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        logits = loaded(x)
        probs, *_ = InferenceGraph(loaded)(x)  # export, serving, CAMs, abstention gates
        _, _, graph_logits = InferenceGraph(loaded).features(x)  # fitting the gates, calibration
    want = model.color_correct(x)
    assert len(seen) == 3 and all(torch.allclose(s, want, atol=1e-6) for s in seen)
    assert not torch.allclose(want, x, atol=0.1)
    assert torch.allclose(graph_logits, logits, atol=1e-5)
    assert torch.allclose(probs, loaded.probabilities(logits), atol=1e-5)


def test_onnx_export_matches_pytorch_with_colour_constancy(tmp_path: Path):
    model = classifier(color_constancy=6)
    rng = np.random.default_rng(0)
    files = []
    for k, gains in enumerate([(1.3, 1.0, 0.7), (0.8, 1.0, 1.2), (1.0, 1.0, 1.0)]):
        arr = np.clip(rng.uniform(20, 180, (40, 40, 3)) * np.array(gains), 0, 255).astype(np.uint8)
        files.append(tmp_path / f"photo{k}.png")
        Image.fromarray(arr).save(files[-1])
    parity = check_parity(model, export_onnx(model, tmp_path / "model.onnx"), files)
    assert parity["images"] == 3
    assert parity["max_abs_prob_diff"] <= 1e-4 and parity["end_to_end_prob_diff"] <= 1e-4
    assert parity["max_rel_cam_diff"] <= 1e-4


def test_training_corrects_each_photo_before_mixing(monkeypatch):
    model = classifier(color_constancy=6, mixup_alpha=0.4, cutmix_alpha=1.0).train()
    monkeypatch.setattr(model, "log", lambda *a, **k: None)
    corrected: list[torch.Tensor] = []
    monkeypatch.setattr(model.batch_mix, "forward", lambda x, y: (corrected.append(x), (x, y))[1])
    x = normalised(model, photos(4) * CAST)
    y = torch.arange(4)
    assert torch.isfinite(model.training_step((x, y), 0))
    assert torch.allclose(corrected[0], model.color_correct(x))
