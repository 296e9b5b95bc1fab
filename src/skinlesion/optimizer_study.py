"""``python -m skinlesion.optimizer_study`` (``make optimizer-study``): Adam vs RMSprop, with L1, L2
and dropout, answered by cross-validation rather than by one split.

Stage 1 cross-validates each optimizer at each lr of its grid and keeps the lr with the best mean
val macro-F1; stage 2 crosses every optimizer (at its lr) with every regularizer and dropout. Every
cell is an ordinary ``python -m skinlesion.cv`` over train + val (the test split is never touched)
in its own directory, skipped when its ``cv_report.json`` covers the folds asked for, so a killed
study resumes and a finished one is only re-read. Writes ``optimizer_study.md``/``.json``,
``lr_search.png`` and ``learning_curves.png`` into ``output_dir``; the grid, the lr choice and the
statistics live in :mod:`skinlesion.reports.optim_grid`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import ConfigError, DataError
from skinlesion.core.task import command
from skinlesion.inference.loading import load_classifier
from skinlesion.models.regularizers import WeightPenalty
from skinlesion.reports.optim_grid import (
    FOLD_METRICS,
    NORMS,
    Cell,
    choose_lr,
    combine_norms,
    comparison_plan,
    curve_summary,
    grid_cells,
    l1_l2,
    lr_label,
    mismatches,
    paired,
    summarise,
)
from skinlesion.reports.optim_report import markdown, plot_learning_curves, plot_lr_search
from skinlesion.training.runs import run_module

log = logging.getLogger(__name__)


def wanted_folds(cfg: DictConfig, key: str = "folds") -> list[int]:
    """The folds of the grid (``folds``) or of the lr search (``lr_folds``, default the grid's)."""
    if cfg.get(key) is None:
        return wanted_folds(cfg) if key != "folds" else list(range(int(cfg.n_folds)))
    return sorted(int(f) for f in cfg[key])


def cv_once(cfg: DictConfig, directory: Path, overrides: list[str], folds: list[int]) -> dict:
    """``python -m skinlesion.cv`` into ``directory`` unless its report already covers ``folds``.

    A report of other folds is completed by running cv again (it keeps the folds it finished, so
    the lr search's fold 0 of the chosen lr is not trained again in the grid); one of another
    ``n_folds`` is refused, since its fold directories hold other splits.
    """
    report = read_report(directory)
    if report and report["n_folds"] != cfg.n_folds:
        raise ConfigError(
            f"{directory} was cross-validated with n_folds={report['n_folds']}, not {cfg.n_folds}: "
            "choose another output_dir (or delete it)"
        )
    done = finished_folds(report)
    if not set(folds) <= done:
        run_module(
            "skinlesion.cv",
            *cfg.common,
            *overrides,
            f"n_folds={cfg.n_folds}",
            f"folds=[{','.join(map(str, sorted(done | set(folds))))}]",
            f"hydra.run.dir={directory}",
            f"paths.output_root={cfg.paths.output_root}",
            threads=child_threads(cfg),
        )
    report = json.loads((directory / "cv_report.json").read_text())  # cv has written it by now
    return report | {"folds": [f for f in report["folds"] if f["fold"] in folds]}


def read_report(directory: Path) -> dict | None:
    """The cell's ``cv_report.json``, or None before its first fold finished."""
    path = directory / "cv_report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def finished_folds(report: dict | None) -> set[int]:
    return {f["fold"] for f in (report or {}).get("folds", [])}


def child_threads(cfg: DictConfig) -> int | None:
    """With ``jobs`` > 1, the cores shared out: on 2 CPU cores two 1-thread runs side by side train
    about 10 % faster than one 2-thread run at a time (measured: 9.7 min for two fold-trainings
    together, 5.0 min for one alone)."""
    jobs = int(cfg.get("jobs") or 1)
    return None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)


def run_cells(cfg: DictConfig, cells: list[Cell], folds: list[int]) -> list[dict]:
    """``run_cell`` for each cell, ``jobs`` at a time, longest first; the reports in ``cells``' order."""
    if int(cfg.get("jobs") or 1) == 1:
        return [run_cell(cfg, c, folds) for c in cells]
    order = sorted(cells, key=lambda c: -len(set(folds) - finished_folds(read_report(c.directory))))
    with ThreadPoolExecutor(int(cfg.jobs)) as pool:
        futures = {c: pool.submit(run_cell, cfg, c, folds) for c in order}
        return [futures[c].result() for c in cells]


