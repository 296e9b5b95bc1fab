"""How many calibration photos the sets need: the draws behind ``oof/calibration_sizes.md``."""

import numpy as np
import pytest

from skinlesion.models.conformal import calibration_draws, calibration_sizes
from skinlesion.reports.coverage import calibration_markdown


def pool_with_hard_photos(per_class: int, hard: float, rng: np.random.Generator):
    """Mostly confident right answers (true class p = 0.9) and a share ``hard`` of confidently wrong
    ones (true class p = 0.02, the next class 0.96): the photos that decide a threshold fitted on
    few photos."""
    targets = np.repeat(np.arange(4), per_class)
    wrong = rng.random(len(targets)) < hard
    rows = np.arange(len(targets))
    probs = np.full((len(targets), 4), 0.1 / 3)
    probs[rows, targets] = 0.9
    probs[wrong] = 0.01
    probs[rows[wrong], targets[wrong]] = 0.02
    probs[rows[wrong], (targets[wrong] + 1) % 4] = 0.96
    return probs, targets


def test_few_calibration_photos_give_larger_sets_than_many():
    """With 9 photos a class at 90 %, the threshold is the class's least-confident photo: any hard
    photo among them opens the sets; with 60 the threshold passes over the hard 3 %, mostly."""
    probs, targets = pool_with_hard_photos(200, hard=0.03, rng=np.random.default_rng(0))
    few = calibration_draws(probs, targets, [9] * 4, 0.9, draws=300)
    many = calibration_draws(probs, targets, [60] * 4, 0.9, draws=300)
    assert few["mean_size"].mean() > many["mean_size"].mean() + 0.3
    assert np.median(many["mean_size"]) == 1.0  # large calibration sets: singletons, mostly
    # the promise holds either way (photos like the calibration photos)
    assert few["coverage"].mean() >= 0.9 and many["coverage"].mean() >= 0.9 - 0.01


def test_a_perfect_pool_answers_one_class_every_time():
    probs, targets = pool_with_hard_photos(30, hard=0.0, rng=np.random.default_rng(1))
    d = calibration_draws(probs, targets, [10] * 4, 0.9, draws=20, seed=3)
    assert d["mean_size"].tolist() == [1.0] * 20 and d["min_class_coverage"].min() == 1.0


def test_a_calibration_set_as_large_as_the_pool_is_refused():
    probs, targets = pool_with_hard_photos(10, hard=0.0, rng=np.random.default_rng(2))
    with pytest.raises(ValueError, match="class 2: 10 calibration photos of a pool of 10"):
        calibration_draws(probs, targets, [5, 5, 10, 5], 0.9, draws=1)


def test_the_table_maps_validation_shares_onto_the_pool_and_skips_what_does_not_fit():
    probs, targets = pool_with_hard_photos(40, hard=0.05, rng=np.random.default_rng(3))
    rows = calibration_sizes(probs, targets, 4, 0.9, pool_share=0.9, draws=50)
    # 40 photos a class in a pool that is 90 % of the data: data.split.val 0.1 -> 4, 0.2 -> 9 photos
    assert [r["val_share"] for r in rows] == [0.1, 0.15, 0.2, 0.25]
    assert rows[0]["per_class"] == [4] * 4 and rows[2]["per_class"] == [9] * 4
    assert all(r["size_range"][0] <= r["mean_size"] <= r["size_range"][1] for r in rows)
    # a pool that is only 10 % of the data: a 10 % share is every photo of a class, more is more
    # than there are; no photo would be left to score, so every row is skipped
    assert calibration_sizes(probs, targets, 4, 0.9, pool_share=0.1, draws=5) == []
    assert [r["val_share"] for r in calibration_sizes(probs, targets, 4, 0.9, pool_share=0.15, draws=5)] == [
        0.1
    ]
    text = calibration_markdown(rows, ["a", "b", "c", "d"], 0.9, 50)
    assert "fewer than 19 photos" in text and "| 0.2 | 9, 9, 9, 9 |" in text
