"""The other-rash gate: fitted on other rashes, thresholded on in-class photos, said in plain words."""

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from skinlesion.core.errors import DataError
from skinlesion.inference.decision import NOT_KNOWN, Thresholds, decide
from skinlesion.inference.loading import load_classifier
from skinlesion.inference.other_rash import other_datamodule, other_rash_sets
from skinlesion.inference.torch_backend import thresholds_of
from skinlesion.models.abstention import AbstainParams
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.graph import InferenceGraph
from skinlesion.models.other import (
    OtherRashLoaders,
    catch_summary,
    cross_fitted_catch,
    fit_other_gate,
    gate_features,
    operating_point,
    other_score,
)
from skinlesion.models.temperature import calibrate_checkpoint
from skinlesion.reports.tradeoff import best_under, scores, tradeoff
from tests.helpers import compose_task, make_class_folders

CLASSES = ["Chickenpox", "Measles", "Monkeypox", "Normal"]


@pytest.fixture
def model() -> SkinLesionClassifier:
    torch.manual_seed(0)
    return SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False).eval()


def outputs(model: SkinLesionClassifier, n: int, shift: float, seed: int, labels: int = 4) -> dict:
    """Shaped like ``collect_outputs``: taps around class centres, moved by ``shift``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _, taps, _ = InferenceGraph(model).features(torch.zeros(1, 3, 32, 32))
    y = torch.arange(n) % labels
    parts = [
        torch.eye(labels, t.shape[1])[y] * 3 + shift + torch.randn(n, t.shape[1], generator=g) for t in taps
    ]
    return {"taps": parts, "targets": y, "logits": torch.zeros(n, 4)}


def test_the_gate_turns_away_the_requested_share_of_in_class_photos_and_most_other_rashes(model):
    inside, outside = outputs(model, 400, 0.0, 0), outputs(model, 200, 0.8, 1, labels=2)
    val = outputs(model, 400, 0.0, 2)
    buffers, summary = fit_other_gate(model, inside, outside, val, reject=0.05)
    val_scores = other_score(model, val["taps"])
    assert (val_scores > summary["other/threshold"]).float().mean() == pytest.approx(0.05, abs=0.01)
    assert float(torch.quantile(val_scores, 0.5)) == pytest.approx(0.0, abs=1e-4)  # scaled on in-class val
    held_out = outputs(model, 200, 0.8, 3, labels=2)  # other rashes never fitted on
    assert (other_score(model, held_out["taps"]) > summary["other/threshold"]).float().mean() > 0.9
    assert thresholds_of(model).other_score == pytest.approx(summary["other/threshold"], rel=1e-5)
    x = gate_features(held_out["taps"])
    torch.testing.assert_close(
        other_score(model, held_out["taps"]),
        (x - buffers["other_centre"]) @ buffers["other_weight"] + buffers["other_bias"],
    )


def test_the_exported_graph_computes_the_same_score(model):
    inside, outside = outputs(model, 100, 0.0, 0), outputs(model, 60, 0.8, 1, labels=2)
    fit_other_gate(model, inside, outside, inside, reject=0.05)
    x = torch.randn(3, 3, 32, 32)
    graph = InferenceGraph(model)
    with torch.no_grad():
        _, taps, _ = graph.features(x)
        torch.testing.assert_close(graph(x)[3], other_score(model, taps))
    fresh = SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False).eval()
    with torch.no_grad():
        assert InferenceGraph(fresh)(x)[3].tolist() == [0.0] * 3  # not fitted: the gate is off
    assert thresholds_of(fresh).other_score is None


def test_the_page_words_for_another_rash():
    t = Thresholds(ood_score=2.0, other_score=1.5, set_level=0.9, set_thresholds=(0.1,) * 4)
    d = decide([0.1, 0.1, 0.7, 0.1], CLASSES, 1.0, t, other_score=3.0)
    assert d.abstained and d.reason == "other_condition" and d.prediction_set == () and d.answer is None
    assert d.message.startswith(f"{NOT_KNOWN} (Chickenpox, Measles, Monkeypox or Normal)")
    assert decide([0.1, 0.1, 0.7, 0.1], CLASSES, 3.0, t, other_score=3.0).reason == "out_of_distribution"
    assert not decide([0.1, 0.1, 0.7, 0.1], CLASSES, 1.0, t, other_score=1.0).abstained
    assert Thresholds.from_json(t.to_json()) == t


def test_photos_in_a_group_with_the_checkpoints_own_files_never_reach_the_gate(tmp_path):
    """A crop of an own test photo (same group) is left out; other rashes and other sources kept."""
    rows = [
        {"path": "a.jpg", "label": "Monkeypox", "group": "g1", "split": "test", "source": "msid"},
        {"path": "b.jpg", "label": "Monkeypox", "group": "g1", "split": "train", "source": "msld"},
        {"path": "c.jpg", "label": "Cowpox", "group": "g2", "split": "train", "source": "msld"},
        {"path": "d.jpg", "label": "HFMD", "group": "g3", "split": "test", "source": "msld"},
        {"path": "e.jpg", "label": "Measles", "group": "g4", "split": "val", "source": "msld"},
    ]
    other = SimpleNamespace(
        root=tmp_path, manifest_rows=rows, item_path=lambda r: r["path"], source_of=lambda r: r["source"]
    )
    own = SimpleNamespace(
        root=tmp_path,
        datasets={
            "train": SimpleNamespace(items=[]),
            "val": SimpleNamespace(items=[]),
            "test": SimpleNamespace(items=[("a.jpg", 2)]),
        },
    )
    model = SimpleNamespace(
        class_names=CLASSES, preprocessing={"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    )
    sets = other_rash_sets(other, own, model)
    assert sets.outside_names == ["Cowpox", "HFMD"]
    assert sets.outside["train"].items == [("c.jpg", 0)] and sets.outside["test"].items == [("d.jpg", 1)]
    assert sets.inside["train"].items == [] and sets.inside["val"].items == [("e.jpg", 1)]  # b is a's twin
    assert sets.inside["val"].sources == ["msld"] and Path(sets.inside["val"].root) == tmp_path


def test_the_tradeoff_curve_moves_from_nothing_to_everything():
    rng = np.random.default_rng(0)
    rows = [{"set": "test", "ood_score": 0.5, "other_score": v} for v in rng.normal(0, 1, 200)]
    rows += [{"set": "other:test", "ood_score": 0.5, "other_score": v} for v in rng.normal(3, 1, 50)]
    rows += [{"set": "nonskin", "ood_score": 9.0, "other_score": 0.0} for _ in range(10)]

    def group_of(r):
        return {"test": "inside", "other:test": "other", "nonskin": "nonskin"}[r["set"]]

    curves = tradeoff(scores(rows, group_of), ood_threshold=2.0)
    gate = curves["other_gate"]
    assert gate["inside"][0] == pytest.approx(0.4) and gate["inside"][-1] == 0.0 and gate["other"][-1] == 0.0
    assert all(np.diff(gate["other"]) <= 0) and set(gate["nonskin"]) == {1.0}  # the OOD gate stays on
    i = best_under(gate, 0.05)
    assert gate["inside"][i] <= 0.05 and gate["other"][i] > 0.8
    assert curves["ood_only"]["other"][0] == 0.0  # the OOD score alone does not see these rashes


def test_missing_other_rash_data_says_how_to_go_on_without_the_gate(tmp_path, model):
    """A user with MSID alone (no MSLD v2) gets one message naming the path and the way out."""
    cfg = compose_task("calibrate", [f"paths.prepared_dir={tmp_path / 'prepared'}"])
    cfg.other_data.sources.msid.path = str(make_class_folders(tmp_path / "msid", per_class=2))
    cfg.other_data.sources.msld_v2.path = str(tmp_path / "no_msld_v2")
    own = SimpleNamespace(manifest_rows=[{"label": "Normal"}])  # MSID-only: no other rashes of its own
    with pytest.raises(DataError) as caught:
        other_datamodule(cfg.other_data, own, model)
    assert "no_msld_v2" in str(caught.value) and "data@other_data=msid" in str(caught.value)


def test_the_cross_fitted_catch_tells_a_separable_rash_from_one_like_the_classes(model):
    inside, val = outputs(model, 400, 0.0, 0), outputs(model, 200, 0.0, 2)
    patients = [f"p{i // 3}" for i in range(120)]  # three photos per patient, never split
    distinct = cross_fitted_catch(inside, outputs(model, 120, 0.8, 1, labels=2), val, patients, 4)
    alike = cross_fitted_catch(inside, outputs(model, 120, 0.0, 3), val, patients, 4)  # drawn as in-class
    assert list(distinct) == [0.02, 0.03, 0.05, 0.075, 0.10]
    assert distinct[0.05] > 0.9
    assert alike[0.05] < 0.2  # about the budget: nothing learned that holds out
    assert alike[0.02] <= alike[0.10]
    assert cross_fitted_catch(inside, outputs(model, 6, 0.8, 1, labels=2), val, ["one"] * 6, 4) == {}


def test_the_operating_point_is_the_smallest_budget_that_catches_enough():
    catch = {0.02: 0.55, 0.03: 0.62, 0.05: 0.69, 0.10: 0.81}
    assert operating_point(catch, cap=0.05, target=0.6) == 0.03
    assert operating_point(catch, cap=0.05, target=0.5) == 0.02
    assert operating_point(catch, cap=0.05, target=0.8) == 0.05  # 0.10 would, but it is over the cap
    assert operating_point(catch, cap=0.05, target=0.0) == 0.05  # target off: the cap as is
    assert operating_point({}, cap=0.04, target=0.6) == 0.04  # no estimate (one patient)
    summary = catch_summary({0.075: 0.7}, 0.05, 0.6)
    assert summary == {"other/cv_caught_at_7.5pct": 0.7, "other/reject": 0.05, "other/catch_target": 0.6}


class Photos(torch.utils.data.TensorDataset):
    """Images with labels and, like ``ImageListDataset``, a group (patient) per image."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, groups: list[str] | None = None) -> None:
        super().__init__(x, y)
        self.groups = groups