def run_cell(cfg: DictConfig, cell: Cell, folds: list[int]) -> dict:
    """Cross-validate one recipe on ``folds`` (or read it back); refuse a finished run of another recipe."""
    strengths = dict(cfg.regularizers[cell.regularizer] or {})
    overrides = [
        f"optimizer={cell.optimizer}",
        f"optimizer.lr={cell.lr!r}",
        f"regularizer={cell.regularizer}",
        *(f"regularizer.{k}={float(v)!r}" for k, v in strengths.items()),
        f"model.dropout={cell.dropout!r}",
    ]
    report = cv_once(cfg, cell.directory, overrides, folds)
    expected = {"optimizer.lr": cell.lr, "model.dropout": cell.dropout}
    expected |= {f"regularizer.{k}": float(v) for k, v in strengths.items()}
    if wrong := mismatches(report.get("train_config") or {}, expected):
        raise ConfigError(
            f"{cell.directory} holds a finished run of another recipe ({', '.join(wrong)}): "
            "delete it, or choose another output_dir, to run this one"
        )
    return report


def fold_rows(cell: Cell, report: dict, norms: bool) -> list[dict]:
    """One row per fold: the report's scores, the CSV log's best epoch, the checkpoint's norms."""
    rows = []
    for f in sorted(report["folds"], key=lambda f: f["fold"]):
        fold_dir = cell.directory / f"fold{f['fold']}"
        row = {k: f[k] for k in ("fold", "acc", "f1_macro", "fit_seconds", "n_val", "n_train")}
        row |= curve_summary(fold_dir / "csv" / "metrics.csv")
        if norms:
            row |= weight_norms(fold_dir / "checkpoints" / "best.ckpt")
        rows.append(row)
    return rows


def weight_norms(ckpt: Path) -> dict[str, float]:
    """L1 and L2 norms of the checkpoint's trainable weights, the very tensors the penalties cover.

    Trainable as the model is built (``freeze_stages``); progressive unfreezing is not replayed.
    """
    model = load_classifier(ckpt)
    named = list(model.named_parameters())
    head, backbone = (l1_l2(WeightPenalty(scope=s).parameters(named)) for s in ("head", "backbone"))
    return combine_norms(head, backbone)


CURVES = ("train_loss", "val_loss_curve")


def cell_result(cell: Cell, rows: list[dict]) -> dict:
    return {
        "name": cell.name,
        "optimizer": cell.optimizer,
        "lr": cell.lr,
        "regularizer": cell.regularizer,
        "dropout": cell.dropout,
        "directory": str(cell.directory),
        "folds": [{k: v for k, v in r.items() if k not in CURVES} for r in rows],
        "summary": summarise(rows, FOLD_METRICS),
        "norms": summarise(rows, NORMS),
        "curves": [{k: r[k] for k in CURVES} for r in rows],
    }


def search_lrs(cfg: DictConfig, out: Path, optimizers: list[str]) -> dict[str, dict]:
    """Stage 1: every optimizer at every lr of its grid, at the baseline regularizer and dropout."""
    if missing := [o for o in optimizers if not cfg.lr_grid.get(o)]:
        o = missing[0]
        raise ConfigError(f"lr_grid has no values for optimizer {o!r}: add lr_grid.{o}=[...]")
    baseline = next(iter(cfg.regularizers))
    cells = [
        Cell(o, float(lr), baseline, float(cfg.base_dropout), out / "lr" / o / lr_label(float(lr)))
        for o in optimizers
        for lr in cfg.lr_grid[o]
    ]
    folds = wanted_folds(cfg, "lr_folds")
    reports = run_cells(cfg, cells, folds)
    search = {o: {"grid": [float(x) for x in cfg.lr_grid[o]], "runs": {}, "scores": {}} for o in optimizers}
    for cell, report in zip(cells, reports, strict=True):
        s = summarise(fold_rows(cell, report, norms=False), ("f1_macro", "val_loss"))
        search[cell.optimizer]["runs"][lr_label(cell.lr)] = s | {"directory": str(cell.directory)}
        search[cell.optimizer]["scores"][cell.lr] = (s["f1_macro"]["mean"], s["val_loss"]["mean"])
    for v in search.values():
        v["chosen"] = choose_lr(v.pop("scores"))
    return search


