"""One sweep from start to end, shared by the Hydra sweeper and ``python -m skinlesion.sweep_native``.

``open_sweep`` reads a ``hydra.sweeper`` config node, opens (or resumes) its study and checks the
search space against it; ``run_sweep`` runs the study's remaining budget through
``Study.optimize`` and writes the results. The two entry points differ only in their objective:
a job of Hydra's launcher, or training in-process with a pruning callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import hydra.utils
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, Trial

from skinlesion.core.errors import ConfigError, SweepError
from skinlesion.sweeps.space import Conditional, configure_trial, design, parse_conditional, parse_space
from skinlesion.sweeps.study import (
    fail_stale_trials,
    make_storage,
    open_study,
    optimize,
    record_design,
    seeded,
    summary,
    write_results,
)

log = logging.getLogger(__name__)
# Targets a sampler config may name (hydra-optuna-sweeper instantiates its own with these).
SAMPLERS = ("optuna.samplers.*", "hydra_plugins.hydra_optuna_sweeper.*")


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


def make_sampler(
    cfg: Mapping[str, Any], study: optuna.Study, space: Mapping[str, BaseDistribution]
) -> optuna.samplers.BaseSampler:
    """The configured sampler, reseeded for this run; the grid one (``hydra/sweeper/sampler=grid``)
    over every combination of the ``choice(...)`` parameters, with its own seed (which orders the
    points, so a resumed grid must keep it)."""
    cfg = dict(cfg)
    if not cfg.pop("_partial_", False):
        return hydra.utils.instantiate(seeded(cfg, study), _execution_whitelist_=SAMPLERS)
    bad = [n for n, d in space.items() if not isinstance(d, optuna.distributions.CategoricalDistribution)]
    if bad:
        raise ConfigError(f"the grid sampler needs choice(...) for every parameter, not for: {bad}")
    grid = {n: d.choices for n, d in space.items()}
    return hydra.utils.instantiate(cfg, search_space=grid, _execution_whitelist_=SAMPLERS)


def grid_size(sampler: optuna.samplers.BaseSampler, space: Mapping[str, BaseDistribution]) -> int | None:
    if not isinstance(sampler, optuna.samplers.GridSampler):
        return None
    n = 1
    for d in space.values():
        n *= len(d.choices)
    return n


def open_sweep(
    search: DictConfig,
    arguments: Sequence[str],
    pruner: optuna.pruners.BasePruner | None = None,
    default_fixed: Mapping[str, Any] | None = None,
) -> Sweep:
    """Parse the search space (config, then command line) and open the study."""
    space, fixed = parse_space(search.params, arguments)
    fixed = {**(default_fixed or {}), **fixed}
    conditionals = parse_conditional(search.conditional)
    direction = search.direction.name if isinstance(search.direction, Enum) else str(search.direction)
    storage = make_storage(search.storage, search.heartbeat_interval)
    study = open_study(search.study_name, storage, None, direction, pruner)
    record_design(study, design(space, conditionals), fixed)
    fail_stale_trials(study)  # a killed run's trials show as interrupted (and queued again), not running
    study.sampler = make_sampler(OmegaConf.to_container(search.sampler, resolve=True), study, space)
    log.info("%s (storage %s)", summary(study, search.n_trials), search.storage or "in memory")
    return Sweep(study, search, space, conditionals, fixed)


def run_sweep(
    sweep: Sweep, objective: Callable[[Trial], float], n_jobs: int, out: Path
) -> FrozenTrial | None:
    """Run the study's remaining budget, ``n_jobs`` trials at a time; the best trial, if any."""
    n_trials = sweep.search.n_trials
    size = grid_size(sweep.study.sampler, sweep.space)
    if size is not None and size < n_trials:
        log.info("the grid has %d points: n_trials=%d becomes %d", size, n_trials, size)
        n_trials = size
    rate = sweep.search.max_failure_rate
    limit = optimize(sweep.study, objective, n_trials, n_jobs, rate)
    log.info(summary(sweep.study, n_trials))
    best = write_results(sweep.study, out)
    if limit.exceeded:
        raise SweepError(
            f"{limit.failures} trials failed, more than max_failure_rate={rate} of "
            f"n_trials={n_trials}; their errors are in the log above and in sweep_report"
        )
    return best
