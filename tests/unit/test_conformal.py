"""Prediction sets: the coverage promise holds class by class, the rule is the same everywhere."""

import math

import lightning as L
import numpy as np
import pytest
import torch

from skinlesion.inference.decision import NOT_ENOUGH, Thresholds, decide
from skinlesion.inference.loading import load_classifier
from skinlesion.inference.torch_backend import prediction_sets, thresholds_of
from skinlesion.models.abstention import AbstainParams, fit_prediction_sets
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.conformal import (
    cross_fit_membership,
    fit_set_thresholds,
    ordered_set,
    quantile_rank,
    set_membership,
    too_few,
)
from skinlesion.models.other import catch_summary
from skinlesion.reports.coverage import card_lines, floor_chance, set_markdown, set_metrics

CLASSES = ["Chickenpox", "Measles", "Monkeypox", "Normal"]


def calibrated_sample(n: int, rng: np.random.Generator, sharpness: float = 2.0):
    """Photos whose label is drawn from their own probabilities (a perfectly calibrated model)."""
    logits = rng.normal(0, sharpness, (n, 4)) + np.array([0.0, -0.8, 0.6, 0.4])  # unequal classes
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    targets = (rng.random((n, 1)) > probs.cumsum(1)).sum(1)
    return probs, targets


def test_the_rank_is_the_finite_sample_one():
    assert quantile_rank(9, 0.9) == 9  # (9 + 1) * 0.9 = 9 exactly, despite floating point
    assert quantile_rank(19, 0.9) == 18 and quantile_rank(100, 0.9) == 91
    assert quantile_rank(8, 0.9) == 9  # more than 8: no finite threshold


def test_each_class_is_covered_at_the_level_and_not_far_above():
    """Over many calibration draws, P(class c in set | class c) lies in [level, level + 1/(n_c + 1)]."""
    rng = np.random.default_rng(0)
    level, hits, totals = 0.9, np.zeros(4), np.zeros(4)
    for _ in range(300):
        cal_p, cal_y = calibrated_sample(160, rng)
        test_p, test_y = calibrated_sample(200, rng)
        member = set_membership(test_p, fit_set_thresholds(cal_p, cal_y, 4, level))
        for c in range(4):
            hits[c] += member[test_y == c, c].sum()
            totals[c] += (test_y == c).sum()
    coverage = hits / totals
    n_smallest = np.bincount(calibrated_sample(160 * 300, rng)[1], minlength=4).min() / 300
    assert (coverage >= level - 0.005).all(), coverage  # Monte Carlo noise ~0.002
    assert (coverage <= level + 1 / (n_smallest + 1) + 0.01).all(), coverage


def test_sharper_models_get_smaller_sets():
    rng = np.random.default_rng(1)
    sizes = []
    for sharpness in (0.5, 4.0):
        p, y = calibrated_sample(2000, rng, sharpness)
        t = fit_set_thresholds(p[:1000], y[:1000], 4, 0.9)
        sizes.append(set_membership(p[1000:], t).sum(1).mean())
    assert sizes[1] < 1.5 < sizes[0]


def test_too_few_photos_of_a_class_put_it_in_every_set():
    probs = np.array([[0.7, 0.1, 0.1, 0.1]] * 20 + [[0.1, 0.7, 0.1, 0.1]] * 5)
    targets = np.array([0] * 20 + [1] * 5)  # classes 2 and 3: none at all
    t = fit_set_thresholds(probs, targets, 4, 0.9)
    assert t[0] == pytest.approx(0.7) and t[1:].tolist() == [0.0, 0.0, 0.0]
    assert too_few(targets, 4, 0.9) == [1, 2, 3]
    assert set_membership([[0.97, 0.01, 0.01, 0.01]], t).tolist() == [[True, True, True, True]]


def test_sets_are_never_empty_and_ordered_by_probability():
    t = [0.9, 0.9, 0.9, 0.9]
    assert set_membership([[0.4, 0.3, 0.2, 0.1]], t).tolist() == [[True, False, False, False]]
    assert ordered_set([0.1, 0.35, 0.45, 0.1], [0.5, 0.3, 0.3, 0.5]) == [2, 1]
    with pytest.raises(ValueError, match="coverage level"):
        fit_set_thresholds(np.eye(4), np.arange(4), 4, 1.0)


