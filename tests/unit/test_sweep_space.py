"""Search spaces: the grammar, conditional parameters, and the shipped search configs."""

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.distributions import CategoricalDistribution, FloatDistribution

from skinlesion.core.errors import ConfigError
from skinlesion.core.paths import CONF_DIR
from skinlesion.sweeps.space import configure_trial, design, parse_conditional, parse_space
from skinlesion.sweeps.study import FIXED_ATTR

CONDITIONAL = {
    "regularizer.l1": {"if": {"regularizer": ["l1", "elastic"]}, "suggest": "tag(log, interval(1e-7, 1e-4))"},
    "regularizer.l2": {"if": {"regularizer": ["l2", "elastic"]}, "suggest": "tag(log, interval(1e-6, 1e-3))"},
    "model.freeze_stages": {"if": {"model": "mobilenet_v2"}, "suggest": "choice(0, 3)"},
}


def search_config(name: str = "optuna"):
    with initialize_config_dir(config_dir=str(CONF_DIR)):
        return compose("train", overrides=[f"hparams_search={name}"], return_hydra_config=True)


def test_the_last_word_on_a_key_wins():
    params = {
        "optimizer": "choice(adam, sgd)",
        "trainer.max_epochs": 12,
        "optimizer.lr": "interval(1e-4, 1e-2)",
    }
    space, fixed = parse_space(
        params, ["trainer.max_epochs=2", "optimizer=sgd", "optimizer.lr=tag(log, interval(1e-5, 1e-3))"]
    )
    assert fixed == {"trainer.max_epochs": "2", "optimizer": "sgd"}
    assert set(space) == {"optimizer.lr"}
    assert (
        isinstance(space["optimizer.lr"], FloatDistribution)
        and space["optimizer.lr"].log
        and space["optimizer.lr"].low == 1e-5
    )
    space, fixed = parse_space({"trainer.max_epochs": 12}, ["trainer.max_epochs=choice(2, 4)"])
    assert fixed == {} and isinstance(space["trainer.max_epochs"], CategoricalDistribution)


@pytest.mark.parametrize(
    "choice, expected",
    [
        ({"regularizer": "none"}, set()),
        ({"regularizer": "l1"}, {"regularizer.l1"}),
        ({"regularizer": "elastic"}, {"regularizer.l1", "regularizer.l2"}),
    ],
)
def test_conditional_parameters_exist_only_where_they_apply(choice, expected):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(choice)
    trial = study.ask()
    space = {"regularizer": CategoricalDistribution(["none", "l1", "l2", "elastic"])}
    overrides = configure_trial(trial, space, parse_conditional(CONDITIONAL), {"model": "simple_cnn"})
    assert set(trial.params) - {"regularizer"} == expected
    assert overrides[-1] == "model=simple_cnn" and trial.user_attrs[FIXED_ATTR] == {"model": "simple_cnn"}
    assert all(1e-7 <= trial.params[k] <= 1e-3 for k in expected)


def test_fixed_values_count_as_choices_and_are_never_searched_again():
    study = optuna.create_study()
    trial = study.ask()
    configure_trial(
        trial,
        {},
        parse_conditional(CONDITIONAL),
        {"model": "mobilenet_v2", "regularizer": "l2", "regularizer.l2": 1e-4},
    )
    assert set(trial.params) == {"model.freeze_stages"}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"a": {"suggest": "choice(1, 2)"}}, "expected {if:"),
        ({"a": {"if": {"b": 1}, "suggest": "3"}}, "is not a sweep expression"),
        ({"a": {"if": {"b": 1}, "suggest": "choice(1,"}}, "invalid search space entry"),
    ],
)
def test_malformed_conditionals_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_conditional(spec)


def test_design_changes_when_a_range_or_a_condition_changes():
    space, _ = parse_space({"optimizer.lr": "tag(log, interval(1e-4, 1e-2))"})
    base = design(space, parse_conditional(CONDITIONAL))
    assert base == design(
        *parse_space({"optimizer.lr": "tag(log, interval(1e-4, 1e-2))"})[:1], parse_conditional(CONDITIONAL)
    )
    wider, _ = parse_space({"optimizer.lr": "tag(log, interval(1e-5, 1e-2))"})
    assert design(wider, parse_conditional(CONDITIONAL)) != base
    other = {
        **CONDITIONAL,
        "model.freeze_stages": {"if": {"model": "efficientnet_lite0"}, "suggest": "choice(0, 3)"},
    }
    assert design(space, parse_conditional(other)) != base


def test_the_search_covers_what_the_issue_asks_and_never_the_test_split():
    cfg = search_config()
    sweeper = cfg.hydra.sweeper
    space, fixed = parse_space(sweeper.params)
    assert set(space) == {
        "optimizer",
        "optimizer.lr",
        "regularizer",
        "model",
        "model.dropout",
        "data.batch_size",
        "data/augment",
    }
    assert set(space["optimizer"].choices) == {"adam", "rmsprop", "sgd", "adamw"}
    assert set(space["regularizer"].choices) == {"none", "l1", "l2", "elastic"}
    assert isinstance(space["optimizer.lr"], FloatDistribution) and space["optimizer.lr"].log
    assert {c.name for c in parse_conditional(sweeper.conditional)} == {
        "regularizer.l1",
        "regularizer.l2",
        "model.freeze_stages",
    }
    assert int(fixed["trainer.max_epochs"]) > 0  # every trial's epoch budget
    assert sweeper.sampler.seed == cfg.seed and sweeper.direction == "maximize"
    assert str(sweeper.storage).startswith(cfg.paths.output_root) and cfg.evaluate is False


@pytest.mark.parametrize("search", ["optuna", "optuna_cpu"])
def test_every_sampled_trial_composes_into_a_valid_train_config(search):
    """Twenty random trials of the shipped space: each override set composes (no typo in a key or
    a choice) and lands in the config where the model, optimizer and regularizer read it."""
    sweeper = search_config(search).hydra.sweeper
    space, fixed = parse_space(sweeper.params)
    conditionals = parse_conditional(sweeper.conditional)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    with initialize_config_dir(config_dir=str(CONF_DIR)):
        for _ in range(20):
            trial = study.ask()
            cfg = compose("train", overrides=configure_trial(trial, space, conditionals, fixed))
            p = trial.params
            assert cfg.optimizer._target_.lower().endswith(p["optimizer"])
            assert cfg.optimizer.lr == pytest.approx(p["optimizer.lr"])
            assert cfg.model.backbone == p["model"] and cfg.data.batch_size == p["data.batch_size"]
            assert cfg.regularizer.l1 == pytest.approx(p.get("regularizer.l1", 0.0))
            assert cfg.regularizer.l2 == pytest.approx(p.get("regularizer.l2", 0.0))
            assert cfg.trainer.max_epochs == int(fixed["trainer.max_epochs"])
            study.tell(trial, 0.0)
