"""How far the model's probabilities can be taken at their word: ECE, NLL, Brier, reliability bins.

A clinician reads "Measles 0.9" as nine in ten; the expected calibration error (ECE) is the
image-weighted gap between confidence and accuracy over equal-width confidence bins (Guo et al.,
2017). The checkpoint's temperature is fitted on val, so the test split shows whether it carries
over: each score is reported for the raw softmax (T = 1) and for the temperature-scaled output.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def reliability_bins(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width bin of top-1 confidence ((lo, hi], the first closed): count, confidence, accuracy."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    confidence = probs.max(1)
    correct = (probs.argmax(1) == targets).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.digitize(confidence, edges[1:-1], right=True)
    count = np.bincount(index, minlength=n_bins).astype(float)
    mean = np.full(n_bins, np.nan)

    def per_bin(values: np.ndarray) -> np.ndarray:
        return np.divide(np.bincount(index, values, n_bins), count, out=mean.copy(), where=count > 0)

    return {"edges": edges, "count": count, "confidence": per_bin(confidence), "accuracy": per_bin(correct)}


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    bins = reliability_bins(probs, targets, n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float((gaps * bins["count"][filled]).sum() / max(bins["count"].sum(), 1))


def negative_log_likelihood(probs: np.ndarray, targets: np.ndarray) -> float:
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(targets)), np.asarray(targets)]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def brier_score(probs: np.ndarray, targets: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of Σ_k (p_k − 1[y = k])², from 0 (perfect) to 2."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(targets)]
    return float(((probs - onehot) ** 2).sum(1).mean())


def calibration_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    prefix: str = "test",
    logits: np.ndarray | None = None,
    temperature: float | None = None,
    n_bins: int = 15,
) -> dict:
    """ECE, NLL and Brier of ``probs``; with ``logits`` the same for the raw softmax (``*_uncalibrated``)."""
    out: dict = {f"{prefix}/ece_bins": n_bins}
    variants = [("", probs)] + ([("_uncalibrated", softmax(logits))] if logits is not None else [])
    for suffix, p in variants:
        out[f"{prefix}/ece{suffix}"] = expected_calibration_error(p, targets, n_bins)
        out[f"{prefix}/nll{suffix}"] = negative_log_likelihood(p, targets)
        out[f"{prefix}/brier{suffix}"] = brier_score(p, targets)
    if temperature is not None:
        out[f"{prefix}/temperature"] = float(temperature)
    return out


SELECTIVE_COVERAGES = (0.9, 0.8, 0.7)


def accuracy_coverage(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Selective classification: abstaining on the least confident images first, the accuracy on the
    ``k`` most confident for every ``k`` (coverage ``k / n``). What any confidence threshold can buy:
    the curve is the best that thresholding this model's top-1 probability can do on these images."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    order = np.argsort(-probs.max(1), kind="stable")
    correct = (probs.argmax(1) == targets)[order].astype(float)
    k = np.arange(1, len(targets) + 1)
    return k / len(targets), np.cumsum(correct) / k


def selective_metrics(probs: np.ndarray, targets: np.ndarray, prefix: str = "test") -> dict:
    """Accuracy at fixed coverages, and the area under the risk-coverage curve (AURC, lower is better;
    Geifman & El-Yaniv, 2017): the mean error over all coverages."""
    if len(targets) == 0:
        return {}
    _, accuracy = accuracy_coverage(probs, targets)
    out = {f"{prefix}/aurc": float((1 - accuracy).mean())}
    for c in SELECTIVE_COVERAGES:
        k = max(1, int(np.floor(c * len(targets) + 1e-9)))
        out[f"{prefix}/acc_at_coverage/{c}"] = float(accuracy[k - 1])
    return out
