"""Optuna studies that survive being stopped: storage, budget, retried trials, outcomes.

Shared by the Hydra sweeper (``--multirun hparams_search=...``) and ``python -m skinlesion.sweep_native``;
both run their trials through ``Study.optimize``, so Optuna itself keeps the heartbeats.

- ``n_trials`` is the budget of the *study*: how many of its trials end with a result (COMPLETE or
  PRUNED), trials still running included. Running the same command again runs only what is
  missing; several processes on one database split the budget.
- A trial that fails by itself (an exception, a non-finite objective) is FAIL with an ``error``
  attribute and uses no budget; ``max_failure_rate`` bounds how many a run may have.
- A trial whose process was killed is FAIL without one (interrupted): Optuna fails it once its
  heartbeat is stale and ``RetryHeartbeatStaleTrialCallback`` queues its parameters again; a
  trial stopped by Ctrl-C or a broken launcher is queued again the same way.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from omegaconf import OmegaConf
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.engine import make_url

from skinlesion.core.errors import ConfigError

log = logging.getLogger(__name__)

ERROR_ATTR = "error"
OUTPUT_ATTR = "output_dir"
FIXED_ATTR = "fixed_params"  # the sweep's fixed overrides, as this trial ran them
# What the budget counts; running trials too, so that workers sharing a study split it.
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class TrialFailed(Exception):
    """A trial's own failure: recorded with its error, and the sweep goes on."""


def storage_url(storage: str | None) -> str | None:
    """A SQLAlchemy URL: a plain path means SQLite (its folder is created); PostgreSQL needs a driver."""
    if not storage:
        return None
    url = str(storage) if "://" in str(storage) else f"sqlite:///{storage}"
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as e:
        raise ConfigError(f"hydra.sweeper.storage={storage!r} is not a path or a database URL") from e
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    elif parsed.get_backend_name() == "postgresql":
        driver = parsed.get_driver_name() if "+" in parsed.drivername else "psycopg2"
        if importlib.util.find_spec(driver) is None:
            raise ConfigError(
                f"storage {parsed!r} needs the {driver} driver: pip install -c constraints.txt "
                "'skinlesion[postgres]'"
            )
    return url


def make_storage(
    storage: str | None, heartbeat_interval: int | None = None
) -> optuna.storages.RDBStorage | None:
    """An RDB storage whose stale trials are queued again (None: in memory, nothing survives)."""
    url = storage_url(storage)
    if url is None:
        return None
    # SQLite: wait for a lock rather than fail when two processes write; servers: drop dead connections
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    beats = {}
    if heartbeat_interval:
        beats = {"heartbeat_interval": heartbeat_interval, "heartbeat_stale_trial_callback": retry()}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, **beats)
        except sqlalchemy.exc.IntegrityError:  # workers creating a new database at once: one wins
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
        except sqlalchemy.exc.SQLAlchemyError as e:
            raise ConfigError(
                f"cannot open the study storage {make_url(url)!r}: {getattr(e, 'orig', e)}"
            ) from e
    raise AssertionError("unreachable")


def retry() -> RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback()


