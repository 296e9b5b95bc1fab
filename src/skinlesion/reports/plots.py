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
