"""Comparing CV runs fold by fold: paired differences, their corrected interval, the OOF ensemble."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from skinlesion.core.errors import ConfigError, DataError
from skinlesion.cv_compare import compare
from skinlesion.reports.paired import paired_difference

CLASSES = ["Chickenpox", "Measles", "Monkeypox", "Normal"]


def fake_cv_run(root: Path, probs_per_fold: list[np.ndarray], targets_per_fold: list[np.ndarray]) -> Path:
    """A `make cv` directory holding only what cv_compare reads: the report and each fold's predictions."""
    folds = []
    for k, (probs, targets) in enumerate(zip(probs_per_fold, targets_per_fold, strict=True)):
        out = root / f"fold{k}" / "eval-val"
        out.mkdir(parents=True)
        with open(out / "predictions.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "true", "pred", *[f"p_{c}" for c in CLASSES]])
            for i, (p, t) in enumerate(zip(probs, targets, strict=True)):
                w.writerow([f"{CLASSES[t]}/img{k}_{i:02d}.png", CLASSES[t], CLASSES[p.argmax()], *p])
        folds.append({"fold": k, "n_train": 4 * len(targets)})
    (root / "cv_report.json").write_text(
        json.dumps({"model": "fake", "class_names": CLASSES, "folds": folds})
    )
    return root


def one_hot(labels: np.ndarray, confidence: float = 0.7) -> np.ndarray:
    p = np.full((len(labels), 4), (1 - confidence) / 3)
    p[np.arange(len(labels)), labels] = confidence
    return p


@pytest.fixture
def two_runs(tmp_path):
    """Fold k of run A gets k + 1 images wrong, run B one fewer, more confidently."""
    rng = np.random.default_rng(0)
    targets = [rng.integers(0, 4, 20) for _ in range(3)]
    preds_a, preds_b = [], []
    for k, t in enumerate(targets):
        a, b = t.copy(), t.copy()
        a[: k + 1] = (t[: k + 1] + 1) % 4  # k + 1 errors
        b[:k] = (t[:k] + 1) % 4  # k errors
        preds_a.append(a)
        preds_b.append(b)
    run_a = fake_cv_run(tmp_path / "a", [one_hot(p) for p in preds_a], targets)
    run_b = fake_cv_run(tmp_path / "b", [one_hot(p, 0.9) for p in preds_b], targets)
    return run_a, run_b, targets


def test_paired_differences_and_ensemble(tmp_path, two_runs, compose_cfg):
    run_a, run_b, _ = two_runs
    cfg = compose_cfg(
        f"runs=[{run_a},{run_b}]", "names=[A,B]", f"output_dir={tmp_path / 'cmp'}", config_name="cv_compare"
    )
    result = compare(cfg)
    a, b, ens = result["rows"]
    assert a["fold_acc"] == pytest.approx([19 / 20, 18 / 20, 17 / 20])
    assert b["fold_acc"] == pytest.approx([1.0, 19 / 20, 18 / 20])
    assert b["diff_acc"]["mean"] == pytest.approx(0.05) and b["diff_acc"]["min"] == pytest.approx(
        b["diff_acc"]["max"]
    )
    assert a["oof_acc"] == pytest.approx(54 / 60)
    # B is more confident, so the mean of the two follows B wherever they disagree
    assert ens["fold_acc"] == pytest.approx(b["fold_acc"])
    text = (tmp_path / "cmp" / "cv_compare.md").read_text()
    assert "| B | 1.000 0.950 0.900 |" in text and "+0.050" in text
    assert json.loads((tmp_path / "cmp" / "cv_compare.json").read_text())["rows"][1]["name"] == "B"


def test_corrected_interval_is_wider_than_the_plain_paired_t():
    diffs = np.array([0.01, 0.03, -0.02, 0.04, 0.0])
    d = paired_difference(diffs, n_val=135, n_train=540, level=0.95)
    plain = stats.t.ppf(0.975, 4) * diffs.std(ddof=1) / np.sqrt(5)
    corrected = stats.t.ppf(0.975, 4) * diffs.std(ddof=1) * np.sqrt(1 / 5 + 135 / 540)
    assert d["mean"] == pytest.approx(0.012)
    assert d["high"] - d["mean"] == pytest.approx(corrected) and corrected > plain
    assert d["low"] < 0 < d["high"]  # these folds cannot tell the runs apart


def test_runs_on_other_folds_are_refused(tmp_path, two_runs, compose_cfg):
    run_a, _, targets = two_runs
    shuffled = fake_cv_run(tmp_path / "other", [one_hot(t) for t in targets[::-1]], targets[::-1])
    cfg = compose_cfg(
        f"runs=[{run_a},{shuffled}]", f"output_dir={tmp_path / 'cmp'}", config_name="cv_compare"
    )
    with pytest.raises(DataError, match="holds other images"):
        compare(cfg)
    with pytest.raises(ConfigError, match="at least two"):
        compare(compose_cfg(f"runs=[{run_a}]", config_name="cv_compare"))
    with pytest.raises(DataError, match=r"cv_report\.json not found"):
        compare(compose_cfg(f"runs=[{run_a},{tmp_path}]", config_name="cv_compare"))
