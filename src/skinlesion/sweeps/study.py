"""Optuna studies that survive being stopped: storage, budget, interrupted trials, outcomes.

Shared by the Hydra sweeper (``--multirun hparams_search=...``) and ``python -m skinlesion.sweep_native``.

- ``n_trials`` is the budget of the *study*, not of one command: running the same command again
  runs only the trials still missing, and several machines sharing one database split the budget.
- A trial whose process was killed stays RUNNING in the database. Every running trial sends a
  heartbeat; once it is older than twice the interval the trial is marked FAIL and its parameters
  are queued again, so the configuration is retried rather than lost.
- A trial that fails by itself (an exception, a non-finite objective) is FAIL with an ``error``
  attribute; a FAIL without one was interrupted and does not use up the budget.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hydra.utils
import optuna
import sqlalchemy.exc
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.engine import make_url

from skinlesion.core.errors import ConfigError

log = logging.getLogger(__name__)

ERROR_ATTR = "error"
OUTPUT_ATTR = "output_dir"
FIXED_ATTR = "fixed_params"  # the sweep's fixed overrides, as this trial ran them
USES_BUDGET = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


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


def make_storage(storage: str | None, heartbeat_interval: int | None) -> optuna.storages.RDBStorage | None:
    """An RDB storage with heartbeats (None: in memory, nothing survives the process)."""
    url = storage_url(storage)
    if url is None:
        return None
    sqlite = url.startswith("sqlite")
    # SQLite: wait for a lock rather than fail when two processes write; servers: drop dead connections
    engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval
                )
        except sqlalchemy.exc.IntegrityError:  # workers creating a new database at once: one wins
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
        except sqlalchemy.exc.SQLAlchemyError as e:
            raise ConfigError(
                f"cannot open the study storage {make_url(url)!r}: {getattr(e, 'orig', e)}"
            ) from e
    raise AssertionError("unreachable")


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


def uses_budget(trial: FrozenTrial) -> bool:
    """Finished trials, failed ones and those running elsewhere; not interrupted or queued ones."""
    return trial.state in USES_BUDGET or (trial.state == TrialState.FAIL and not is_interrupted(trial))


def budget_left(study: optuna.Study, n_trials: int) -> int:
    return max(0, n_trials - sum(uses_budget(t) for t in study.get_trials(deepcopy=False)))


def requeue(study: optuna.Study, trials: Sequence[Any]) -> None:
    """Queue the parameters of interrupted trials again: the next ``ask`` hands them out first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        for trial in trials:
            study.enqueue_trial(dict(trial.params))


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Fail the running trials whose heartbeat stopped (killed workers) and queue them again."""
    storage = study._storage  # optuna 2.10 has no public handle; its own fail_stale_trials uses it
    if not storage.is_heartbeat_enabled():
        return []
    stale = storage.fail_stale_trials(study._study_id)
    trials = [storage.get_trial(i) for i in stale]
    for t in trials:
        log.warning("trial %d was interrupted (no heartbeat); its parameters are queued again", t.number)
    requeue(study, trials)
    return [t.number for t in trials]


@contextmanager
def heartbeat(study: optuna.Study, trials: Sequence[Trial]) -> Iterator[None]:
    """Record the trials' heartbeats every interval while they run (and once at once: a process
    killed before its first beat would otherwise leave a trial RUNNING for ever)."""
    storage = study._storage
    if not storage.is_heartbeat_enabled():
        yield
        return
    ids = [t._trial_id for t in trials]
    for trial_id in ids:
        storage.record_heartbeat(trial_id)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(storage.get_heartbeat_interval()):
            try:
                for trial_id in ids:
                    storage.record_heartbeat(trial_id)
            except sqlalchemy.exc.SQLAlchemyError as e:  # a busy database must not kill the trial
                log.warning("heartbeat not recorded: %s", e)

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def requeue_on_interrupt(study: optuna.Study, trials: Sequence[Trial]) -> Iterator[None]:
    """Ctrl-C, a killed worker pool, ...: mark the unfinished trials interrupted, queue them again."""
    try:
        yield
    except BaseException:
        running = [t for t in trials if study._storage.get_trial(t._trial_id).state == TrialState.RUNNING]
        for trial in running:
            study.tell(trial, state=TrialState.FAIL)
        requeue(study, running)
        log.warning("interrupted: trials %s are queued again", [t.number for t in running])
        raise


def finish_trial(
    study: optuna.Study,
    trial: Trial,
    value: float | None = None,
    error: BaseException | None = None,
    pruned: bool = False,
    attrs: Mapping[str, Any] | None = None,
) -> TrialState:
    """Tell the study how a trial ended; an exception or a non-finite value is a failure.

    ``study.tell`` in optuna 2.10 raises on NaN instead of failing the trial, so non-finite values
    are caught here first.
    """
    for key, val in (attrs or {}).items():
        trial.set_user_attr(key, val)
    if pruned:
        study.tell(trial, state=TrialState.PRUNED)
        epochs = len(study._storage.get_trial(trial._trial_id).intermediate_values)
        log.info("trial %d pruned after %d epochs", trial.number, epochs)
        return TrialState.PRUNED
    if error is None and (value is None or not math.isfinite(value)):
        error = FloatingPointError(f"the objective is {value}, not a finite number")
    if error is not None:
        message = f"{type(error).__name__}: {error}"
        trial.set_user_attr(ERROR_ATTR, message[:2000])
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, message, exc_info=error)
        return TrialState.FAIL
    study.tell(trial, values=value)
    log.info("trial %d: %.4f", trial.number, value)
    return TrialState.COMPLETE


def reseeded(sampler_cfg: Mapping[str, Any], study: optuna.Study) -> optuna.samplers.BaseSampler:
    """The sampler, its seed moved on by the trials already in the study: a resumed sweep (or a
    second worker) does not replay the random start-up suggestions of the first one."""
    cfg = dict(sampler_cfg)
    if cfg.get("seed") is not None:
        cfg["seed"] = int(cfg["seed"]) + len(study.get_trials(deepcopy=False))
    return hydra.utils.instantiate(cfg)


def trial_overrides(params: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> list[str]:
    """The Hydra overrides that run one trial: its parameters, then the sweep's fixed values."""
    return [f"{k}={v}" for k, v in {**params, **(fixed or {})}.items()]


