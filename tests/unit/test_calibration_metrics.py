"""ECE, NLL, Brier and reliability bins: hand-worked cases, references, and temperature scaling."""

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from skinlesion.models.temperature import fit_temperature
from skinlesion.reports.metrics import details_markdown
from skinlesion.reports.reliability import (
    accuracy_coverage,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    selective_metrics,
    softmax,
)


def test_ece_by_hand():
    # confidences 0.9, 0.9 (one right) and 0.6, 0.6 (both right), in 10 bins:
    # bin (0.8, 0.9]: |0.5 - 0.9| * 2/4, bin (0.5, 0.6]: |1.0 - 0.6| * 2/4 -> 0.4
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    targets = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, targets, n_bins=10) == pytest.approx(0.4)
    bins = reliability_bins(probs, targets, n_bins=10)
    assert bins["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    assert bins["accuracy"][8] == 0.5 and np.isnan(bins["accuracy"][0])


def test_confidence_one_falls_in_the_last_bin():
    bins = reliability_bins(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([0, 0]), n_bins=4)
    assert bins["count"].tolist() == [0, 1, 0, 1]


def test_nll_and_brier_agree_with_references():
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(50, 4)))
    targets = rng.integers(0, 4, 50)
    assert negative_log_likelihood(probs, targets) == pytest.approx(log_loss(targets, probs, labels=range(4)))
    onehot = np.eye(4)[targets]
    assert brier_score(probs, targets) == pytest.approx(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    assert brier_score(onehot, targets) == 0.0


def test_temperature_scaling_repairs_an_overconfident_model():
    g = torch.Generator().manual_seed(1)
    honest = torch.randn(6000, 4, generator=g) * 1.5
    targets = torch.multinomial(honest.softmax(-1), 1, generator=g).squeeze(1).numpy()
    logits = honest.numpy() * 3  # the same ranking, three times too sure
    t = fit_temperature(torch.from_numpy(logits), torch.from_numpy(targets))
    m = calibration_metrics(softmax(logits / t), targets, "test", logits=logits, temperature=t)
    assert t == pytest.approx(3.0, rel=0.1)
    assert m["test/ece_uncalibrated"] > 0.1 and m["test/ece"] < 0.03
    assert m["test/nll"] < m["test/nll_uncalibrated"] and m["test/brier"] < m["test/brier_uncalibrated"]
    assert m["test/temperature"] == t


def test_accuracy_coverage_by_hand():
    # confidences 0.95 (right), 0.9 (wrong), 0.8 (right), 0.7 (right), 0.6 (wrong) ... over 10 images
    conf = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.58, 0.56, 0.54, 0.52, 0.51])
    right = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1, 1], dtype=bool)
    targets = np.zeros(10, dtype=int)
    probs = np.stack([conf, 1 - conf], axis=1)
    probs[~right] = probs[~right][:, ::-1]  # wrong: the top class is 1, with the same confidence
    shuffle = np.random.default_rng(0).permutation(10)  # order of the images does not matter
    coverage, accuracy = accuracy_coverage(probs[shuffle], targets[shuffle])
    assert coverage.tolist() == pytest.approx(np.arange(1, 11) / 10)
    assert accuracy.tolist() == pytest.approx(np.cumsum(right) / np.arange(1, 11))
    m = selective_metrics(probs, targets, "folder")
    assert m["folder/acc_at_coverage/0.9"] == pytest.approx(6 / 9)  # 9 most confident: 6 right
    assert m["folder/acc_at_coverage/0.8"] == pytest.approx(5 / 8)
    assert m["folder/acc_at_coverage/0.7"] == pytest.approx(5 / 7)
    assert m["folder/aurc"] == pytest.approx(np.mean(1 - np.cumsum(right) / np.arange(1, 11)))
    m |= {"folder/acc": 0.7}
    assert "80 % coverage 0.625" in details_markdown(m, ["a", "b"], "folder")


def test_a_model_that_knows_its_mistakes_has_the_lowest_aurc():
    targets = np.zeros(20, dtype=int)
    conf = np.linspace(0.99, 0.6, 20)
    probs = np.stack([conf, 1 - conf], axis=1)
    ranked, reversed_ = probs.copy(), probs.copy()
    ranked[15:] = ranked[15:, ::-1]  # the 5 least confident are the wrong ones
    reversed_[:5] = reversed_[:5, ::-1]  # the 5 most confident are the wrong ones
    good, bad = selective_metrics(ranked, targets), selective_metrics(reversed_, targets)
    assert good["test/acc_at_coverage/0.7"] == 1.0 and bad["test/acc_at_coverage/0.7"] == pytest.approx(
        9 / 14
    )
    assert good["test/aurc"] < bad["test/aurc"]