def test_out_of_fold_sets_never_use_their_own_fold():
    rng = np.random.default_rng(2)
    p, y = calibrated_sample(600, rng)
    folds = np.arange(600) % 3
    member = cross_fit_membership(p, y, folds, 4, 0.8)
    for f in range(3):
        own = folds == f
        expected = set_membership(p[own], fit_set_thresholds(p[~own], y[~own], 4, 0.8))
        np.testing.assert_array_equal(member[own], expected)
    assert not np.array_equal(member, set_membership(p, fit_set_thresholds(p, y, 4, 0.8)))


# -- the decision on one photo --------------------------------------------------------------------

SETS = Thresholds(ood_score=2.0, set_level=0.9, set_thresholds=(0.25, 0.2, 0.4, 0.5))
MEASLES_PHOTO = [0.285, 0.219, 0.485, 0.011]  # the external Measles photo of the issue


def test_an_unsure_photo_gets_a_set_and_no_single_answer():
    d = decide(MEASLES_PHOTO, CLASSES, 1.0, SETS)
    assert d.prediction_set == ("Monkeypox", "Chickenpox", "Measles") and d.answer is None
    assert not d.abstained and d.message == f"could be Monkeypox, Chickenpox or Measles; {NOT_ENOUGH}"
    two = decide([0.3, 0.05, 0.6, 0.05], CLASSES, 1.0, SETS)
    assert two.message == f"could be Monkeypox or Chickenpox; {NOT_ENOUGH}"


def test_a_clear_photo_gets_one_class_and_a_turned_away_photo_none():
    clear = decide([0.05, 0.02, 0.9, 0.03], CLASSES, 1.0, SETS)
    assert clear.prediction_set == ("Monkeypox",) and clear.answer == "Monkeypox"
    away = decide(MEASLES_PHOTO, CLASSES, 3.0, SETS)
    assert away.abstained and away.reason == "out_of_distribution" and away.prediction_set == ()
    assert away.answer is None


def test_without_set_thresholds_the_top_class_is_the_answer():
    d = decide(MEASLES_PHOTO, CLASSES, 1.0, Thresholds())
    assert d.prediction_set == ("Monkeypox",) and d.answer == "Monkeypox"


def test_thresholds_round_trip_through_model_json():
    assert Thresholds.from_json(SETS.to_json()) == SETS
    assert Thresholds.from_json({"confidence": 0.5, "ood_score": 3.0}) == Thresholds(0.5, 3.0)  # older files


# -- in the checkpoint ---------------------------------------------------------------------------


def test_set_thresholds_travel_in_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False).eval()
    probs, targets = calibrated_sample(200, np.random.default_rng(3))
    buffers, summary = fit_prediction_sets(model, torch.from_numpy(probs), torch.from_numpy(targets), 0.9)
    assert summary["sets/level"] == 0.9 and summary["sets/classes_in_every_set"] == []
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = load_classifier(tmp_path / "m.ckpt")
    t = thresholds_of(loaded)
    assert t.set_level == 0.9
    np.testing.assert_allclose(t.set_thresholds, buffers["set_threshold"].numpy())
    figures = prediction_sets(loaded, probs)
    assert figures["set_level"] == 0.9
    assert prediction_sets(SkinLesionClassifier(CLASSES, "simple_cnn", pretrained=False), probs) == {}
    np.testing.assert_array_equal(figures["prediction_sets"], set_membership(probs, t.set_thresholds))
    assert AbstainParams().set_coverage == 0.9  # the default level
    with pytest.raises(ValueError, match="set_coverage"):
        AbstainParams(set_coverage=1.0)


# -- reported ------------------------------------------------------------------------------------


