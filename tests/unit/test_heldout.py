"""Leave-one-source-out tables: ensembles, paired differences and their verdicts, from predictions."""

import numpy as np

from skinlesion.reports.heldout import Scored, difference, mean_of, summarise
from skinlesion.reports.metrics import Bootstrap
from skinlesion.reports.paired import bootstrap_mean


def scored(correct: np.ndarray, seed: int, groups=None) -> Scored:
    """Two classes; ``correct[i]`` decides whether photo i's prediction is right."""
    n = len(correct)
    targets = np.arange(n) % 2
    right = np.eye(2)[targets] * 0.6 + 0.2
    probs = np.where(correct[:, None], right, 1 - right)
    return Scored([f"p{i}" for i in range(n)], targets, probs, groups, np.zeros(n, dtype=bool))


def test_an_arm_right_on_more_photos_in_every_seed_is_better_and_equal_is_noise():
    rng = np.random.default_rng(0)
    base = {s: scored(rng.random(200) < 0.6, s) for s in (1, 2, 3)}
    better = {s: scored(np.ones(200, dtype=bool), s) for s in (1, 2, 3)}
    d = difference(better, base, Bootstrap(n_resamples=500))
    assert d["verdict"] == "better" and d["t_ci"][0] > 0 and d["bootstrap_ci"][0] > 0
    assert difference(base, better, Bootstrap(n_resamples=500))["verdict"] == "worse"
    same = difference(base, base, Bootstrap(n_resamples=500))
    assert same["verdict"] == "noise" and same["by_seed"] == [0.0, 0.0, 0.0]
    s = summarise(better, Bootstrap(n_resamples=200))
    assert s["acc"] == 1.0 and s["abstained"] == 0.0 and s["acc_answered"] == 1.0


def test_the_ensemble_averages_probabilities_on_the_photos_all_members_scored():
    a = scored(np.array([True, True, False]), 1)
    b = scored(np.array([False, True, False, True]), 1)
    e = mean_of([a, b])
    assert e.paths == ["p0", "p1", "p2"] and e.abstained is None
    np.testing.assert_allclose(e.probs, (a.probs + b.probs[:3]) / 2)


def test_bootstrap_resamples_whole_groups():
    values = np.array([1.0] * 10 + [0.0] * 10)
    one_group_each = bootstrap_mean(values, [f"g{i}" for i in range(20)], Bootstrap(n_resamples=400))
    two_groups = bootstrap_mean(values, ["a"] * 10 + ["b"] * 10, Bootstrap(n_resamples=400))
    assert two_groups[1] - two_groups[0] > one_group_each[1] - one_group_each[0]
    assert two_groups == [0.0, 1.0]  # two units: a resample is all of one, or half and half
