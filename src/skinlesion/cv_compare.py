"""``python -m skinlesion.cv_compare runs=[a,b,...]`` (``make cv-compare``): compare CV runs fold by fold.

Two configurations cross-validated on the same folds (same manifest, seed and ``n_folds``) differ
by the paired fold differences, not by their means' overlap: folds vary far more than models do.
The interval on the mean difference uses the corrected resampled t-test of Nadeau & Bengio (2003),
whose variance factor ``1/k + n_val/n_train`` accounts for the training sets overlapping across
folds (the plain paired t-test is too confident). The out-of-fold **ensemble** of all runs (the
mean of their calibrated probabilities, image by image) is scored on the same folds, so whether
two backbones are worth running together is measured before anyone trains both on everything.

It reads only the runs' artefacts (``cv_report.json``, ``fold<k>/eval-val/predictions.csv``).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import ConfigError, DataError
from skinlesion.core.task import command
from skinlesion.reports.metrics import accuracy_f1
from skinlesion.reports.paired import paired_difference

log = logging.getLogger(__name__)


@dataclass
class FoldPredictions:
    """One fold's val predictions: image paths (sorted), true class indices, probabilities."""

    paths: list[str]
    targets: np.ndarray
    probs: np.ndarray
    n_train: int


def read_fold(path: Path, class_names: list[str], n_train: int) -> FoldPredictions:
    if not path.is_file():
        raise DataError(f"{path} not found: is this a finished `make cv` run?")
    with open(path, newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["path"])
    columns = [f"p_{c}" for c in class_names]
    try:
        targets = np.array([class_names.index(r["true"]) for r in rows])
        probs = np.array([[float(r[c]) for c in columns] for r in rows])
    except (KeyError, ValueError) as e:
        raise DataError(f"{path}: not a predictions file of classes {class_names} ({e})") from e
    return FoldPredictions([r["path"] for r in rows], targets, probs, n_train)


def read_run(run: Path) -> tuple[dict, dict[int, FoldPredictions]]:
    report_path = run / "cv_report.json"
    if not report_path.is_file():
        raise DataError(f"{report_path} not found: runs= takes `make cv` output directories")
    report = json.loads(report_path.read_text())
    folds = {
        f["fold"]: read_fold(
            run / f"fold{f['fold']}" / "eval-val" / "predictions.csv", report["class_names"], f["n_train"]
        )
        for f in report["folds"]
    }
    return report, folds


def check_same_folds(names: list[str], runs: list[dict[int, FoldPredictions]], reports: list[dict]) -> None:
    """Paired comparison needs the very same images in every fold of every run."""
    first = runs[0]
    for name, run, report in zip(names[1:], runs[1:], reports[1:], strict=True):
        if report["class_names"] != reports[0]["class_names"]:
            raise DataError(f"{name}: classes {report['class_names']} differ from {names[0]}'s")
        if sorted(run) != sorted(first):
            raise DataError(f"{name} ran folds {sorted(run)}, {names[0]} ran {sorted(first)}: not paired")
        for k in first:
            if run[k].paths != first[k].paths or not np.array_equal(run[k].targets, first[k].targets):
                raise DataError(
                    f"fold {k} of {name} holds other images than fold {k} of {names[0]} "
                    "(another manifest, seed or n_folds): the runs cannot be compared fold by fold"
                )


def sample_sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarise(name: str, folds: dict[int, FoldPredictions], n_classes: int) -> dict:
    per_fold = {
        k: accuracy_f1(f.targets, f.probs.argmax(1), range(n_classes)) for k, f in sorted(folds.items())
    }
    accs = np.array([s["acc"] for s in per_fold.values()])
    f1s = np.array([s["f1_macro"] for s in per_fold.values()])
    pooled = accuracy_f1(
        np.concatenate([f.targets for f in folds.values()]),
        np.concatenate([f.probs for f in folds.values()]).argmax(1),
        range(n_classes),
    )
    return {
        "name": name,
        "fold_acc": accs.tolist(),
        "fold_f1_macro": f1s.tolist(),
        "acc_mean": float(accs.mean()),
        "acc_sd": sample_sd(accs),
        "f1_macro_mean": float(f1s.mean()),
        "f1_macro_sd": sample_sd(f1s),
        "oof_acc": pooled["acc"],
        "oof_f1_macro": pooled["f1_macro"],
    }


