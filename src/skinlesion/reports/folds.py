"""The cross-validation report: per-fold scores, mean ± sd, pooled out-of-fold figures.

The spread across folds is the honest uncertainty of a k-fold estimate, so it is stated next to
every mean; the sd is the sample standard deviation (ddof = 1) over the folds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

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


DISPLAY_ONLY = ("callbacks.progress_bar", "trainer.enable_model_summary", "trainer.enable_progress_bar")


def _container(node):
    if not OmegaConf.is_config(node):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # a saved config whose hydra-only interpolations cannot resolve offline
        return OmegaConf.to_container(node, resolve=False)


def training_signature(cfg: DictConfig) -> dict:
    """What decides how a model is trained (not where it is written or how progress is shown).

    Stored in ``cv_report.json``, so that a model card quotes a CV run only when it trained the
    way the card's run did."""
    callbacks = cfg.get("callbacks") or {}
    return {
        "seed": cfg.seed,
        "model": _container(cfg.model),
        "data": {k: _container(cfg.data.get(k)) for k in ("image_size", "augment", "balance", "batch_size")},
        "optimizer": _container(cfg.get("optimizer")),
        "scheduler": _container(cfg.get("scheduler")),
        "regularizer": _container(cfg.get("regularizer")),
        "max_epochs": cfg.trainer.max_epochs,
        "callbacks": sorted(
            k for k, v in callbacks.items() if v is not None and f"callbacks.{k}" not in DISPLAY_ONLY
        ),
    }


def _legacy_match(report: dict, run_cfg: DictConfig) -> bool:
    """Reports written before ``train_config`` existed: the recorded keys and the CV command's overrides."""
    recorded = report.get("config", {})
    pairs = {"seed": "seed", "image_size": "data.image_size", "max_epochs": "trainer.max_epochs"}
    if any(OmegaConf.select(run_cfg, key) != recorded[k] for k, key in pairs.items() if k in recorded):
        return False
    for override in report.get("command", "").split()[3:]:
        key, _, value = override.partition("=")
        if key.startswith(("hydra.", "hydra/")) or key in DISPLAY_ONLY:
            continue
        if key == "model" and value == run_cfg.model.backbone:
            continue
        current = OmegaConf.select(run_cfg, key.lstrip("+~"), default=None)
        if OmegaConf.is_config(current) or str(current) != str(OmegaConf.create(f"v: {value}").v):
            return False  # a config group or a value the run does not share
    return True


def cv_matches_run(report: dict, run_cfg: DictConfig) -> bool:
    """Did this CV train its folds the way ``run_cfg`` trained its model?"""
    if report.get("model") != run_cfg.model.backbone:
        return False
    if "train_config" in report:
        return report["train_config"] == training_signature(run_cfg)
    return _legacy_match(report, run_cfg)
