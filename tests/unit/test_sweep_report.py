"""The sweep report on a study with known trials: tables, best overrides, failures, plots, experiment."""

import json

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from skinlesion.core.errors import SweepError
from skinlesion.core.paths import CONF_DIR
from skinlesion.sweep_report import load_study, write_report
from skinlesion.sweeps.study import ERROR_ATTR, FIXED_ATTR

SPACE = {
    "optimizer": CategoricalDistribution(["adam", "rmsprop", "sgd", "adamw"]),
    "regularizer": CategoricalDistribution(["none", "l1", "l2", "elastic"]),
    "optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
}
FIXED = {"hparams_search": "optuna_cpu", "data.image_size": "48", "trainer.max_epochs": "2"}


def add(study, state, value=None, curve=(), error=None, **params):
    attrs = {FIXED_ATTR: FIXED} | ({ERROR_ATTR: error} if error else {})
    study.add_trial(
        create_trial(
            state=state,
            value=value,
            params=params,
            distributions={k: SPACE[k] for k in params},
            user_attrs=attrs,
            intermediate_values=dict(enumerate(curve)),
        )
    )


@pytest.fixture
def study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    s = optuna.create_study(study_name="known", storage=storage, direction="maximize")
    add(s, TrialState.COMPLETE, 0.61, optimizer="adam", regularizer="l2", **{"optimizer.lr": 1e-3})
    add(s, TrialState.COMPLETE, 0.72, optimizer="adam", regularizer="l2", **{"optimizer.lr": 2e-3})
    add(s, TrialState.COMPLETE, 0.55, optimizer="sgd", regularizer="none", **{"optimizer.lr": 5e-3})
    add(s, TrialState.COMPLETE, 0.80, optimizer="rmsprop", regularizer="l1", **{"optimizer.lr": 3e-4})
    add(s, TrialState.PRUNED, curve=(0.2, 0.3), optimizer="sgd", regularizer="l1", **{"optimizer.lr": 1e-4})
    add(
        s,
        TrialState.FAIL,
        error="FloatingPointError: non-finite training loss",
        optimizer="sgd",
        regularizer="l2",
    )
    add(s, TrialState.FAIL, optimizer="adamw", regularizer="none")  # no error: interrupted
    return storage


def test_report_tables_best_configuration_and_failures(tmp_path, study):
    out = tmp_path / "report"
    summary = write_report(load_study(study, "known"), out)
    assert summary["best_trial"] == 3 and summary["best_value"] == pytest.approx(0.80)
    assert sorted(summary["best_overrides"]) == [
        "data.image_size=48",
        "optimizer.lr=0.0003",
        "optimizer=rmsprop",
        "regularizer=l1",
        "trainer.max_epochs=2",
    ]  # the search config (hparams_search=...) is left out: it would switch testing off
    assert {k: summary[k] for k in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED")} == {
        "COMPLETE": 4,
        "PRUNED": 1,
        "FAIL": 1,
        "INTERRUPTED": 1,
    }
    md = (out / "sweep_report.md").read_text()
    assert "| optimizer \\ regularizer | none | l1 | l2 |" in md
    assert "| adam | – | – | 0.720 (n=2) |" in md
    assert "| rmsprop | – | 0.800 (n=1) | – |" in md
    assert "| sgd | 0.550 (n=1) | – | – |" in md
    assert "python -m skinlesion.train " + " ".join(summary["best_overrides"]) in md
    assert "| 5 | FloatingPointError: non-finite training loss |" in md
    assert "| 6 | interrupted (killed or stopped); queued again |" in md
    for png in (
        "optimization_history",
        "param_importances",
        "score_by_optimizer_regularizer",
        "parallel_coordinates",
    ):
        assert (out / f"{png}.png").stat().st_size > 5000 and f"]({png}.png)" in md
    assert json.loads((out / "summary.json").read_text())["best_trial"] == 3


def test_the_experiment_config_reproduces_the_best_trial(tmp_path, study):
    write_report(load_study(study, "known"), tmp_path / "report")
    (tmp_path / "extra" / "experiment").mkdir(parents=True)
    (tmp_path / "report" / "experiment.yaml").rename(tmp_path / "extra" / "experiment" / "best.yaml")
    with initialize_config_dir(config_dir=str(CONF_DIR)):
        cfg = compose(
            "train", overrides=[f"hydra.searchpath=[file://{tmp_path / 'extra'}]", "experiment=best"]
        )
    assert cfg.optimizer._target_ == "torch.optim.RMSprop" and cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.regularizer.l1 > 0 and cfg.regularizer.l2 == 0
    assert cfg.data.image_size == 48 and cfg.trainer.max_epochs == 2


def test_unknown_study_names_the_ones_there(study):
    with pytest.raises(SweepError, match=r"no study 'nope' in .*; it holds: known"):
        load_study(study, "nope")


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_committed_experiment_configs_set_what_they_say(name):
    """Each experiment file composes, chooses its groups and sets its values in the train config."""
    spec = yaml.safe_load((CONF_DIR / "experiment" / f"{name}.yaml").read_text())
    with initialize_config_dir(config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)
    for entry in spec.pop("defaults", []):
        ((key, option),) = entry.items()
        assert cfg.hydra.runtime.choices[key.removeprefix("override /")] == option
    for path, value in flatten(spec):
        assert OmegaConf.select(cfg, path) == value, path


def flatten(tree: dict, prefix: str = "") -> list:
    out = []
    for key, value in tree.items():
        out += flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]
    return out