def test_coverage_and_sizes_are_counted_class_by_class():
    member = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1], [1, 0, 0, 0]], bool)
    targets = np.array([0, 1, 2, 2, 1])  # the last photo's set misses its class
    m = set_metrics(member, targets, CLASSES, "test", 0.9)
    assert m["test/set_coverage"] == pytest.approx(0.8) and m["test/set_mean_size"] == pytest.approx(1.4)
    assert m["test/set_coverage/Measles"] == 0.5 and m["test/set_coverage/Monkeypox"] == 1.0
    assert "test/set_coverage/Normal" not in m and m["test/set_min_class_coverage"] == 0.5
    assert m["test/set_size_counts"] == [3, 2, 0, 0] and m["test/set_single_acc"] == pytest.approx(2 / 3)
    low, high = m["test/set_coverage_ci/Measles"]
    assert low < 0.1 and high > 0.9  # two photos prove nothing
    text = set_markdown(m, CLASSES, "test")
    assert "## Prediction sets (90 % class-conditional conformal)" in text and "| Measles | 0.500 |" in text


def _at_least(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def test_the_chance_that_exact_sets_meet_the_floor_is_the_binomial_one():
    # the multi-source test split: 15, 12, 38, 35 photos; 90 % sets, each class at >= 85 %
    need = {15: 13, 12: 11, 38: 33, 35: 30}  # ceil(0.85 n)
    expected = math.prod(_at_least(k, n, 0.9) for n, k in need.items())
    assert floor_chance([15, 12, 38, 35], 0.9) == pytest.approx(expected) and 0.3 < expected < 0.5
    assert floor_chance([17, 20], 0.9) == pytest.approx(_at_least(15, 17, 0.9) * _at_least(17, 20, 0.9))
    assert floor_chance([400] * 4, 0.9) > 0.99 > floor_chance([40] * 4, 0.9) > floor_chance([12] * 4, 0.9)
    m = set_metrics(np.eye(4, dtype=bool)[[0, 1, 2, 3, 3]], np.array([0, 1, 2, 3, 2]), CLASSES, "test", 0.9)
    assert m["test/set_floor_chance"] == pytest.approx(floor_chance([1, 1, 2, 1], 0.9))
    assert "keep every class at 85 % or more only" in set_markdown(m, CLASSES, "test")
    no_level = set_metrics(np.eye(4, dtype=bool), np.arange(4), CLASSES, "test", float("nan"))
    assert "test/set_floor_chance" not in no_level


def test_the_card_section_reads_every_figure_from_the_runs():
    member = np.eye(4, dtype=bool)[[0, 1, 2, 3]]
    test = set_metrics(member, np.arange(4), CLASSES, "test", 0.9) | {"test/abstention_rate": 0.05}
    external = set_metrics(member[:2], np.array([0, 0]), CLASSES, "folder", 0.9)
    rejection = {"sets": {"nonskin": {"n": 48, "rejected": 46, "rejected_fraction": 46 / 48}}}
    text = "\n".join(card_lines(test, None, external, rejection))
    assert "| coverage | 1.000 | – | 0.500 |" in text
    assert "| exact 90 % sets keep every class at 85 % here | 65.6% | – | 81.0% |" in text
    assert "| turned away by the gates | 5.0% | – | – |" in text
    assert "| Measles | 1.000 | – |" in text and "nonskin 46/48 (95.8%)" in text
    assert "No prediction sets" in card_lines({}, None, None, None)[0]
    assert "other-rash gate is fitted" not in text  # no gate in this run: nothing said about one
    gate = catch_summary({0.02: 0.55, 0.1: 0.81}, 0.03, 0.6)
    text = "\n".join(card_lines(test | gate, None, external, rejection))
    assert "fitted at 3 % of in-class validation photos" in text and "turns away 60% of" in text
    fixed = "\n".join(card_lines(test | catch_summary({0.02: 0.55}, 0.05, 0.0), None, external, rejection))
    assert "fitted at 5 % of in-class validation photos: a fixed budget" in fixed
    assert "(2 %: 55.0%, 10 %: 81.0%)" in text
    # make train writes the card before any make abstention: the budget is stated all the same
    before_abstention = "\n".join(card_lines(test | gate, None, external, None))
    assert "not measured: run `make abstention`" in before_abstention and "fitted at 3 %" in before_abstention
    # the promise the card states follows where the sets were fitted
    assert "fitted on the validation split: for a photo like" in text
    oof = "\n".join(
        card_lines(
            test | {"sets/calibration": "out of fold", "sets/calibration_photos": 989}, None, None, None
        )
    )
    assert "out-of-fold scores of a cross-validation of its train + val photos (989 photos)" in oof
    assert "measured below, not promised" in oof and "with probability at least" not in oof
