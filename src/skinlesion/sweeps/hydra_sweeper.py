"""The sweep loop behind ``hydra/sweeper=skinlesion_optuna`` (``hparams_search=optuna``).

hydra-optuna-sweeper 1.3.0 runs ``n_trials`` more trials on every call, so re-running a command
repeats the whole budget; a NaN objective makes ``study.tell`` raise inside its error handler and
ends the sweep; ``max_failure_rate`` is checked per batch, so with one trial at a time (the
default) a single failure stops the sweep; and a killed trial stays RUNNING for ever. This
subclass keeps its search-space grammar and launcher handling and replaces the loop with the one
in ``skinlesion.sweeps.loop``, shared with ``python -m skinlesion.sweep_native``.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from optuna import Study
from optuna.trial import Trial, TrialState

from skinlesion.core.errors import ConfigError
from skinlesion.sweeps.loop import open_sweep, run_sweep
from skinlesion.sweeps.study import OUTPUT_ATTR, finish_trial

log = logging.getLogger(__name__)


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(
        self,
        heartbeat_interval: int | None = 30,
        conditional: Any = None,
        grid: bool = False,
        **upstream: Any,
    ) -> None:
        super().__init__(**upstream)  # the three own fields are read from the config node in sweep()

    def sweep(self, arguments: list[str]) -> None:
        if isinstance(self.sampler, functools.partial):
            raise ConfigError(
                "optuna's grid sampler is not supported here; set hydra.sweeper.grid=true "
                "(every combination of the choice(...) parameters, queued in the study)"
            )
        if self.custom_search_space_extender or self.search_space or len(self._get_directions()) != 1:
            raise ConfigError(
                "hydra.sweeper: one objective (val macro-F1); the space goes in params, conditional "
                "parameters in conditional (not search_space or custom_search_space)"
            )
        search = open_sweep(self.config.hydra.sweeper, arguments, sampler=self.sampler)

        def run_batch(trials: list[Trial]) -> list[TrialState]:
            returns = self.launcher.launch(
                [search.configure(t) for t in trials], initial_job_idx=self.job_idx
            )
            self.job_idx += len(returns)
            return [tell(search.study, t, r) for t, r in zip(trials, returns, strict=True)]

        run_sweep(search, run_batch, self.n_jobs, Path(self.config.hydra.sweep.dir))


def tell(study: Study, trial: Trial, ret: JobReturn) -> TrialState:
    """Record a job's outcome: its return value, or the exception it raised, as the trial's state."""
    attrs = {}
    if ret.hydra_cfg is not None:
        output_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
        attrs = {"job": ret.hydra_cfg.hydra.job.num, OUTPUT_ATTR: str(output_dir)}
        if (output_dir / "metrics.json").is_file():  # written by skinlesion.train: how long it trained
            attrs["epochs"] = json.loads((output_dir / "metrics.json").read_text()).get("epochs")
    try:
        value, error = float(ret.return_value), None  # return_value re-raises the job's exception
    except Exception as e:
        value, error = None, e
    return finish_trial(study, trial, value, error, attrs=attrs)
