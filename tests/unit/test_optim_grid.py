"""The optimizer study's choices without training: the lr it keeps, the verdicts, the grid, the fold
figures it reads, the norms, and the finished cells it refuses to reuse."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from skinlesion.core.errors import ConfigError
from skinlesion.optimizer_study import optimizer_study, run_cell
from skinlesion.reports.optim_grid import (
    Cell,
    choose_lr,
    combine_norms,
    comparison_plan,
    curve_summary,
    grid_cells,
    l1_l2,
    mean_curve,
    mismatches,
    paired,
    verdict,
)
from skinlesion.reports.optim_report import markdown, plot_learning_curves, plot_lr_search
from skinlesion.reports.paired import paired_difference
from tests.helpers import compose_task


def test_choose_lr_takes_the_best_macro_f1() -> None:
    assert choose_lr({1e-4: (0.80, 0.5), 3e-4: (0.85, 0.9), 1e-3: (0.70, 0.3)}) == 3e-4


def test_choose_lr_breaks_ties_by_val_loss_then_by_the_lower_lr() -> None:
    assert choose_lr({1e-4: (0.8, 0.6), 3e-4: (0.8, 0.4), 1e-3: (0.7, 0.1)}) == 3e-4
    assert choose_lr({1e-4: (0.8, 0.4), 3e-4: (0.8, 0.4)}) == 1e-4
    assert choose_lr({1e-4: (0.8, math.nan), 3e-4: (0.8, 2.0)}) == 3e-4  # no loss logged loses the tie
    assert choose_lr({1e-4: (0.1 + 0.2, 0.5), 3e-4: (0.3, 0.4)}) == 3e-4  # float noise is a tie
    with pytest.raises(ValueError):
        choose_lr({})


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.01, 0.05, "real"), (-0.05, -0.01, "real"), (-0.01, 0.05, "noise"), (0.0, 0.02, "noise")],
)
def test_verdict_is_real_only_when_the_interval_excludes_zero(low, high, expected) -> None:
    assert verdict({"mean": (low + high) / 2, "low": low, "high": high}) == expected


def test_one_fold_has_no_interval_and_so_is_noise() -> None:
    d = paired_difference(np.array([0.2]), 10, 40, 0.95)
    assert verdict(d) == "noise"


def test_paired_uses_the_corrected_interval_and_refuses_unpaired_folds() -> None:
    a = [{"fold": k, "f1_macro": f, "acc": f} for k, f in enumerate([0.70, 0.72, 0.71])]
    b = [{"fold": k, "f1_macro": f, "acc": f} for k, f in enumerate([0.80, 0.83, 0.81])]
    d = paired(a, b, n_val=50, n_train=100, level=0.95)
    assert d["f1_macro"] == pytest.approx(
        paired_difference(np.array([0.10, 0.11, 0.10]), 50, 100, 0.95) | {"verdict": "real"}
    )
    with pytest.raises(ValueError, match="not paired"):
        paired(a, b[:2], 50, 100, 0.95)


def test_grid_reuses_the_chosen_stage_1_run_as_its_baseline_cell(tmp_path) -> None:
    cells = grid_cells(tmp_path, {"adam": 1e-3, "rmsprop": 3e-4}, ["none", "l1", "l2"], [0.0, 0.3], 0.3)
    assert len(cells) == 12
    by_name = {c.name: c for c in cells}
    assert by_name["adam/none/dropout0.3"].directory == tmp_path / "lr" / "adam" / "0.001"
    assert by_name["rmsprop/none/dropout0"].directory == tmp_path / "grid" / "rmsprop" / "none" / "dropout0"
    assert by_name["rmsprop/l2/dropout0.3"].lr == 3e-4


def test_comparison_plan_pairs_within_the_other_factors(tmp_path) -> None:
    cells = grid_cells(tmp_path, {"adam": 1e-3, "rmsprop": 3e-4}, ["none", "l1", "l2"], [0.0, 0.3], 0.3)
    plan = [(kind, a.name, b.name) for kind, _, a, b in comparison_plan(cells, 0.3)]
    assert sum(k == "optimizer" for k, _, _ in plan) == 6  # every regularizer x dropout
    assert ("optimizer", "adam/l1/dropout0", "rmsprop/l1/dropout0") in plan
    assert ("regularizer", "rmsprop/none/dropout0.3", "rmsprop/l1/dropout0.3") in plan
    assert ("dropout", "adam/none/dropout0.3", "adam/none/dropout0") in plan
    assert len(plan) == 6 + 2 * 2 + 2


def test_dropout_regularizers_cross_only_those_with_every_dropout(tmp_path) -> None:
    lrs = {"adam": 1e-3, "rmsprop": 3e-4}
    cells = grid_cells(tmp_path, lrs, ["none", "l1", "l2"], [0.0, 0.3], 0.3, ["none"])
    assert sorted(c.name for c in cells if c.optimizer == "adam") == [
        "adam/l1/dropout0.3",
        "adam/l2/dropout0.3",
        "adam/none/dropout0",
        "adam/none/dropout0.3",
    ]
    plan = [(kind, a.name, b.name) for kind, _, a, b in comparison_plan(cells, 0.3)]
    assert ("optimizer", "adam/none/dropout0", "rmsprop/none/dropout0") in plan
    assert not any("l1/dropout0" in b and not b.endswith("0.3") for _, _, b in plan)
    assert len(plan) == 4 + 2 * 2 + 2  # optimizer: none x 2 dropouts, l1, l2; regularizer; dropout


def test_dropout_regularizers_must_hold_the_baseline(tmp_path) -> None:
    cfg = compose_task("optimizer_study", [f"output_dir={tmp_path}", "dropout_regularizers=[l1]"])
    with pytest.raises(ConfigError, match="include the baseline, 'none'"):
        optimizer_study(cfg)


def write_log(path: Path, rows: list[tuple[int, float, float, float]]) -> Path:
    """A CSVLogger file: per epoch a train row (data loss) and a val row (macro-F1, loss)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["epoch,step,train/data_loss,val/f1_macro,val/loss"]
    for epoch, train, f1, loss in rows:
        lines += [f"{epoch},{epoch},,{f1},{loss}", f"{epoch},{epoch},{train},,"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_curve_summary_reads_the_first_best_epoch(tmp_path) -> None:
    log = write_log(tmp_path / "metrics.csv", [(0, 1.4, 0.5, 1.2), (1, 1.0, 0.7, 0.9), (2, 0.8, 0.7, 1.1)])
    s = curve_summary(log)
    assert s["epochs_to_best"] == 2 and s["val_loss"] == pytest.approx(0.9)
    assert s["train_loss"] == {0: 1.4, 1: 1.0, 2: 0.8}
    missing = curve_summary(tmp_path / "none.csv")
    assert math.isnan(missing["val_loss"]) and missing["train_loss"] == {}


def test_mean_curve_averages_the_folds_that_reached_each_epoch() -> None:
    assert mean_curve([{0: 1.0, 1: 0.5}, {0: 3.0}]) == ([0, 1], [2.0, 0.5])


def test_norms_are_sum_abs_and_root_sum_squares() -> None:
    head = l1_l2([torch.tensor([[3.0, -4.0]])])
    assert head == (7.0, 5.0)
    n = combine_norms(head, l1_l2([torch.tensor([[0.0], [-12.0]])]))
    assert n["l1"] == 19.0 and n["l2"] == 13.0 and n["backbone_l2"] == 12.0


def test_mismatches_name_what_a_finished_cell_trained_with() -> None:
    config = {"optimizer": {"lr": 0.001}, "model": {"dropout": 0.3}}
    assert mismatches(config, {"optimizer.lr": 1e-3, "model.dropout": 0.3}) == []
    assert mismatches(config, {"optimizer.lr": 3e-3}) == ["optimizer.lr=0.001 (wanted 0.003)"]
    assert mismatches(config, {"regularizer.l2": 1e-5}) == ["regularizer.l2=None (wanted 1e-05)"]


def finished_cell(directory: Path, lr: float, n_folds: int = 3) -> None:
    directory.mkdir(parents=True)
    report = {
        "n_folds": n_folds,
        "folds": [{"fold": k} for k in range(n_folds)],
        "train_config": {"optimizer": {"lr": lr}, "model": {"dropout": 0.3}, "regularizer": {"l2": 1e-5}},
    }
    (directory / "cv_report.json").write_text(json.dumps(report))


def test_a_finished_cell_is_read_back_and_one_of_another_recipe_refused(tmp_path) -> None:
    cfg = compose_task("optimizer_study", [f"output_dir={tmp_path}", "regularizers.l2.l2=1e-5"])
    finished_cell(tmp_path / "same", 1e-3)
    same = Cell("adam", 1e-3, "l2", 0.3, tmp_path / "same")
    assert run_cell(cfg, same, [0, 1, 2])["n_folds"] == 3  # no cv run
    # the lr search's fold 0 read back from a cell the grid completed: only that fold, no cv run
    assert [f["fold"] for f in run_cell(cfg, same, [0])["folds"]] == [0]
    finished_cell(tmp_path / "stale", 3e-3)  # the lr chosen before the grid changed
    with pytest.raises(ConfigError, match=r"another recipe \(optimizer.lr=0.003"):
        run_cell(cfg, Cell("adam", 1e-3, "l2", 0.3, tmp_path / "stale"), [0, 1, 2])
    finished_cell(tmp_path / "other_k", 1e-3, n_folds=5)
    with pytest.raises(ConfigError, match="n_folds=5"):
        run_cell(cfg, Cell("adam", 1e-3, "l2", 0.3, tmp_path / "other_k"), [0, 1, 2])


def test_report_and_plots_from_a_result_alone(tmp_path) -> None:
    stat = {"mean": 0.8, "sd": 0.02}
    nan = {"mean": math.nan, "sd": math.nan}
    diff = {"mean": 0.05, "min": 0.0, "max": 0.1, "low": 0.01, "high": 0.09, "verdict": "real"}
    cell = {
        "name": "adam/none/dropout0.3",
        "optimizer": "adam",
        "lr": 1e-3,
        "regularizer": "none",
        "dropout": 0.3,
        "summary": {k: stat for k in ("acc", "f1_macro", "fit_seconds")}
        | {"val_loss": nan, "epochs_to_best": stat},
        "norms": {k: stat for k in ("l1", "l2", "head_l1", "head_l2", "backbone_l1", "backbone_l2")},
        "curves": [{"train_loss": {"0": 1.2, "1": 0.9}, "val_loss_curve": {"0": 1.1, "1": 1.0}}],
    }
    result = {
        "optimizers": ["adam"],
        "regularizers": ["none", "l2"],
        "base_dropout": 0.3,
        "n_folds": 3,
        "folds": [0, 1, 2],
        "common": [],
        "level": 0.95,
        "n_val": 40,
        "n_train": 80,
        "command": "python -m skinlesion.optimizer_study",
        "lr_search": {
            "adam": {
                "chosen": 1e-3,
                "runs": {
                    "0.0003": {"f1_macro": stat, "val_loss": stat},
                    "0.001": {"f1_macro": stat, "val_loss": stat},
                },
            }
        },
        "cells": [cell],
        "comparisons": [
            {
                "kind": "regularizer",
                "within": "adam",
                "a": "x",
                "b": "y",
                "diff": {"f1_macro": diff, "acc": diff},
            }
        ],
    }
    text = markdown(result)
    assert "| adam | 0.001 | 0.800 ± 0.020 | 0.800 ± 0.020 | **yes** |" in text
    assert "| 0.001 | 0.800 ± 0.020 | 0.800 ± 0.020 | — |" in text  # no val loss logged: a dash
    assert "+0.050 [+0.010, +0.090] | real" in text
    assert "on folds [0, 1, 2]." in text  # an old result without lr_folds searched on the grid's folds
    assert "on fold 0 only (sd 0: one fold)." in markdown(result | {"lr_folds": [0]})
    assert plot_lr_search(result, tmp_path / "lr.png").stat().st_size > 0
    assert plot_learning_curves(result, tmp_path / "curves.png").stat().st_size > 0
