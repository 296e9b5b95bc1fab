"""The optimizer study's grid (``python -m skinlesion.optimizer_study``): which cells to run, the lr
each optimizer keeps, per-fold figures read from the cv runs, paired differences and their verdicts.

Pure functions over plain values, so that the choices the study makes (the lr, "real" or "noise")
are tested without training anything; the command only runs the cells and reads their files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from skinlesion.reports.paired import paired_difference
from skinlesion.reports.plots import read_csv_log

# per-fold figures of a cell, in the table's order; the norms come from each fold's best checkpoint
FOLD_METRICS = ("acc", "f1_macro", "val_loss", "epochs_to_best", "fit_seconds")
NORMS = ("l1", "l2", "head_l1", "head_l2", "backbone_l1", "backbone_l2")
COMPARED = ("f1_macro", "acc")  # the paired differences: macro-F1 first, the study's criterion


def lr_label(lr: float) -> str:
    """``0.0003``: the lr as a directory name and a table entry (``%g``, exact for grid values)."""
    return f"{lr:g}"


@dataclass(frozen=True)
class Cell:
    """One cross-validated recipe of the grid, and where its ``cv`` run lives."""

    optimizer: str
    lr: float
    regularizer: str
    dropout: float
    directory: Path

    @property
    def name(self) -> str:
        return f"{self.optimizer}/{self.regularizer}/dropout{self.dropout:g}"


def grid_cells(
    out: Path,
    chosen_lr: dict[str, float],
    regularizers: Sequence[str],
    dropouts: Sequence[float],
    base_dropout: float,
    dropout_regularizers: Sequence[str] | None = None,
) -> list[Cell]:
    """Every optimizer (at its chosen lr) x regularizer x dropout.

    ``dropout_regularizers`` (None: all) are crossed with every dropout; the other regularizers run
    at ``base_dropout`` only, which halves the regularizer arms a 2 h CPU budget cannot afford.
    The cell of the baseline regularizer at the base dropout is stage 1's run at the chosen lr: the
    same recipe, so it is read from ``lr/`` instead of being trained twice.
    """
    crossed = set(regularizers if dropout_regularizers is None else dropout_regularizers)
    cells = []
    for o, lr in chosen_lr.items():
        for reg in regularizers:
            for d in dropouts:
                if reg not in crossed and not math.isclose(d, base_dropout):
                    continue
                if reg == regularizers[0] and math.isclose(d, base_dropout):
                    directory = out / "lr" / o / lr_label(lr)
                else:
                    directory = out / "grid" / o / reg / f"dropout{d:g}"
                cells.append(Cell(o, lr, reg, float(d), directory))
    return cells


def choose_lr(scores: dict[float, tuple[float, float]]) -> float:
    """The lr with the best mean val macro-F1; ties go to the lower mean val loss, then the lower lr.

    ``scores``: lr -> (mean val macro-F1, mean val loss at the best epoch). Few val images make
    macro-F1 ties common, and the loss still separates a confident model from a lucky one.
    """
    if not scores:
        raise ValueError("no lr to choose from")

    def key(lr: float) -> tuple[float, float, float]:
        f1, loss = scores[lr]
        return (-round(f1, 12), loss if math.isfinite(loss) else math.inf, lr)

    return min(scores, key=key)


def verdict(diff: dict[str, float]) -> str:
    """Say "real" when the interval excludes 0, else "noise" (also with no interval: one fold)."""
    low, high = diff["low"], diff["high"]
    return "real" if (low > 0 or high < 0) else "noise"


def curve_summary(csv_path: Path) -> dict:
    """A fold's per-epoch losses from its CSV log, and the epoch its best checkpoint came from.

    The best epoch is the first with the highest val macro-F1 (what ModelCheckpoint keeps); a
    resumed run that logged an epoch twice counts its last value.
    """
    if not Path(csv_path).is_file():
        return {"val_loss": math.nan, "epochs_to_best": math.nan, "train_loss": {}, "val_loss_curve": {}}
    series = read_csv_log(csv_path)
    per_epoch = {key: dict(series.get(key, [])) for key in ("val/f1_macro", "val/loss")}
    train = dict(series.get("train/data_loss") or series.get("train/loss") or [])
    f1 = per_epoch["val/f1_macro"]
    best = min(f1, key=lambda e: (-f1[e], e)) if f1 else None
    return {
        "val_loss": per_epoch["val/loss"].get(best, math.nan) if best is not None else math.nan,
        "epochs_to_best": best + 1 if best is not None else math.nan,
        "train_loss": train,
        "val_loss_curve": per_epoch["val/loss"],
    }


def l1_l2(params: Iterable[torch.Tensor]) -> tuple[float, float]:
    """(sum |w|, sqrt(sum w^2)) over ``params``: how far L1 and L2 pulled the weights to 0."""
    l1 = l2 = 0.0
    with torch.no_grad():
        for p in params:
            w = p.detach().double()
            l1 += float(w.abs().sum())
            l2 += float(w.pow(2).sum())
    return l1, math.sqrt(l2)


def combine_norms(head: tuple[float, float], backbone: tuple[float, float]) -> dict[str, float]:
    """The norms of head and backbone apart, and of both together."""
    return {
        "l1": head[0] + backbone[0],
        "l2": math.hypot(head[1], backbone[1]),
        "head_l1": head[0],
        "head_l2": head[1],
        "backbone_l1": backbone[0],
        "backbone_l2": backbone[1],
    }


def mean_sd(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample sd (ddof = 1; 0 for one fold) of the finite values; NaN when there are none."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not len(v):
        return {"mean": math.nan, "sd": math.nan}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def summarise(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    return {k: mean_sd([r.get(k, math.nan) for r in rows]) for k in keys}


def mean_curve(curves: Sequence[dict[int, float]]) -> tuple[list[int], list[float]]:
    """Epoch -> mean over the folds that reached that epoch (early stopping ends folds apart)."""
    epochs = sorted({e for c in curves for e in c})
    return epochs, [float(np.mean([c[e] for c in curves if e in c])) for e in epochs]


def paired(
    a: Sequence[dict], b: Sequence[dict], n_val: float, n_train: float, level: float
) -> dict[str, dict]:
    """``b - a`` fold by fold for each compared metric, its corrected resampled t interval and verdict."""
    fa, fb = [r["fold"] for r in a], [r["fold"] for r in b]
    if fa != fb:
        raise ValueError(f"cells ran folds {fa} and {fb}: not paired")
    out = {}
    for key in COMPARED:
        diffs = np.array([rb[key] - ra[key] for ra, rb in zip(a, b, strict=True)], dtype=float)
        d = paired_difference(diffs, n_val, n_train, level)
        out[key] = d | {"verdict": verdict(d)}
    return out


def comparison_plan(cells: Sequence[Cell], base_dropout: float) -> list[tuple[str, str, Cell, Cell]]:
    """(kind, within, a, b) pairs; each difference is ``b - a``.

    Every optimizer against the first within each regularizer x dropout; every regularizer against
    the first (none) within each optimizer at the base dropout; every other dropout against the base
    one within each optimizer with the first regularizer.
    """
    optimizers = list(dict.fromkeys(c.optimizer for c in cells))
    regs = list(dict.fromkeys(c.regularizer for c in cells))
    at = {(c.optimizer, c.regularizer, c.dropout): c for c in cells}
    dropouts = list(dict.fromkeys(c.dropout for c in cells))
    base = next((d for d in dropouts if math.isclose(d, base_dropout)), None)
    plan = []
    for reg in regs:
        for d in dropouts:
            for o in optimizers[1:]:
                first, other = at.get((optimizers[0], reg, d)), at.get((o, reg, d))
                if first and other:  # a regularizer not crossed with this dropout has no cells here
                    plan.append(("optimizer", f"{reg}, dropout {d:g}", first, other))
    for o in optimizers:
        if base is not None:
            for reg in regs[1:]:
                plan.append(("regularizer", f"{o}, dropout {base:g}", at[o, regs[0], base], at[o, reg, base]))
            for d in dropouts:
                if d != base:
                    plan.append(("dropout", f"{o}, {regs[0]}", at[o, regs[0], base], at[o, regs[0], d]))
    return plan


def mismatches(train_config: dict, expected: dict[str, float]) -> list[str]:
    """What a finished cell trained with that the grid no longer asks for (dotted keys -> value).

    A cell is skipped when its report exists; this keeps a changed lr choice or strength from being
    answered by a run of the old recipe.
    """
    wrong = []
    for dotted, want in expected.items():
        node = train_config
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None or not math.isclose(float(node), float(want), rel_tol=1e-9, abs_tol=1e-12):
            wrong.append(f"{dotted}={node} (wanted {want:g})")
    return wrong
