"""A checkpoint whose pickle would run code is refused by every loader, and the code never runs."""

from __future__ import annotations

import pytest
import torch

from skinlesion.core.checkpoints import SafeCheckpointIO, load_checkpoint
from skinlesion.core.errors import CheckpointError
from skinlesion.data.datamodule import SkinLesionDataModule
from skinlesion.inference.loading import load_classifier
from skinlesion.models.backbones import load_in_order
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.temperature import update_checkpoint_buffers
from skinlesion.training.fit import train
from tests.helpers import CLASSES, quiet_trainer

REFUSED = r"refused to load .*could run code.*Unsupported global"


def test_the_payload_is_live_when_loaded_unsafely(evil):
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()  # so the assertions below would catch a loader that runs it


@pytest.mark.parametrize(
    "load",
    [
        load_classifier,
        lambda p: SkinLesionClassifier.load_from_checkpoint(p),
        lambda p: SkinLesionDataModule.load_from_checkpoint(p, weights_only=True),
        load_checkpoint,
        lambda p: update_checkpoint_buffers(p, {"temperature": torch.ones(())}),
        lambda p: load_in_order(torch.nn.Linear(2, 2), p),
        lambda p: SafeCheckpointIO().load_checkpoint(p, weights_only=False),
    ],
    ids=["load_classifier", "classifier", "datamodule", "torch", "calibration", "backbone", "ckpt-io"],
)
def test_every_loader_refuses_it(evil, load, monkeypatch):
    path, marker = evil
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # must not switch the guard off
    with pytest.raises(CheckpointError, match=REFUSED):
        load(path)
    assert not marker.exists()


def test_weights_only_false_is_refused_outright(evil):
    with pytest.raises(CheckpointError, match="weights_only=False"):
        SkinLesionClassifier.load_from_checkpoint(evil[0], weights_only=False)


def test_resuming_training_refuses_it(evil, synthetic_root, compose_cfg, tmp_path, monkeypatch):
    path, marker = evil
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    dm = SkinLesionDataModule(
        root=str(synthetic_root), prepared_dir=str(tmp_path / "p"), class_names=CLASSES, image_size=32
    )
    model = SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False)
    # control: with that variable set, Lightning's default (weights_only=None) runs the payload
    with pytest.raises(Exception):  # noqa: B017 - whatever Lightning makes of the file afterwards
        quiet_trainer().fit(model, datamodule=dm, ckpt_path=path)
    assert marker.exists()
    marker.unlink()
    # the project's checkpoint plug-in forces weights_only=True whatever the caller passes
    with pytest.raises(CheckpointError, match=REFUSED):
        quiet_trainer(plugins=[SafeCheckpointIO()]).fit(model, datamodule=dm, ckpt_path=path)
    # and so does the train entry point, before Lightning sees the file
    cfg = compose_cfg(f"data.root={synthetic_root}", "model=simple_cnn", f"ckpt_path={path}")
    with pytest.raises(CheckpointError, match=REFUSED):
        train(cfg)
    assert not marker.exists()
