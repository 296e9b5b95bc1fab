"""Study bookkeeping: outcomes, budget, interrupted trials, storage URLs, sampler seeds."""

import importlib.util
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, LogUniformDistribution
from optuna.trial import TrialState

from skinlesion.core.errors import ConfigError
from skinlesion.sweeps.study import (
    ERROR_ATTR,
    budget_left,
    enqueue_grid,
    finish_trial,
    heartbeat,
    is_interrupted,
    make_storage,
    open_study,
    record_design,
    recover_interrupted,
    reproduce,
    requeue_on_interrupt,
    reseeded,
    storage_url,
)

TPE = {"_target_": "optuna.samplers.TPESampler", "seed": 3}


def memory_study() -> optuna.Study:
    return open_study("s", None, optuna.samplers.RandomSampler(seed=0))


@pytest.mark.parametrize(
    "value, error, state",
    [
        (0.7, None, TrialState.COMPLETE),
        (float("nan"), None, TrialState.FAIL),
        (float("inf"), None, TrialState.FAIL),
        (None, FloatingPointError("non-finite training loss"), TrialState.FAIL),
    ],
)
def test_outcomes_become_trial_states(value, error, state):
    study = memory_study()
    trial = study.ask()
    assert finish_trial(study, trial, value, error, attrs={"output_dir": "x"}) == state
    frozen = study.trials[0]
    assert frozen.state == state and frozen.user_attrs["output_dir"] == "x"
    assert (ERROR_ATTR in frozen.user_attrs) == (state == TrialState.FAIL)
    assert not is_interrupted(frozen)


def test_the_budget_counts_finished_failed_and_running_trials_but_not_interrupted_ones():
    study = memory_study()
    finish_trial(study, study.ask(), 0.5)
    finish_trial(study, study.ask(), error=RuntimeError("boom"))
    finish_trial(study, study.ask(), pruned=True)
    study.ask()  # running elsewhere
    interrupted = study.ask()
    with pytest.raises(KeyboardInterrupt), requeue_on_interrupt(study, [interrupted]):
        raise KeyboardInterrupt
    assert is_interrupted(study.trials[4])
    assert study.trials[5].state == TrialState.WAITING  # queued again
    assert budget_left(study, 6) == 2


def test_a_killed_trial_is_failed_after_its_heartbeat_stops_and_its_parameters_come_back(tmp_path):
    storage = make_storage(str(tmp_path / "db" / "study.db"), heartbeat_interval=1)
    study = open_study("s", storage, optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    with heartbeat(study, [trial]):
        time.sleep(1.5)
        assert recover_interrupted(study) == []  # beating: not stale
    time.sleep(3.2)  # no beat for longer than the grace period (2 intervals)
    assert recover_interrupted(study) == [0]
    assert is_interrupted(study.trials[0])
    again = study.ask()
    assert again.suggest_float("lr", 1e-4, 1e-1, log=True) == lr
    assert recover_interrupted(study) == []  # the new trial has no heartbeat yet: never stale


def test_storage_urls(tmp_path, monkeypatch):
    assert storage_url(None) is None
    assert storage_url(str(tmp_path / "a" / "b.db")) == f"sqlite:///{tmp_path}/a/b.db"
    assert (tmp_path / "a").is_dir()
    assert storage_url("sqlite:///:memory:") == "sqlite:///:memory:"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "psycopg2" else real_find_spec(n))
    with pytest.raises(ConfigError, match=r"needs the psycopg2 driver: pip install .*skinlesion\[postgres\]"):
        storage_url("postgresql://sweeper:secret@db.example/studies")
    with pytest.raises(ConfigError, match="not a path or a database URL"):
        storage_url("postgresql://host:notaport/db")


def test_an_unusable_database_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot open the study storage .*unable to open database file"):
        make_storage(f"sqlite:///{tmp_path}", None)  # a directory, not a database file


def test_a_changed_search_space_is_refused_and_changed_fixed_values_are_logged(caplog):
    study = memory_study()
    record_design(study, {"lr": "log 1e-4..1e-2"}, {"data.root": "/a"})
    record_design(study, {"lr": "log 1e-4..1e-2"}, {"data.root": "/b"})
    assert "other fixed values for: data.root" in caplog.text
    with pytest.raises(ConfigError, match=r"another search space \(differs in: lr, wd\)"):
        record_design(study, {"lr": "log 1e-5..1e-2", "wd": "x"}, {})


def test_the_sampler_seed_moves_on_with_the_trials_in_the_study():
    study = memory_study()
    first = reseeded(TPE, study)._random_sampler._rng.rand()
    assert reseeded(TPE, study)._random_sampler._rng.rand() == first  # deterministic
    finish_trial(study, study.ask(), 0.1)
    assert reseeded(TPE, study)._random_sampler._rng.rand() != first
    assert reseeded({**TPE, "seed": None}, study) is not None


def test_reproduce_leaves_out_the_search_config():
    study = memory_study()
    trial = study.ask()
    trial.suggest_categorical("optimizer", ["adam", "sgd"])
    trial.set_user_attr("fixed_params", {"hparams_search": "optuna_cpu", "data.image_size": "48"})
    finish_trial(study, trial, 0.5)
    assert reproduce(study.trials[0]) == [f"optimizer={trial.params['optimizer']}", "data.image_size=48"]


def test_a_grid_queues_each_combination_once():
    study = memory_study()
    space = {"a": CategoricalDistribution([1, 2]), "b": CategoricalDistribution(["x", "y"])}
    assert enqueue_grid(study, space) == 4
    trial = study.ask(space)
    finish_trial(study, trial, 0.5)
    assert enqueue_grid(study, space) == 0  # 1 done, 3 still queued
    combos = {(t.params or t.system_attrs["fixed_params"])["a"] for t in study.trials}
    assert combos == {1, 2} and len(study.trials) == 4
    with pytest.raises(ConfigError, match=r"needs choice\(...\) for every parameter, not for: \['lr'\]"):
        enqueue_grid(study, {**space, "lr": LogUniformDistribution(1e-4, 1e-2)})
