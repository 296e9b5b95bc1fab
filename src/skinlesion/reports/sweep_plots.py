"""Sweep plots from plain trial records (matplotlib, headless).

optuna 2.10's own matplotlib plots do not run on this stack (its parallel-coordinate colour bar
fails on matplotlib 3.11, its fANOVA importances on scikit-learn 1.9), and plain records keep
these functions testable without a study.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from skinlesion.reports.plots import _save


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the report sees it; ``value`` is None unless it completed."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)
    curve: tuple[float, ...] = ()  # val macro-F1 per epoch, when it was reported (skinlesion.sweep_native)


def plot_history(records: Sequence[TrialRecord], path: Path) -> Path:
    """Each trial's val macro-F1 by trial number, the best so far, and pruned trials' last value."""
    fig, ax = plt.subplots(figsize=(7, 4))
    done = [r for r in records if r.value is not None]
    if done:
        ax.scatter([r.number for r in done], [r.value for r in done], label="complete", zorder=3)
        order = sorted(done, key=lambda r: r.number)
        ax.step(
            [r.number for r in order],
            np.maximum.accumulate([r.value for r in order]),
            where="post",
            color="C3",
            label="best so far",
        )
    pruned = [r for r in records if r.state == "PRUNED" and r.curve]
    if pruned:
        ax.scatter(
            [r.number for r in pruned], [r.curve[-1] for r in pruned], marker="x", c="grey", label="pruned"
        )
    failed = [r.number for r in records if r.state == "FAIL"]
    for number in failed:
        ax.axvline(number, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("trial")
    ax.set_ylabel("val macro-F1")
    ax.set_title(f"optimization history ({len(failed)} failed, dotted)" if failed else "optimization history")
    if ax.collections:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_importances(importances: Mapping[str, float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * max(1, len(importances))))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (mean decrease in impurity)")
    ax.set_title("parameter importances" if importances else "parameter importances: too few trials")
    return _save(fig, path)


def plot_score_by(records: Sequence[TrialRecord], keys: Sequence[str], path: Path) -> Path:
    """One panel per categorical parameter: every complete trial's score, by its choice."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        groups: dict[str, list[float]] = defaultdict(list)
        for r in records:
            if r.value is not None and key in r.params:
                groups[str(r.params[key])].append(r.value)
        names = sorted(groups)
        for i, name in enumerate(names):
            ys = groups[name]
            ax.scatter(np.full(len(ys), i) + np.linspace(-0.1, 0.1, len(ys)), ys, alpha=0.8)
            ax.hlines(max(ys), i - 0.25, i + 0.25, color="C3")
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_title(f"val macro-F1 by {key} (red: best)")
    return _save(fig, path)


def _axis(values: Sequence[Any]) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Positions in [0, 1] for one parallel-coordinates axis (categorical, log-scaled or linear)
    and its labels: every choice, or the two ends of the range."""
    if any(isinstance(v, str) for v in values):
        names = sorted({str(v) for v in values})
        span = max(1, len(names) - 1)
        return np.array([names.index(str(v)) for v in values], float) / span, [
            (i / span, n) for i, n in enumerate(names)
        ]
    x = np.array(values, float)
    log = x.min() > 0 and x.max() / x.min() > 50
    scaled = np.log10(x) if log else x
    span = scaled.max() - scaled.min()
    positions = (scaled - scaled.min()) / span if span else np.full(len(x), 0.5)
    suffix = " (log)" if log else ""
    ends = [int(e) if float(e).is_integer() else float(e) for e in (x.min(), x.max())]
    return positions, [(0.0, format_value(ends[0]) + suffix), (1.0, format_value(ends[1]))]


def plot_parallel(records: Sequence[TrialRecord], path: Path) -> Path:
    """Complete trials as lines across every parameter they all share, coloured by score."""
    done = [r for r in records if r.value is not None]
    keys = sorted(set.intersection(*(set(r.params) for r in done))) if done else []
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * (len(keys) + 1)), 4.5))
    if not keys:
        ax.set_title("parallel coordinates: no complete trials")
        return _save(fig, path)
    columns = [_axis([r.params[k] for r in done]) for k in keys]
    score_axis, score_labels = _axis([r.value for r in done])
    ys = np.stack([c[0] for c in columns] + [score_axis], 1)
    colour = plt.cm.viridis(score_axis)
    for row, c in sorted(zip(ys, colour, strict=True), key=lambda rc: rc[0][-1]):
        ax.plot(range(len(keys) + 1), row, color=c, alpha=0.8)
    for i, (_, labels) in enumerate([*columns, (None, score_labels)]):
        for y, text in labels:
            ax.text(i + 0.03, y, text, fontsize=7, ha="left", va="center")
    ax.set_xticks(range(len(keys) + 1), [*keys, "val macro-F1"], rotation=25, ha="right")
    ax.set_yticks([])
    ax.set_title("parallel coordinates (complete trials, colour = val macro-F1)")
    return _save(fig, path)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if value and (abs(value) < 1e-2 or abs(value) >= 1e3) else f"{value:.3f}"
    return str(value)
