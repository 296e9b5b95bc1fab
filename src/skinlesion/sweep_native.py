"""``python -m skinlesion.sweep_native``: the search of ``hparams_search=...``, with pruning.

The Hydra sweeper hears of a trial only when its job ends, so it cannot stop a bad one early. This
entry point runs the same search space against the same study storage and budget, but trains each
trial in this process with Optuna's Lightning pruning callback: val macro-F1 is reported after
every epoch and the pruner (``pruner=median|hyperband|none``) may stop the trial. Trials run one
at a time; start several processes on one storage to run more at once. Trials write to
``<run dir>/trial-<number>/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from optuna.trial import Trial
from optuna_integration import PyTorchLightningPruningCallback

from skinlesion.core.task import command
from skinlesion.models.classifier import MONITOR
from skinlesion.sweeps.loop import open_sweep, run_sweep
from skinlesion.sweeps.study import OUTPUT_ATTR, objective_value
from skinlesion.training.fit import train

log = logging.getLogger(__name__)


def own_override(override: str) -> bool:
    """Overrides that configure this loop rather than a trial (``pruner=...``, ``pruner.x=...``)."""
    return override.lstrip("+~").split("=", 1)[0].split(".", 1)[0] == "pruner"


def sweep(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    arguments = [o for o in hydra_cfg.overrides.task if not own_override(o)]
    search = open_sweep(
        hydra_cfg.sweeper,
        arguments,
        pruner=hydra.utils.instantiate(cfg.pruner, _execution_whitelist_="optuna.pruners.*"),
        default_fixed={"hparams_search": hydra_cfg.runtime.choices.get("hparams_search")},
    )
    log.info("pruner: %s", cfg.pruner._target_)
    run_dir = Path(cfg.paths.output_dir)

    def objective(trial: Trial) -> float:
        output_dir = run_dir / f"trial-{trial.number}"
        trial.set_user_attr(OUTPUT_ATTR, str(output_dir))
        overrides = [*search.configure(trial), f"paths.output_dir={output_dir}"]
        pruning = PyTorchLightningPruningCallback(trial, monitor=MONITOR)
        return objective_value(trial, lambda: train(hydra.compose("sweep_native", overrides), [pruning]))

    best = run_sweep(search, objective, 1, run_dir)
    return best.value if best else None


main = command(sweep, "sweep_native")

if __name__ == "__main__":
    main()
