"""A Lightning 2.x pruning callback: report val macro-F1 to the trial after every epoch.

optuna 2.10's ``PyTorchLightningPruningCallback`` is written against the old ``pytorch_lightning``
package and its hooks, not ``lightning`` 2.x, so this is the few lines it takes.
"""

from __future__ import annotations

import lightning as L
import optuna

from skinlesion.models.classifier import MONITOR


class OptunaPruning(L.Callback):
    """Report ``monitor`` after each validation; raise ``TrialPruned`` when the pruner says stop.

    Raising ends ``fit`` at once (Lightning tears down and re-raises), so a pruned trial skips
    calibration and testing as well as its remaining epochs.
    """

    def __init__(self, trial: optuna.trial.Trial, monitor: str = MONITOR) -> None:
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self.monitor}={value:.4f}")
