"""The cross-validation report: per-fold scores, mean ± sd, pooled out-of-fold figures.

The spread across folds is the honest uncertainty of a k-fold estimate, so it is stated next to
every mean; the sd is the sample standard deviation (ddof = 1) over the folds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skinlesion.reports.metrics import fmt_ci, fmt_num


def fold_metric_names(class_names: Sequence[str]) -> list[str]:
    return ["acc", "f1_macro", "kappa", *(f"recall/{c}" for c in class_names)]


def mean_sd(summary: dict, key: str) -> str:
    """``0.912 ± 0.021`` for one metric of :func:`summarise_folds`."""
    return f"{summary[key]['mean']:.3f} ± {summary[key]['sd']:.3f}"


def summarise_folds(folds: Sequence[dict], class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean, sd (ddof = 1; 0 for a single fold), min and max over the folds of every fold metric."""
    out = {}
    for name in fold_metric_names(class_names):
        values = np.array([f[name] for f in folds], dtype=float)
        out[name] = {
            "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return out


def cv_markdown(report: dict) -> str:
    names = report["class_names"]
    metrics = fold_metric_names(names)
    headers = ["accuracy", "macro-F1", "κ", *(f"recall {c}" for c in names)]
    lines = [
        f"# Cross-validation: {report['model']}, {report['n_folds']} folds",
        "",
        f"Stratified, grouped {report['n_folds']}-fold cross-validation over the manifest's train + val "
        f"({report['n_images']} images in folds). A duplicate group never straddles two folds; "
        f"{report['n_conflict_images']} images of label-conflict groups train in every fold and are never "
        "scored. The test split is not touched.",
        "",
        "| fold | train | val | " + " | ".join(headers) + " | epochs | fit s |",
        "|---" * (len(headers) + 5) + "|",
    ]
    for f in report["folds"]:
        cells = [str(f["fold"]), str(f["n_train"]), str(f["n_val"]), *(fmt_num(f[m]) for m in metrics)]
        cells += [str(f["epochs"]), f"{f['fit_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    s = report["summary"]
    cells = " | ".join(f"**{mean_sd(s, m)}**" for m in metrics)
    lines += [f"| mean ± sd | | | {cells} | | |", ""]
    lines.append("sd: sample standard deviation over the folds.")
    if len(report["folds"]) < report["n_folds"]:
        lines.append(f"Only {len(report['folds'])} of {report['n_folds']} folds were run.")
    oof = report.get("oof")
    if oof:
        lines += [
            "",
            f"Pooled out-of-fold predictions ({oof['n']} images): accuracy {fmt_num(oof['acc'])} "
            f"(95 % CI {fmt_ci(oof['acc_ci'])}), macro-F1 {fmt_num(oof['f1_macro'])} "
            f"(95 % CI {fmt_ci(oof['f1_macro_ci'])}), κ {fmt_num(oof['kappa'])}; bootstrap over duplicate "
            "groups, which ignores the variation between fold models. Confusion matrix etc. in `oof/`.",
        ]
    lines += [
        "",
        "Caveats: each fold keeps its best epoch by macro-F1 on its own val fold, so the fold scores lean "
        "optimistic; each fold's temperature is fitted on that same fold, so calibration figures in "
        "`fold*/eval-val/` are in-sample.",
        "",
        f"Regenerate: `{report['command']}`.",
        "",
        "![per-fold scores](cv_folds.png)",
        "",
    ]
    return "\n".join(lines)
