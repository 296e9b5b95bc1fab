"""Progressive unfreezing: train the head first, then let deeper backbone stages adapt."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback


class ProgressiveUnfreezing(Callback):
    """At the start of each epoch, freeze the first ``schedule[e]`` backbone stages, where ``e`` is the
    largest scheduled epoch not after the current one (e.g. ``{0: 9, 2: 5, 4: 2}``).

    Keyed on the epoch number alone, so a resumed run ends up in the same state.
    """

    def __init__(self, schedule: dict[int, int]) -> None:
        if not schedule or min(schedule) != 0:
            raise ValueError(f"the unfreezing schedule must start at epoch 0, got {schedule}")
        self.schedule = {int(k): int(v) for k, v in schedule.items()}

    def stages_at(self, epoch: int) -> int:
        return self.schedule[max(e for e in self.schedule if e <= epoch)]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wanted = min(self.stages_at(trainer.current_epoch), len(pl_module.backbone.stages))
        if wanted != len(pl_module.frozen):
            pl_module.freeze(wanted)