def enqueue_grid(study: optuna.Study, space: Mapping[str, BaseDistribution]) -> int:
    """Queue every combination of the (categorical) choices that the study has not run or queued
    yet; the sweep loop hands queued trials out first. Returns how many were queued.

    Unlike optuna's GridSampler (which counts a failed grid point as visited), a killed grid
    point is queued again like any interrupted trial.
    """
    names = sorted(space)
    bad = [n for n in names if not isinstance(space[n], CategoricalDistribution)]
    if bad:
        raise ConfigError(f"hydra.sweeper.grid=true needs choice(...) for every parameter, not for: {bad}")

    def chosen(t: FrozenTrial) -> tuple:
        params = t.params or t.system_attrs.get("fixed_params", {})  # queued trials: not suggested yet
        return tuple(params.get(n) for n in names)

    seen = {
        chosen(t) for t in study.get_trials(deepcopy=False) if t.state == TrialState.WAITING or uses_budget(t)
    }
    todo = [combo for combo in itertools.product(*(space[n].choices for n in names)) if combo not in seen]
    requeue(study, [SimpleNamespace(params=dict(zip(names, combo, strict=True))) for combo in todo])
    return len(todo)


def reproduce(trial: FrozenTrial) -> list[str]:
    """The overrides that re-train a finished trial with ``python -m skinlesion.train`` (its search
    config is left out: it only switches the sweeper on and the test split off)."""
    fixed = {k: v for k, v in trial.user_attrs.get(FIXED_ATTR, {}).items() if k != "hparams_search"}
    return trial_overrides(trial.params, fixed)


def summary(study: optuna.Study, n_trials: int) -> str:
    """One line: trials by state, and how many of the budget are still to run."""
    counts = Counter(
        "interrupted" if is_interrupted(t) else t.state.name.lower() for t in study.get_trials(deepcopy=False)
    )
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials yet"
    left = budget_left(study, n_trials)
    return f"study '{study.study_name}': {parts}; {left} of the budget of {n_trials} to run"


def write_results(study: optuna.Study, sweep_dir: Path) -> FrozenTrial | None:
    """``optimization_results.yaml`` as the upstream sweeper writes it, plus the reproducing overrides."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
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
