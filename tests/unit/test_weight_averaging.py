"""Stochastic Weight Averaging (callbacks=[default,swa]): validation and checkpoints see the
uniform average of the weights from ``start_epoch`` on, batch-norm statistics included, and the
weights being trained before that."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from skinlesion.models.averaging import StochasticWeightAveraging, uniform_average
from skinlesion.training.fit import train
from tests.helpers import TINY

QUICK = [*TINY, "data.batch_size=8", "trainer.max_epochs=2", "evaluate=false", "link_latest=false"]


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and batch-norm statistics (not the post-fit buffers calibration writes)."""
    return {
        k: v.detach().clone()
        for k, v in module.state_dict().items()
        if k.startswith(("backbone.", "head.")) and v.is_floating_point()
    }


class Recorder(L.Callback):
    """The weights after every training step, and the weights each validation sees."""

    def __init__(self) -> None:
        self.steps: dict[int, list[dict[str, torch.Tensor]]] = {}
        self.validated: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.setdefault(trainer.current_epoch, []).append(weights(pl_module))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:  # after the averaging swapped in
        if not trainer.sanity_checking:
            self.validated[trainer.current_epoch] = weights(pl_module)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> bool:
    return a.keys() <= b.keys() and all(torch.allclose(a[k], b[k], atol=atol) for k in a)


def test_uniform_average_is_the_running_mean_and_keeps_infinities():
    values = [torch.tensor([1.0, math.inf]), torch.tensor([3.0, math.inf]), torch.tensor([8.0, math.inf])]
    avg = values[0].clone()
    for n, v in enumerate(values[1:], start=1):
        avg = uniform_average(avg, v, torch.tensor(n))
    assert avg[0] == pytest.approx(4.0) and avg[1] == math.inf
    cb = StochasticWeightAveraging(start_epoch=2)
    assert not cb.should_update(step_idx=5) and not cb.should_update(epoch_idx=3)
    cb._epoch = 2
    assert cb.should_update(step_idx=9) and not cb.should_update(epoch_idx=2)  # every step, not epochs
    with pytest.raises(ValueError, match="start_epoch"):
        StochasticWeightAveraging(start_epoch=-1)


def test_a_tiny_run_checkpoints_the_running_average(tmp_path: Path, compose_cfg, synthetic_root):
    cfg = compose_cfg(
        f"data.root={synthetic_root}",
        *QUICK,
        "callbacks=[default,swa]",
        "callbacks.swa.start_epoch=1",
        "callbacks.model_checkpoint.save_top_k=-1",  # keep every epoch's checkpoint
        'callbacks.model_checkpoint.filename="epoch{epoch}"',
    )
    recorder = Recorder()
    objective = train(cfg, extra_callbacks=[recorder])
    assert math.isfinite(objective)
    assert len(recorder.steps[0]) >= 2 and len(recorder.steps[1]) >= 2
    average = {k: torch.stack([s[k] for s in recorder.steps[1]]).mean(0) for k in recorder.steps[1][0]}

    # before start_epoch, validation sees the weights being trained; from it on, the running average
    assert same(recorder.validated[0], recorder.steps[0][-1])
    assert same(recorder.validated[1], average, atol=1e-5)
    bn = "backbone.body.stages.0.1.running_mean"  # batch-norm statistics are averaged too
    assert bn in average and not torch.allclose(average[bn], recorder.steps[1][-1][bn])

    saved = Path(cfg.paths.output_dir) / "checkpoints"
    first = torch.load(saved / "epoch0.ckpt", weights_only=True)
    second = torch.load(saved / "epoch1.ckpt", weights_only=True)
    assert "current_model_state" not in first and same(recorder.steps[0][-1], first["state_dict"])
    assert same(average, second["state_dict"], atol=1e-5)  # the checkpoint holds the average ...
    assert same(recorder.steps[1][-1], second["current_model_state"])  # ... beside the raw weights
    assert not same(average, second["current_model_state"], atol=1e-4)
    assert int(second["averaging_state"]["n_averaged"]) == len(recorder.steps[1])
    stored = [v for c in (first, second) for v in c["state_dict"].values() if v.is_floating_point()]
    assert not any(v.isnan().any() for v in stored)  # the +inf "gate off" buffers: no inf - inf
