"""The leakage audit's figures: twins across train and test, per-protocol summaries, the paired
difference and what the table says about it."""

from __future__ import annotations

import pytest

from skinlesion.leakage_audit import differences, markdown, summarise, twins_in_train


def row(path: str, sha: str, group: str, split: str, label: str = "Measles") -> dict[str, str]:
    return {"path": path, "sha256": sha, "label": label, "group": group, "split": split}


def test_twins_in_train_counts_exact_copies_and_group_members():
    rows = [
        row("a", "s1", "g1", "train"),
        row("a_copy", "s1", "g1", "test"),  # exact copy in train
        row("b", "s2", "g2", "train"),
        row("b_near", "s3", "g2", "test"),  # near duplicate: same group, other bytes
        row("c", "s4", "g3", "test"),  # alone
        row("d", "s5", "g4", "val"),
        row("d_copy", "s5", "g4", "test"),  # its twin is in val, not train
        row("x", "s1", "g1", "test", label="Cowpox"),  # outside the classes: never tested
    ]
    counts = twins_in_train(rows, ["Measles"])
    assert counts == {"n_train": 2, "n_test": 4, "test_exact_in_train": 1, "test_group_in_train": 2}


def run(seed: int, acc: float, f1: float, twins: int = 0) -> dict:
    return {
        "seed": seed,
        "test/acc": acc,
        "test/f1_macro": f1,
        "n_train": 80,
        "n_test": 10,
        "test_exact_in_train": twins,
        "test_group_in_train": twins,
    }


def result(runs: dict[str, list[dict]]) -> dict:
    return {
        "seeds": [r["seed"] for r in runs["grouped"]],
        "common": [],
        "level": 0.95,
        "runs": runs,
        "summary": {p: summarise(rows) for p, rows in runs.items()},
        "difference": differences(runs, 0.95),
        "published": {"MonkeyNet": 0.9319},
    }


def test_summary_and_paired_difference_over_seeds():
    runs = {
        "random": [run(1, 0.9, 0.8, 3), run(2, 0.8, 0.7, 1), run(3, 0.85, 0.75, 2)],
        "grouped": [run(1, 0.85, 0.8), run(2, 0.8, 0.6), run(3, 0.8, 0.7)],
    }
    res = result(runs)
    s = res["summary"]["random"]
    assert s["acc"]["mean"] == pytest.approx(0.85) and s["acc"]["sd"] == pytest.approx(0.05)
    assert s["test_group_in_train"] == {"mean": 2.0, "min": 1, "max": 3}
    d = res["difference"]["acc"]
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.1 / 3)
    assert d["low"] < d["mean"] < d["high"]
    text = markdown(res)
    assert "| random | 3 | 0.850 ± 0.050 |" in text and "| grouped | 3 |" in text
    assert "includes 0: noise" in text and "A difference whose interval includes 0 is noise" in text
    assert "MonkeyNet 93.19%" in text


def test_one_seed_gives_no_interval_and_no_nan():
    res = result({"random": [run(1, 0.9, 0.8)], "grouped": [run(1, 0.8, 0.7)]})
    assert res["difference"]["acc"]["low"] is None
    assert "one seed: no interval" in markdown(res)
