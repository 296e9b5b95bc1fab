"""Hydra plugin ``hydra/sweeper=skinlesion_optuna``: hydra-optuna-sweeper with a study-wide budget.

Hydra only loads plugins from the ``hydra_plugins`` package and imports every module here while it
scans, so this module stays light; the loop lives in ``skinlesion.sweeps.hydra_sweeper``.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig


@dataclass
class ResumableOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.skinlesion_sweeper.skinlesion_sweeper.ResumableOptunaSweeper"
    # n_trials: how many trials of the study end with a result (COMPLETE or PRUNED), running ones
    # included; the same command run again runs only what is missing (see docs/sweeps.md).
    n_trials: int = 20
    n_jobs: int = 1  # trials at once (one launcher job each; the basic launcher runs one at a time)
    # The run stops once more than this fraction of n_trials has failed in it.
    max_failure_rate: float = 0.5
    # Seconds between heartbeats of running trials; a trial silent for twice as long was killed
    # and is run again. null: no heartbeats (killed trials then stay RUNNING).
    heartbeat_interval: Any = 30
    # Parameters that exist only for some choices: {name: {if: {key: [values]}, suggest: expr}}
    conditional: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="skinlesion_optuna", node=ResumableOptunaSweeperConf, provider="skinlesion"
)


class ResumableOptunaSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        from skinlesion.sweeps.hydra_sweeper import ResumableOptunaSweeperImpl

        self.sweeper = ResumableOptunaSweeperImpl(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