def open_study(
    name: str,
    storage: optuna.storages.BaseStorage | None,
    sampler: optuna.samplers.BaseSampler | None,
    direction: str = "maximize",
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or load it when it exists: the same command resumes it."""
    optuna.logging.disable_default_handler()  # through the task's logging (Hydra's log file) instead
    optuna.logging.enable_propagation()
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction=direction,
        load_if_exists=True,
    )


def record_design(study: optuna.Study, space: Mapping[str, str], fixed: Mapping[str, Any]) -> None:
    """Remember the search space; refuse to resume with another one (its trials would not compare).

    Fixed values (``data.root``, ``trainer.devices``, ...) may differ between machines: a change
    is logged, and every trial keeps its own in its user attributes.
    """
    attrs = study.user_attrs
    fixed = {k: str(v) for k, v in fixed.items()}
    if "search_space" not in attrs:
        study.set_user_attr("search_space", dict(space))
        study.set_user_attr(FIXED_ATTR, fixed)
        return
    old = attrs["search_space"]
    changed = sorted(k for k in set(old) | set(space) if old.get(k) != space.get(k))
    if changed:
        raise ConfigError(
            f"study '{study.study_name}' was created with another search space (differs in: "
            f"{', '.join(changed)}); resume it with the original one, or start a new study with "
            "hydra.sweeper.study_name=<new name>"
        )
    old_fixed = attrs.get(FIXED_ATTR, {})
    differ = sorted(k for k in set(old_fixed) | set(fixed) if old_fixed.get(k) != fixed.get(k))
    if differ:
        log.warning("study '%s' resumed with other fixed values for: %s", study.study_name, ", ".join(differ))


def is_interrupted(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and ERROR_ATTR not in trial.user_attrs


def budget_left(study: optuna.Study, n_trials: int) -> int:
    return max(0, n_trials - len(study.get_trials(deepcopy=False, states=BUDGET_STATES)))


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and so queue again) the trials of killed processes before counting the budget."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def objective_value(trial: Trial, run: Callable[[], Any]) -> float:
    """``run()``'s value as the objective; an exception or a non-finite value raises TrialFailed
    with the error kept in the trial (``optuna.TrialPruned`` and Ctrl-C pass through)."""
    try:
        value = float(run())
        if math.isfinite(value):
            return value
        error: Exception = FloatingPointError(f"the objective is {value}, not a finite number")
    except optuna.TrialPruned:
        raise
    except Exception as e:
        error = e
    message = f"{type(error).__name__}: {error}"
    trial.set_user_attr(ERROR_ATTR, message[:2000])
    raise TrialFailed(message) from error


class FailureLimit:
    """Counts this run's own trial failures; exceeded past ``rate * n_trials``."""

    def __init__(self, rate: float, n_trials: int) -> None:
        self.rate, self.n_trials, self.failures = rate, n_trials, 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.failures += trial.state == TrialState.FAIL and not is_interrupted(trial)

    @property
    def exceeded(self) -> bool:
        return self.failures > self.rate * self.n_trials


def optimize(
    study: optuna.Study,
    objective: Callable[[Trial], float],
    n_trials: int,
    n_jobs: int = 1,
    max_failure_rate: float = 1.0,
) -> FailureLimit:
    """Run what is left of the study's budget in batches of up to ``n_jobs`` trials side by side,
    counting the budget in the storage before each batch (so other workers' trials count, and a
    failed trial leaves its share to the next batch). A batch's jobs get consecutive numbers, which
    is what spreads them over the GPUs (``skinlesion.core.devices``). Ctrl-C or a broken launcher
    queues the trials it interrupted again. Returns this run's failure count."""
    fail_stale_trials(study)
    limit = FailureLimit(max_failure_rate, n_trials)
    started: list[int] = []

    def tracked(trial: Trial) -> float:
        started.append(trial.number)
        return objective(trial)

    try:
        while (left := budget_left(study, n_trials)) > 0 and not limit.exceeded:
            batch = min(n_jobs, left)
            study.optimize(tracked, n_trials=batch, n_jobs=batch, catch=(TrialFailed,), callbacks=[limit])
    except BaseException:
        again = [t for t in study.get_trials(deepcopy=False) if t.number in started and is_interrupted(t)]
        for t in again:
            retry()(study, t)
        log.warning("interrupted: trials %s are queued again", [t.number for t in again])
        raise
    return limit


def seeded(sampler_cfg: Mapping[str, Any], study: optuna.Study) -> dict[str, Any]:
    """The sampler config, its seed moved on by the trials already in the study: a resumed sweep
    does not replay the random start-up suggestions of the first one."""
    cfg = dict(sampler_cfg)
    if cfg.get("seed") is not None:
        cfg["seed"] = int(cfg["seed"]) + len(study.get_trials(deepcopy=False))
    return cfg


def trial_overrides(params: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> list[str]:
    """The Hydra overrides that run one trial: its parameters, then the sweep's fixed values."""
    return [f"{k}={v}" for k, v in {**params, **(fixed or {})}.items()]


def reproduce(trial: FrozenTrial) -> list[str]:
    """The overrides that re-train a finished trial with ``python -m skinlesion.train`` (its search
    config is left out: it only switches the sweeper on and the test split off)."""
    fixed = {k: v for k, v in trial.user_attrs.get(FIXED_ATTR, {}).items() if k != "hparams_search"}
    return trial_overrides(trial.params, fixed)


def state_name(trial: FrozenTrial) -> str:
    return "INTERRUPTED" if is_interrupted(trial) else trial.state.name


def summary(study: optuna.Study, n_trials: int) -> str:
    """One line: trials by state, and how many of the budget are still to run."""
    counts = Counter(state_name(t).lower() for t in study.get_trials(deepcopy=False))
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials yet"
    left = budget_left(study, n_trials)
    return f"study '{study.study_name}': {parts}; {left} of the budget of {n_trials} to run"


def write_results(study: optuna.Study, sweep_dir: Path) -> FrozenTrial | None:
    """``optimization_results.yaml`` as the upstream sweeper writes it, plus the reproducing overrides."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        log.warning("no trial of study '%s' has completed yet", study.study_name)
        return None
    best = study.best_trial
    results = {
        "name": "optuna",
        "study_name": study.study_name,
        "best_trial": best.number,
        "best_params": best.params,
        "best_value": best.value,
        "best_overrides": reproduce(best),
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    log.info("best trial %d: %.4f  %s", best.number, best.value, " ".join(results["best_overrides"]))
    return best


def count_states(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    return dict(Counter(state_name(t) for t in trials))
