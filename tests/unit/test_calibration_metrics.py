"""ECE, NLL, Brier and reliability bins: hand-worked cases, references, and temperature scaling."""

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from skinlesion.models.calibration import fit_temperature
from skinlesion.reports.calibration import (
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
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