def compare(cfg: DictConfig) -> dict:
    runs = [Path(r) for r in cfg.runs or []]
    if len(runs) < 2:
        raise ConfigError(
            "runs= needs at least two `make cv` directories, e.g. runs=[outputs/cv/A,outputs/cv/B]"
        )
    names = list(cfg.names) if cfg.names else [f"{r.parent.name}/{r.name}" for r in runs]
    if len(names) != len(runs):
        raise ConfigError(f"names= has {len(names)} entries for {len(runs)} runs")
    reports, folds = zip(*(read_run(r) for r in runs), strict=True)
    check_same_folds(names, list(folds), list(reports))
    n_classes = len(reports[0]["class_names"])
    ensemble = {
        k: FoldPredictions(f.paths, f.targets, np.mean([run[k].probs for run in folds], axis=0), f.n_train)
        for k, f in folds[0].items()
    }
    rows = [summarise(n, f, n_classes) for n, f in zip(names, folds, strict=True)]
    rows.append(summarise("ensemble of all", ensemble, n_classes))
    n_val = float(np.mean([len(f.paths) for f in folds[0].values()]))
    n_train = float(np.mean([f.n_train for f in folds[0].values()]))
    base = np.array(rows[0]["fold_acc"])
    for row in rows[1:]:
        row["diff_acc"] = paired_difference(np.array(row["fold_acc"]) - base, n_val, n_train, cfg.level)
    result = {
        "runs": [str(r) for r in runs],
        "models": [r["model"] for r in reports],
        "level": cfg.level,
        "rows": rows,
    }
    out = Path(cfg.output_dir)
    write_json(out / "cv_compare.json", result)
    text = markdown(result, names)
    (out / "cv_compare.md").write_text(text)
    print(text)
    return result


def markdown(result: dict, names: list[str]) -> str:
    pct = round(100 * result["level"])
    lines = [
        f"# CV comparison against {names[0]}",
        "",
        *(f"- {n}: `{r}` ({m})" for n, r, m in zip(names, result["runs"], result["models"], strict=True)),
        "",
        f"| run | fold accuracies | accuracy mean ± sd | macro-F1 mean ± sd | OOF acc | OOF macro-F1 | "
        f"Δ acc vs first (mean, min – max) | {pct} % CI of Δ (corrected t) |",
        "|---" * 8 + "|",
    ]
    for row in result["rows"]:
        d = row.get("diff_acc")
        delta = "—" if d is None else f"{d['mean']:+.3f} ({d['min']:+.3f} – {d['max']:+.3f})"
        ci = "—" if d is None else f"{d['low']:+.3f} – {d['high']:+.3f}"
        lines.append(
            f"| {row['name']} | {' '.join(f'{a:.3f}' for a in row['fold_acc'])} | "
            f"{row['acc_mean']:.3f} ± {row['acc_sd']:.3f} | "
            f"{row['f1_macro_mean']:.3f} ± {row['f1_macro_sd']:.3f} | "
            f"{row['oof_acc']:.3f} | {row['oof_f1_macro']:.3f} | {delta} | {ci} |"
        )
    lines += [
        "",
        "Δ: paired differences of fold accuracy. The interval uses the corrected resampled t-test "
        "(Nadeau & Bengio, 2003): an interval that contains 0 means the folds cannot tell the runs apart. "
        "The ensemble averages every run's calibrated probabilities on each val fold.",
        "",
    ]
    return "\n".join(lines)


main = command(compare, "cv_compare")


if __name__ == "__main__":
    main()
