"""Checkpoints written before the layout move still load and predict.

``fixtures/checkpoint_before_layout_move.json`` is the layout of a real checkpoint written by
commit d6b2139 (``python -m skinlesion.train model=simple_cnn data.image_size=32``): its stored
class paths (``hyper_parameters``), parameter names and shapes. Rebuilt with random weights, it
must load through the same safe path as any checkpoint, and its stored ``_target_`` paths must
still resolve.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
import torch
from PIL import Image

from skinlesion.inference.loading import load_classifier
from skinlesion.inference.runtime import Predictor
from skinlesion.inference.torch_backend import TorchBackend
from skinlesion.models.classifier import SkinLesionClassifier
from tests.fixtures.checkpoint_skeleton import write_checkpoint

SKELETON = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoint_before_layout_move.json"


@pytest.fixture
def old_checkpoint(tmp_path: Path) -> Path:
    return write_checkpoint(SKELETON, tmp_path / "old.ckpt")


def stored_targets(node) -> list[str]:
    """Every ``_target_`` string a checkpoint's hyper-parameters hold."""
    if isinstance(node, dict):
        own = [node["_target_"]] if "_target_" in node else []
        return own + [t for v in node.values() for t in stored_targets(v)]
    if isinstance(node, list | tuple):
        return [t for v in node for t in stored_targets(v)]
    return []


def test_old_checkpoint_loads_and_predicts(old_checkpoint: Path) -> None:
    model = load_classifier(old_checkpoint)
    assert isinstance(model, SkinLesionClassifier)
    assert model.class_names == ["Chickenpox", "Measles", "Monkeypox", "Normal"]
    with torch.no_grad():
        probs = model.probabilities(model(torch.randn(2, 3, 32, 32)))
    assert probs.shape == (2, 4) and torch.allclose(probs.sum(1), torch.ones(2))
    photo = Image.new("RGB", (48, 48), (190, 120, 110))
    prediction = Predictor(TorchBackend(model)).predict_image(photo, "skin.png")
    assert prediction.top_class in model.class_names
    assert prediction.prediction == (None if prediction.abstained else prediction.top_class)


def test_class_paths_stored_in_old_checkpoints_still_resolve(old_checkpoint: Path) -> None:
    checkpoint = torch.load(old_checkpoint, weights_only=True)
    targets = stored_targets(checkpoint["hyper_parameters"]) + stored_targets(
        checkpoint["datamodule_hyper_parameters"]
    )
    assert "skinlesion.models.regularizers.WeightPenalty" in targets  # the guard: paths were found
    for target in targets:
        assert callable(hydra.utils.get_object(target)), target
    optimizer = load_classifier(old_checkpoint).configure_optimizers()
    assert optimizer is not None


def test_the_fixture_records_a_real_checkpoint() -> None:
    """The skeleton holds the parts a load reads (weights, hyper-parameters, data settings)."""
    text = SKELETON.read_text()
    assert '"state_dict"' in text and '"hyper_parameters"' in text and '"datamodule_hyper_parameters"' in text
    assert json.loads(text)  # well-formed