def crossed_regularizers(cfg: DictConfig) -> list[str] | None:
    crossed = cfg.get("dropout_regularizers")
    return None if crossed is None else list(crossed)


def check_config(cfg: DictConfig) -> None:
    if not cfg.optimizers or not cfg.regularizers or not cfg.dropouts:
        raise ConfigError("optimizers, regularizers and dropouts each need at least one entry")
    if not any(np.isclose(float(d), float(cfg.base_dropout)) for d in cfg.dropouts):
        raise ConfigError(f"base_dropout={cfg.base_dropout} is not one of dropouts={list(cfg.dropouts)}")
    folds = wanted_folds(cfg) + wanted_folds(cfg, "lr_folds")
    if int(cfg.n_folds) < 2 or any(not 0 <= f < int(cfg.n_folds) for f in folds):
        raise ConfigError(f"need n_folds >= 2 and folds, lr_folds within 0..{int(cfg.n_folds) - 1}")
    crossed = crossed_regularizers(cfg)
    if crossed is not None and (
        next(iter(cfg.regularizers)) not in crossed or not set(crossed) <= set(cfg.regularizers)
    ):
        raise ConfigError(
            f"dropout_regularizers={list(crossed)} must be regularizers of the grid "
            f"({', '.join(cfg.regularizers)}) and include the baseline, {next(iter(cfg.regularizers))!r}"
        )


def command_line() -> str:
    if HydraConfig.initialized():
        return shlex.join(["python", "-m", "skinlesion.optimizer_study", *HydraConfig.get().overrides.task])
    return "python -m skinlesion.optimizer_study"


def optimizer_study(cfg: DictConfig) -> dict:
    check_config(cfg)
    out = Path(cfg.output_dir)
    optimizers = list(cfg.optimizers)
    lr_search = search_lrs(cfg, out, optimizers)
    regularizers = list(cfg.regularizers)
    cells = grid_cells(
        out,
        {o: s["chosen"] for o, s in lr_search.items()},
        regularizers,
        [float(d) for d in cfg.dropouts],
        float(cfg.base_dropout),
        crossed_regularizers(cfg),
    )
    reports = run_cells(cfg, cells, wanted_folds(cfg))
    rows = {c.name: fold_rows(c, report, norms=True) for c, report in zip(cells, reports, strict=True)}
    first = rows[cells[0].name]
    n_val = float(np.mean([r["n_val"] for r in first]))
    n_train = float(np.mean([r["n_train"] for r in first]))
    comparisons = []
    for kind, within, a, b in comparison_plan(cells, float(cfg.base_dropout)):
        try:
            diff = paired(rows[a.name], rows[b.name], n_val, n_train, float(cfg.level))
        except ValueError as e:
            raise DataError(f"{a.name} and {b.name}: {e}") from e
        comparisons.append({"kind": kind, "within": within, "a": a.name, "b": b.name, "diff": diff})
    result = {
        "command": command_line(),
        "optimizers": optimizers,
        "regularizers": regularizers,
        "regularizer_strengths": OmegaConf.to_container(cfg.regularizers, resolve=True),
        "dropouts": [float(d) for d in cfg.dropouts],
        "base_dropout": float(cfg.base_dropout),
        "n_folds": int(cfg.n_folds),
        "folds": [r["fold"] for r in first],
        "lr_folds": wanted_folds(cfg, "lr_folds"),
        "dropout_regularizers": crossed_regularizers(cfg),
        "common": list(cfg.common),
        "level": float(cfg.level),
        "n_val": n_val,
        "n_train": n_train,
        "lr_search": lr_search,
        "cells": [cell_result(c, rows[c.name]) for c in cells],
        "comparisons": comparisons,
    }
    write_json(out / "optimizer_study.json", result)
    text = markdown(result)
    (out / "optimizer_study.md").write_text(text)
    plot_lr_search(result, out / "lr_search.png")
    plot_learning_curves(result, out / "learning_curves.png")
    print(text)
    return result


main = command(optimizer_study, "optimizer_study")


if __name__ == "__main__":
    main()
