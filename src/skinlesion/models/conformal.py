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
