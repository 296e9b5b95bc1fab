"""The sweep loop behind ``hydra/sweeper=skinlesion_optuna`` (``hparams_search=optuna``).

hydra-optuna-sweeper 1.3.0 runs ``n_trials`` more trials on every call, so re-running a command
repeats the whole budget; a NaN objective makes ``study.tell`` raise inside its error handler and
ends the sweep; ``max_failure_rate`` is checked per batch, so with one trial at a time (the
default) a single failure stops the sweep; and a killed trial stays RUNNING for ever. This
subclass keeps its search-space grammar and launcher handling and replaces the loop with
``skinlesion.sweeps.study.optimize``.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from omegaconf import OmegaConf
from optuna import Study
from optuna.trial import Trial, TrialState

from skinlesion.errors import ConfigError
from skinlesion.sweeps.space import configure_trial, design, parse_conditional, parse_space
from skinlesion.sweeps.study import (
    OUTPUT_ATTR,
    enqueue_grid,
    finish_trial,
    make_storage,
    open_study,
    optimize,
    record_design,
    summary,
    write_results,
)

log = logging.getLogger(__name__)


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(
        self,
        heartbeat_interval: int | None = 30,
        conditional: Any = None,
        grid: bool = False,
        **upstream: Any,
    ) -> None:
        super().__init__(**upstream)
        self.heartbeat_interval = heartbeat_interval
        self.conditionals = parse_conditional(conditional)
        self.grid = grid

    def sweep(self, arguments: list[str]) -> None:
        if isinstance(self.sampler, functools.partial):
            raise ConfigError(
                "optuna's grid sampler is not supported here; set hydra.sweeper.grid=true "
                "(every combination of the choice(...) parameters, queued in the study)"
            )
        if self.custom_search_space_extender or len(self._get_directions()) != 1:
            raise ConfigError(
                "hydra.sweeper: one objective (val macro-F1), and conditional parameters go in "
                "hydra.sweeper.conditional rather than custom_search_space"
            )
        self._process_searchspace_config()
        space, fixed = parse_space(self.params, arguments)
        space = (self.search_space_distributions or {}) | space
        storage = make_storage(self.storage, self.heartbeat_interval)
        study = open_study(self.study_name, storage, self.sampler, self._get_directions()[0])
        record_design(study, design(space, self.conditionals), fixed)
        if self.grid:
            log.info("grid: %d combinations queued", enqueue_grid(study, space))
        log.info("%s (storage %s)", summary(study, self.n_trials), self.storage or "in memory")

        def run_batch(trials: list[Trial]) -> list[TrialState]:
            overrides = [configure_trial(t, space, self.conditionals, fixed) for t in trials]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            return [tell(study, t, r) for t, r in zip(trials, returns, strict=True)]

        sampler_cfg = OmegaConf.to_container(self.config.hydra.sweeper.sampler, resolve=True)
        optimize(study, run_batch, self.n_trials, self.n_jobs, sampler_cfg, self.max_failure_rate)
        log.info(summary(study, self.n_trials))
        write_results(study, Path(self.config.hydra.sweep.dir))


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
