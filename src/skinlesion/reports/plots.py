"""Plots: confusion matrix, misclassified grid, training curves.

Figures are built on ``matplotlib.figure.Figure`` objects, not pyplot: no global backend is set,
so the same functions work headless, in a server and in a notebook.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def subplots(nrows: int = 1, ncols: int = 1, figsize=(6, 4), squeeze: bool = True):
    """Like ``plt.subplots`` without pyplot's global figure registry."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Counts and row-normalised matrices side by side, class names on both axes."""
    fig, axes = subplots(1, 2, figsize=(11, 4.8))
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    for ax, data, sub, fmt in (
        (axes[0], cm, "counts", "d"),
        (axes[1], norm, "row-normalised (recall)", ".2f"),
    ):
        ax.imshow(data, cmap="Blues", vmin=0, vmax=data.max() if data.max() > 0 else 1)
        ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} {sub}".strip())
        peak = data.max() if data.max() > 0 else 1
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                ax.text(
                    j,
                    i,
                    format(data[i, j], fmt),
                    ha="center",
                    va="center",
                    color="white" if data[i, j] > 0.6 * peak else "black",
                )
    return _save(fig, path)


def plot_misclassified(
    images: Sequence[np.ndarray],
    true: Sequence[str],
    pred: Sequence[str],
    prob: Sequence[float],
    path: Path,
    max_images: int = 24,
) -> Path:
    """A grid of wrong predictions titled 'true -> predicted (p)'; says so when there are none."""
    n = min(len(images), max_images)
    if n == 0:
        fig, ax = subplots(figsize=(4, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        return _save(fig, path)
    cols = min(6, n)
    rows = (n + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(2.3 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k in range(n):
        ax = axes.ravel()[k]
        ax.imshow(images[k])
        ax.set_title(f"{true[k]} → {pred[k]}\np={prob[k]:.2f}", fontsize=8)
    return _save(fig, path)


def read_csv_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Series per metric from Lightning's CSVLogger file: name -> [(epoch, value)].

    LearningRateMonitor rows carry a step but no epoch; logged once per epoch, the k-th such value
    of a series belongs to epoch k.
    """
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            epoch = row.get("epoch")
            for key, value in row.items():
                if key in ("epoch", "step") or value in (None, ""):
                    continue
                x = int(float(epoch)) if epoch not in (None, "") else len(series[key])
                series[key].append((x, float(value)))
    return dict(series)


def plot_training_curves(csv_path: Path, path: Path) -> Path | None:
    """Loss and macro-F1/accuracy per epoch for train and val; None when there is no log."""
    if not Path(csv_path).is_file():
        return None
    series = read_csv_log(csv_path)
    panels = [
        ("loss", ["train/data_loss", "val/loss", "train/penalty"]),
        ("macro-F1 / accuracy", ["train/f1_macro", "val/f1_macro", "train/acc", "val/acc"]),
        ("learning rate", [k for k in series if k.startswith("lr-")]),
    ]
    fig, axes = subplots(1, 3, figsize=(15, 4))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            if key in series:
                xs, ys = zip(*series[key], strict=True)
                ax.plot(xs, ys, marker="o", ms=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if ax.lines:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_roc_curves(
    curves: Sequence[tuple[np.ndarray, np.ndarray, float] | None],
    class_names: Sequence[str],
    path: Path,
    title: str = "",
) -> Path:
    """One-vs-rest ROC curve per class with its AUC; classes without positives or negatives are named."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    for name, curve in zip(class_names, curves, strict=True):
        if curve is None:
            ax.plot([], [], " ", label=f"{name}: no AUC (one class only)")
        else:
            fpr, tpr, area = curve
            ax.plot(fpr, tpr, label=f"{name}: AUC {area:.3f}")  # linear, as the trapezoidal AUC
    ax.set_xlabel("false-positive rate (1 − specificity)")
    ax.set_ylabel("true-positive rate (sensitivity)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(f"{title} one-vs-rest ROC".strip())
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_reliability(panels: Sequence[tuple[str, dict[str, np.ndarray], float]], path: Path) -> Path:
    """Reliability diagrams side by side, e.g. before and after temperature scaling.

    Each panel is (title, :func:`skinlesion.reports.reliability.reliability_bins`, ECE): bars are the
    accuracy in each confidence bin, red lines its mean confidence (a bar below its line means
    over-confidence), the diagonal is perfect calibration, the numbers are images per bin.
    """
    fig = Figure(figsize=(5 * len(panels), 4.8))
    for ax, (title, bins, ece) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        filled = bins["count"] > 0
        x, w = bins["edges"][:-1][filled], np.diff(bins["edges"])[filled]
        acc, conf, n = bins["accuracy"][filled], bins["confidence"][filled], bins["count"][filled]
        ax.bar(x, acc, w, align="edge", alpha=0.8, edgecolor="black", label="accuracy in the bin")
        ax.hlines(conf, x, x + w, color="red", lw=2, label="mean confidence in the bin")
        for lo, width, count in zip(x, w, n, strict=True):
            ax.text(lo + width / 2, 0.02, str(int(count)), ha="center", fontsize=7)
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}\nECE {ece:.3f}, {int(n.sum())} images")
        ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def plot_accuracy_coverage(
    coverage: np.ndarray,
    accuracy: np.ndarray,
    path: Path,
    title: str = "",
    own_rule: tuple[float, float] | None = None,
) -> Path:
    """Accuracy on the answered images against the share answered, abstaining on the least confident
    first (:func:`skinlesion.reports.reliability.accuracy_coverage`). ``own_rule`` (coverage,
    accuracy) marks where the checkpoint's own abstention (confidence and out-of-distribution gates)
    landed, which need not lie on the curve."""
    fig, ax = subplots(figsize=(5.5, 4))
    ax.plot(coverage, accuracy, lw=2, label="abstain on the least confident first")
    if own_rule is not None:
        ax.plot(*own_rule, "o", color="red", label="the checkpoint's own abstention rule")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(max(0.0, float(accuracy.min()) - 0.05), 1.01)
    ax.invert_xaxis()
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("accuracy on the answered images")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def plot_cv_folds(folds: Sequence[dict], metrics: Sequence[str], path: Path, title: str = "") -> Path:
    """Every fold's score per metric (one colour per fold) beside the mean ± sd over the folds."""
    fig = Figure(figsize=(1.3 * len(metrics) + 2, 4.5))
    ax = fig.subplots()
    values = np.array([[f[m] for m in metrics] for f in folds], dtype=float)
    x = np.arange(len(metrics))
    for i, (f, row) in enumerate(zip(folds, values, strict=True)):
        offset = (i - (len(folds) - 1) / 2) * 0.06
        ax.scatter(x - 0.15 + offset, row, s=18, label=f"fold {f['fold']}")
    sd = values.std(0, ddof=1) if len(folds) > 1 else np.zeros(len(metrics))
    ax.errorbar(x + 0.2, values.mean(0), yerr=sd, fmt="D", color="black", capsize=4, label="mean ± sd")
    ax.set_xticks(x, [m.replace("recall/", "recall\n") for m in metrics])
    ax.set_ylim(max(0.0, np.nanmin(values) - 0.1), 1.01)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    return _save(fig, path)
