"""Stochastic Weight Averaging (Izmailov et al., 2018) as a Lightning callback: validation,
checkpoints and the final model use the uniform average of the weights from ``start_epoch`` on.

Lightning's ``WeightAveraging`` does the swapping in and out around validation and writes the
average into every checkpoint's ``state_dict`` (the raw weights under ``current_model_state``),
exactly as ``EMAWeightAveraging`` (conf/callbacks/ema.yaml) does. Three things differ from using
it bare: averaging starts at an epoch; until the first update, validation and checkpoints see the
weights being trained, not the untrained copy the average starts from; and buffers that do not
change (the +inf "gate off" thresholds) stay as they are instead of becoming NaN (inf - inf).
Batch-norm statistics are averaged with the weights (``use_buffers=True``), the approximation
``EMAWeightAveraging`` makes too, so no extra pass over the data is needed.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging


def uniform_average(averaged: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
    """The running mean after one more sample; an unchanged value (also +inf) is left exact."""
    step = averaged + (current - averaged) / (n_averaged + 1)
    return torch.where(current == averaged, averaged, step)


class StochasticWeightAveraging(WeightAveraging):
    """Uniform average of the weights after every optimizer step of epoch ``start_epoch`` and later.

    Batch-norm running statistics are averaged alongside (``use_buffers``), so the checkpoints'
    statistics belong to the averaged weights, not to the last step's.
    """

    def __init__(
        self, start_epoch: int = 4, device: torch.device | str | None = None, use_buffers: bool = True
    ) -> None:
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")
        super().__init__(device=device, use_buffers=use_buffers, avg_fn=uniform_average)
        self.start_epoch = start_epoch
        self._epoch = 0

    @property
    def averaging(self) -> bool:
        """Whether the average holds at least one update (before that it is the initial weights)."""
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and self._epoch >= self.start_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch = trainer.current_epoch

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averaging:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averaging:  # no update happens during validation: the same answer as at its start
            super().on_validation_epoch_end(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.averaging:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averaging:
            super().on_train_end(trainer, pl_module)
