"""Test helper loaded into a training subprocess by a Hydra override: hang at a known point, to be killed."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class StallInSecondEpoch(L.Callback):
    """After epoch 0's checkpoints and one optimizer step of epoch 1, touch ``signal_file`` and hang.

    The test then kills the process with SIGKILL: the step taken in epoch 1 is lost, as in a real crash.
    """

    def __init__(self, signal_file: str) -> None:
        self.signal_file = Path(signal_file)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 1 and batch_idx == 0:
            self.signal_file.touch()
            time.sleep(600)
