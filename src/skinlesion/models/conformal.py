"""Prediction sets: split conformal prediction, class-conditional (Mondrian), in a few lines of NumPy.

A single top class hides doubt: a photo at Monkeypox 48 %, Chickenpox 29 %, Measles 22 % reads as
"Monkeypox". The set answers "Monkeypox or Chickenpox" instead, with a stated coverage: for a photo
of class c drawn like the calibration photos, c is in its set with probability at least ``level``,
for each class separately (Vovk 2012, Mondrian conformal prediction; with the score 1 - p_c this
is the class-specific rule of Sadinle, Lei & Wasserman 2019, the smallest sets for the guarantee).

Fitting: for each class c with n_c calibration photos, the threshold t_c is the k-th largest
calibrated probability p_c among them, k = ceil((n_c + 1) * level). A photo's set is every class
whose probability reaches its threshold. With n_c < k no finite threshold keeps the promise; then
t_c = 0 and c is in every set (say so rather than pretend). The set is never empty: when no class
reaches its threshold, the top class alone (a larger set keeps the guarantee; photos unlike all
four classes are the gates' concern, ``inference.decision``).

Pure NumPy, no torch: the ONNX serving path applies the same rule to the thresholds in model.json.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def quantile_rank(n: int, level: float) -> int:
    """k = ceil((n + 1) * level): the rank of the threshold among n calibration scores."""
    return math.ceil((n + 1) * level - 1e-9)  # 1e-9: (9 + 1) * 0.9 must be 9, not 9.000000000000002


def fit_set_thresholds(probs: np.ndarray, targets: np.ndarray, n_classes: int, level: float) -> np.ndarray:
    """Per-class probability thresholds (float64, one per class) for sets of coverage ``level``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"the coverage level must be in (0, 1), got {level}")
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    thresholds = np.zeros(n_classes)
    for c in range(n_classes):
        own = np.sort(probs[targets == c, c])[::-1]  # p_c of the class-c photos, largest first
        k = quantile_rank(len(own), level)
        thresholds[c] = own[k - 1] if k <= len(own) else 0.0
    return thresholds


def too_few(targets: np.ndarray, n_classes: int, level: float) -> list[int]:
    """The classes with too few calibration photos for a finite threshold at ``level``."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=n_classes)
    return [c for c in range(n_classes) if quantile_rank(int(counts[c]), level) > counts[c]]


def set_membership(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(N, C) booleans: class c is in photo i's set. Never an empty row (the top class fills it)."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    member = probs >= np.asarray(thresholds, dtype=np.float64)[None, :]
    empty = ~member.any(axis=1)
    member[empty, probs[empty].argmax(axis=1)] = True
    return member


def ordered_set(probs: Sequence[float], thresholds: Sequence[float]) -> list[int]:
    """One photo's set as class indices, most probable first."""
    member = set_membership(np.asarray(probs)[None, :], thresholds)[0]
    return sorted(np.flatnonzero(member).tolist(), key=lambda c: -probs[c])


def cross_fit_membership(
    probs: np.ndarray, targets: np.ndarray, folds: np.ndarray, n_classes: int, level: float
) -> np.ndarray:
    """Out-of-fold sets: each fold's photos get the thresholds fitted on the other folds' photos.

    For cross-validation, where each fold's own checkpoint was calibrated on the very photos it is
    scored on; fitting on the other folds keeps the coverage estimate held out.
    """
    probs, targets, folds = np.asarray(probs), np.asarray(targets), np.asarray(folds)
    member = np.zeros(probs.shape, dtype=bool)
    for f in np.unique(folds):
        held = folds == f
        t = fit_set_thresholds(probs[~held], targets[~held], n_classes, level)
        member[held] = set_membership(probs[held], t)
    return member


def calibration_draws(
    probs: np.ndarray,
    targets: np.ndarray,
    per_class: Sequence[int],
    level: float,
    draws: int = 1000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """How much a split-conformal run depends on how many photos calibrate it.

    From a pool of held-out scores (out of fold), ``draws`` times: calibrate on ``per_class[c]``
    photos of each class c drawn at random, score the rest. Returns, per draw, the mean set size,
    the coverage and the lowest class coverage of the rest. With fewer than
    (1 + level) / (1 - level) photos of a class (19 at 90 %), its threshold is its least-confident
    photo; this shows what that costs in set size.
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    n_classes = probs.shape[1]
    by_class = [np.flatnonzero(targets == c) for c in range(n_classes)]
    for c, (idx, n) in enumerate(zip(by_class, per_class, strict=True)):
        if not 0 < n < len(idx):
            raise ValueError(
                f"class {c}: {n} calibration photos of a pool of {len(idx)} leaves none to score"
            )
    rng = np.random.default_rng(seed)
    out = {k: np.zeros(draws) for k in ("mean_size", "coverage", "min_class_coverage")}
    for d in range(draws):
        cal = np.concatenate(
            [rng.choice(idx, n, replace=False) for idx, n in zip(by_class, per_class, strict=True)]
        )
        rest = np.ones(len(targets), dtype=bool)
        rest[cal] = False
        member = set_membership(probs[rest], fit_set_thresholds(probs[cal], targets[cal], n_classes, level))
        covered = member[np.arange(rest.sum()), targets[rest]]
        out["mean_size"][d] = member.sum(1).mean()
        out["coverage"][d] = covered.mean()
        out["min_class_coverage"][d] = min(covered[targets[rest] == c].mean() for c in range(n_classes))
    return out


VAL_SHARES = (0.1, 0.15, 0.2, 0.25)  # data.split.val values the calibration table tries


def calibration_sizes(
    probs: np.ndarray, targets: np.ndarray, n_classes: int, level: float, pool_share: float, draws: int = 1000
) -> list[dict]:
    """For each validation share of the data, the calibration photos per class it gives and how the
    sets fared over ``draws`` random calibration sets of that size drawn from out-of-fold scores.

    ``pool_share``: the share of the data the out-of-fold pool is (``split.train + split.val``), so
    that a share of the data maps onto photos of the pool. Shares that would leave no photo of a
    class to score are skipped.
    """
    counts = np.bincount(np.asarray(targets), minlength=n_classes)
    rows = []
    for share in VAL_SHARES:
        per_class = [max(1, round(share / pool_share * int(n))) for n in counts]
        if any(n >= int(c) for n, c in zip(per_class, counts, strict=True)):
            continue
        d = calibration_draws(probs, targets, per_class, level, draws)
        size = d["mean_size"]
        rows.append(
            {
                "val_share": share,
                "per_class": per_class,
                "mean_size": float(size.mean()),
                "size_range": [float(np.quantile(size, 0.05)), float(np.quantile(size, 0.95))],
                "over_1_5": float((size > 1.5).mean()),
                "coverage": float(d["coverage"].mean()),
                "min_class_coverage": float(d["min_class_coverage"].mean()),
            }
        )
    return rows
