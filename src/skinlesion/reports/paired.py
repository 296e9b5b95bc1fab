"""Paired differences between two recipes scored on the same images: the one statistics path of
``cv_compare`` (folds), ``lodo`` (seeds) and the audits. A difference is called real only when
its interval excludes 0."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from skinlesion.reports.metrics import DEFAULT_BOOTSTRAP, Bootstrap


def paired_difference(diffs: np.ndarray, n_val: float, n_train: float, level: float) -> dict[str, float]:
    """Mean paired difference with its t interval over the pairs (folds or seeds).

    For folds, ``n_val / n_train`` is the corrected resampled t of Nadeau & Bengio (2003): folds
    share training data, so their differences are correlated. For seeds on one split pass
    ``n_val=0``: the plain paired t over seeds, which measures training noise, not test sampling.
    """
    k = len(diffs)
    mean = float(diffs.mean())
    if k < 2:
        return {"mean": mean, "min": mean, "max": mean, "low": float("nan"), "high": float("nan")}
    se = float(np.sqrt((1 / k + n_val / n_train) * diffs.var(ddof=1)))
    half = float(stats.t.ppf(0.5 + level / 2, k - 1)) * se
    return {
        "mean": mean,
        "min": float(diffs.min()),
        "max": float(diffs.max()),
        "low": mean - half,
        "high": mean + half,
    }


def bootstrap_mean(
    values: np.ndarray, groups: Sequence[str] | None = None, options: Bootstrap = DEFAULT_BOOTSTRAP
) -> list[float]:
    """Percentile interval of the mean of per-image ``values`` (seed-averaged correctness, or a
    paired difference of it), resampling whole groups (a patient, a duplicate group) when given."""
    values = np.asarray(values, dtype=float)
    units = (
        np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
        if groups is not None
        else np.arange(len(values))
    )
    n_units = int(units.max()) + 1
    sums = np.bincount(units, weights=values, minlength=n_units)
    counts = np.bincount(units, minlength=n_units).astype(float)
    rng = np.random.default_rng(options.seed)
    draws = rng.integers(0, n_units, (options.n_resamples, n_units))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    tail = (1 - options.level) / 2
    return [float(q) for q in np.quantile(means, [tail, 1 - tail])]
