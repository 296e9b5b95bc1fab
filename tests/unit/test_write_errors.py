"""A full disk, a kill mid-write or an unwritable output directory: a clear error, never a half file."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from skinlesion.core.artifacts import atomic_write, write_json
from skinlesion.core.checkpoints import SafeCheckpointIO, load_checkpoint
from skinlesion.core.task import run_task
from skinlesion.inference.loading import load_classifier
from skinlesion.training.fit import train
from tests.helpers import partial_files


def disk_full_after(n_ok: int, real_save=torch.save):
    """A torch.save that works ``n_ok`` times, then writes half a file and fails with ENOSPC."""
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= n_ok:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


def test_atomic_write_keeps_the_old_file_when_the_disk_fills(tmp_path):
    target = write_json(tmp_path / "metrics.json", {"good": 1})
    before = target.read_bytes()

    def writer(fh):
        fh.write(b'{"half": ')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, writer)
    assert target.read_bytes() == before and partial_files(tmp_path) == []


def test_checkpoint_io_disk_full_is_a_clear_error_and_best_survives(tmp_path, monkeypatch):
    io = SafeCheckpointIO()
    best = tmp_path / "checkpoints/best.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.arange(4.0)}, "epoch": 0}, best)
    monkeypatch.setattr(torch, "save", disk_full_after(0))
    with pytest.raises(Exception, match=r"cannot write .*best\.ckpt: No space left.*disk is full.*unchanged"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(4)}, "epoch": 1}, best)
    assert torch.equal(load_checkpoint(best)["state_dict"]["w"], torch.arange(4.0))
    assert partial_files(tmp_path) == []


def test_disk_full_during_training_stops_with_one_line_and_keeps_best(
    tmp_path, synthetic_root, compose_cfg, monkeypatch, capsys
):
    cfg = compose_cfg(
        f"data.root={synthetic_root}",
        "model=simple_cnn",
        "data.image_size=32",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "callbacks.progress_bar=null",
        "callbacks.model_checkpoint.monitor=null",  # save best.ckpt every epoch: epoch 1 must rewrite it
        "logger=csv",
    )
    monkeypatch.setattr(torch, "save", disk_full_after(2))  # epoch 0: best + last; epoch 1: best fails
    with pytest.raises(SystemExit) as exit_info:
        run_task(train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("skinlesion train: error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "best.ckpt: No space left on device" in errors[0] and "disk is full" in errors[0]
    best = tmp_path / "outputs/run/checkpoints/best.ckpt"
    assert load_checkpoint(best)["epoch"] == 0
    assert load_classifier(best).class_names  # still a usable model
    assert partial_files(tmp_path) == []
