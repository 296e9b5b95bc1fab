"""One sweep from start to end, shared by the Hydra sweeper and ``python -m skinlesion.sweep_native``.

``open_sweep`` reads a ``hydra.sweeper`` config node, opens (or resumes) its study and checks the
search space against it; ``run_sweep`` runs batches of trials until the study's budget is spent
and writes the results. The two entry points differ only in how a batch runs: Hydra's launcher,
or training in-process with a pruning callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from skinlesion.core.errors import SweepError
from skinlesion.sweeps.space import Conditional, configure_trial, design, parse_conditional, parse_space
from skinlesion.sweeps.study import (
    budget_left,
    enqueue_grid,
    heartbeat,
    make_storage,
    open_study,
    record_design,
    recover_interrupted,
    requeue_on_interrupt,
    reseeded,
    summary,
    write_results,
)

log = logging.getLogger(__name__)


@dataclass
class Sweep:
    study: optuna.Study
    search: DictConfig  # the hydra.sweeper node: budget, storage, sampler, failure rate
    space: dict[str, BaseDistribution]
    conditionals: list[Conditional]
    fixed: dict[str, Any]

    def configure(self, trial: Trial) -> list[str]:
        """Suggest a trial's parameters; the overrides that run it."""
        return configure_trial(trial, self.space, self.conditionals, self.fixed)


def open_sweep(
    search: DictConfig,
    arguments: Sequence[str],
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    default_fixed: Mapping[str, Any] | None = None,
) -> Sweep:
    """Parse the search space (config, then command line), open the study, queue a grid."""
    space, fixed = parse_space(search.params, arguments)
    fixed = {**(default_fixed or {}), **fixed}
    conditionals = parse_conditional(search.conditional)
    direction = search.direction.name if isinstance(search.direction, Enum) else str(search.direction)
    storage = make_storage(search.storage, search.heartbeat_interval)
    study = open_study(search.study_name, storage, sampler, direction, pruner)
    record_design(study, design(space, conditionals), fixed)
    if search.get("grid"):
        log.info("grid: %d combinations queued", enqueue_grid(study, space))
    recover_interrupted(study)  # before the summary: a killed trial shows as interrupted, not running
    log.info("%s (storage %s)", summary(study, search.n_trials), search.storage or "in memory")
    return Sweep(study, search, space, conditionals, fixed)


def run_sweep(
    sweep: Sweep, run_batch: Callable[[list[Trial]], Sequence[TrialState]], n_jobs: int, out: Path
) -> FrozenTrial | None:
    """Run the study's remaining budget in batches of ``n_jobs``; the best trial, if any."""
    sampler_cfg = OmegaConf.to_container(sweep.search.sampler, resolve=True)
    optimize(
        sweep.study, run_batch, sweep.search.n_trials, n_jobs, sampler_cfg, sweep.search.max_failure_rate
    )
    log.info(summary(sweep.study, sweep.search.n_trials))
    return write_results(sweep.study, out)


def optimize(
    study: optuna.Study,
    run_batch: Callable[[list[Trial]], Sequence[TrialState]],
    n_trials: int,
    n_jobs: int = 1,
    sampler_cfg: Mapping[str, Any] | None = None,
    max_failure_rate: float = 1.0,
) -> None:
    """The loop both sweeps share: batches of up to ``n_jobs`` trials until the study's budget is
    spent. ``run_batch`` suggests, runs and tells its trials and returns their states."""
    failures = 0
    while True:
        recover_interrupted(study)
        n = min(n_jobs, budget_left(study, n_trials))
        if n <= 0:
            return
        if sampler_cfg:
            study.sampler = reseeded(sampler_cfg, study)
        trials = [study.ask() for _ in range(n)]
        with heartbeat(study, trials), requeue_on_interrupt(study, trials):
            states = run_batch(trials)
        failures += sum(state == TrialState.FAIL for state in states)
        if failures > max_failure_rate * n_trials:
            raise SweepError(
                f"{failures} trials failed, more than max_failure_rate={max_failure_rate} of "
                f"n_trials={n_trials}; their errors are in the log above and in sweep_report"
            )