def test_calibration_fits_the_gate_at_the_budget_the_training_patients_support(tmp_path, model):
    g = torch.Generator().manual_seed(0)

    def loader(n: int, other: bool = False) -> torch.utils.data.DataLoader:
        y = torch.arange(n) % (2 if other else 4)
        x = torch.randn(n, 3, 32, 32, generator=g) * 0.3 + (y[:, None, None, None] - 1.5) * 0.2
        if other:  # other rashes: a pattern no in-class photo has
            x[:, 0] += 2.0 * torch.sin(torch.arange(32.0))[None, None, :]
        patients = [f"p{i // 3}" for i in range(n)] if other else None
        return torch.utils.data.DataLoader(Photos(x, y, patients), batch_size=32)

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    train, val, other = loader(120), loader(80), OtherRashLoaders(outside_train=loader(60, other=True))
    summary = calibrate_checkpoint(model, val, tmp_path / "m.ckpt", train, AbstainParams(), other)
    assert summary["other/cv_caught_at_2pct"] >= 0.6 and summary["other/reject"] == 0.02
    assert summary["other/val_inside_rejected"] <= 0.05  # 2 % of 80 photos, up to quantile ties
    saved = load_classifier(tmp_path / "m.ckpt")
    assert float(saved.other_threshold) == pytest.approx(summary["other/threshold"], rel=1e-6)
    fixed = AbstainParams(other_catch=0.0)  # no target: the cap, whatever the curve says
    assert calibrate_checkpoint(model, val, tmp_path / "m.ckpt", train, fixed, other)["other/reject"] == 0.05
