"""Study bookkeeping: outcomes, budget, interrupted trials, storage URLs, samplers."""

import importlib.util

import optuna
import pytest
from hydra_plugins.hydra_optuna_sweeper.config import GridSamplerConfig
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from skinlesion.core.errors import ConfigError
from skinlesion.sweeps.loop import make_sampler
from skinlesion.sweeps.space import configure_trial
from skinlesion.sweeps.study import (
    ERROR_ATTR,
    budget_left,
    make_storage,
    objective_value,
    open_study,
    optimize,
    record_design,
    reproduce,
    seeded,
    state_name,
    storage_url,
)

TPE = {"_target_": "optuna.samplers.TPESampler", "seed": 3}
SPACE = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}


def memory_study() -> optuna.Study:
    return open_study("s", None, optuna.samplers.RandomSampler(seed=0))


def lr(trial: optuna.Trial) -> float:
    return trial.suggest_float("lr", 1e-4, 1e-1, log=True)


@pytest.mark.parametrize(
    "result, state, error",
    [
        (lambda: 0.7, TrialState.COMPLETE, None),
        (lambda: float("nan"), TrialState.FAIL, "FloatingPointError: the objective is nan, not a finite"),
        (lambda: float("inf"), TrialState.FAIL, "the objective is inf"),
        (lambda: 1 / 0, TrialState.FAIL, "ZeroDivisionError: division by zero"),
    ],
)
def test_outcomes_become_trial_states(result, state, error):
    study = memory_study()
    optimize(study, lambda t: objective_value(t, result), n_trials=1, max_failure_rate=0)
    (trial,) = study.trials
    assert trial.state == state and state_name(trial) == state.name
    assert (error or "") in trial.user_attrs.get(ERROR_ATTR, "")
    assert (ERROR_ATTR in trial.user_attrs) == (error is not None)


def test_a_pruned_trial_passes_through_and_uses_the_budget():
    study = memory_study()

    def pruned(trial: optuna.Trial) -> float:
        def run() -> float:
            raise optuna.TrialPruned("epoch 1")

        return objective_value(trial, run)

    optimize(study, pruned, n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2 and budget_left(study, 2) == 0


def test_failed_trials_leave_their_share_of_the_budget_to_others():
    study = memory_study()
    values = iter([0.5, None, 0.6, None, 0.7])

    def objective(trial: optuna.Trial) -> float:
        lr(trial)
        value = next(values)
        return objective_value(trial, lambda: 1 / 0 if value is None else value)

    limit = optimize(study, objective, n_trials=3)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "FAIL", "COMPLETE"]
    assert limit.failures == 2 and not limit.exceeded and budget_left(study, 3) == 0


def test_the_failure_limit_stops_the_run():
    study = memory_study()
    limit = optimize(study, lambda t: objective_value(t, lambda: 1 / 0), n_trials=4, max_failure_rate=0.25)
    assert limit.exceeded and len(study.trials) == 2  # 2 > 0.25 * 4


def test_running_the_same_budget_again_runs_no_trial(tmp_path):
    storage = str(tmp_path / "study.db")
    for expected in (3, 3, 5):
        study = open_study("s", make_storage(storage), None)
        study.sampler = make_sampler(TPE, study, SPACE)
        optimize(study, lambda t: lr(t) * 0 + 1.0, n_trials=expected)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * expected
    # the seed moves on with the trials: the resumed run does not replay the first suggestions
    assert len({t.params["lr"] for t in study.trials}) == 5


def test_an_interrupted_trial_is_queued_again_with_its_parameters():
    study = memory_study()

    def interrupted(trial: optuna.Trial) -> float:
        lr(trial)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize(study, interrupted, n_trials=3)
    first, queued = study.trials
    assert state_name(first) == "INTERRUPTED" and queued.state == TrialState.WAITING
    assert budget_left(study, 3) == 3  # an interrupted trial uses no budget
    optimize(study, lambda t: lr(t) * 0 + 1.0, n_trials=1)
    assert study.trials[1].state == TrialState.COMPLETE and study.trials[1].params == first.params


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
        make_storage(f"sqlite:///{tmp_path}")  # a directory, not a database file


def test_a_changed_search_space_is_refused_and_changed_fixed_values_are_logged(caplog):
    study = memory_study()
    record_design(study, {"lr": "log 1e-4..1e-2"}, {"data.root": "/a"})
    record_design(study, {"lr": "log 1e-4..1e-2"}, {"data.root": "/b"})
    assert "other fixed values for: data.root" in caplog.text
    with pytest.raises(ConfigError, match=r"another search space \(differs in: lr, wd\)"):
        record_design(study, {"lr": "log 1e-5..1e-2", "wd": "x"}, {})


def test_the_sampler_seed_moves_on_with_the_trials_in_the_study():
    study = memory_study()
    assert seeded(TPE, study) == TPE and seeded({**TPE, "seed": None}, study)["seed"] is None
    optimize(study, lr, n_trials=2)
    assert seeded(TPE, study)["seed"] == 5


def test_the_grid_sampler_keeps_its_seed_and_needs_choices():
    """The grid's seed orders its points, and a resumed grid counts on the same order."""
    space = {"a": CategoricalDistribution([1, 2]), "b": CategoricalDistribution(["x", "y"])}
    grid = {**OmegaConf.to_container(OmegaConf.structured(GridSamplerConfig)), "seed": 7}
    resumed = memory_study()
    optimize(resumed, lr, n_trials=3)

    def order(sampler: optuna.samplers.BaseSampler) -> list[dict]:
        study = memory_study()
        study.sampler = sampler
        optimize(study, lambda t: configure_trial(t, space, [], {}) and 1.0, n_trials=4)
        return [t.params for t in study.trials]

    reference = optuna.samplers.GridSampler({"a": [1, 2], "b": ["x", "y"]}, seed=7)
    assert order(make_sampler(grid, resumed, space)) == order(reference)
    with pytest.raises(ConfigError, match=r"needs choice\(...\) for every parameter, not for: \['lr'\]"):
        make_sampler(grid, resumed, {**space, **SPACE})


def test_reproduce_leaves_out_the_search_config():
    study = memory_study()

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_categorical("optimizer", ["adam", "sgd"])
        trial.set_user_attr("fixed_params", {"hparams_search": "optuna_cpu", "data.image_size": "48"})
        return 0.5

    optimize(study, objective, n_trials=1)
    (trial,) = study.trials
    assert reproduce(trial) == [f"optimizer={trial.params['optimizer']}", "data.image_size=48"]
