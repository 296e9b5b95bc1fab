"""``python -m skinlesion.cv`` (``make cv``): grouped, stratified k-fold cross-validation.

Each fold is an ordinary ``train`` run with ``data.fold=k`` (the DataModule re-splits the
manifest's train + val by the split's own group rules, ``prepare.fold_rows``) into
``<cv dir>/fold<k>/``, with its own checkpoints (kept for a fold ensemble), logs and
``eval-val/`` artefacts; the test split is never evaluated. The CV directory gets
``cv_report.md``/``.json``, ``cv_folds.png`` and ``oof/`` (pooled out-of-fold evaluation).
A fold that already has its checkpoint is not trained again, so
``python -m skinlesion.cv hydra.run.dir=<cv dir>`` resumes an interrupted run.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import ConfigError
from skinlesion.core.task import command
from skinlesion.data.datamodule import ImageListDataset, SkinLesionDataModule
from skinlesion.data.manifest import read_manifest
from skinlesion.data.splits import assign_folds
from skinlesion.inference.loading import load_classifier, test_predictions
from skinlesion.models.conformal import calibration_sizes, cross_fit_membership
from skinlesion.reports.coverage import calibration_markdown
from skinlesion.reports.evaluation import write_evaluation
from skinlesion.reports.folds import (
    cv_markdown,
    fold_metric_names,
    mean_sd,
    summarise_folds,
    training_signature,
)
from skinlesion.reports.plots import plot_cv_folds
from skinlesion.training.fit import build_datamodule, train

log = logging.getLogger(__name__)
OOF_SET_KEYS = ("set_level", "set_coverage", "set_min_class_coverage", "set_floor_chance", "set_mean_size")


def fold_config(cfg: DictConfig, fold: int) -> DictConfig:
    """The ``train`` config of one fold: its data fold, its own run directory, no test.

    A fold interrupted mid-training resumes from its own ``last.ckpt``.
    """
    fold_cfg = copy.deepcopy(cfg)
    fold_dir = Path(cfg.paths.output_dir) / f"fold{fold}"
    last = fold_dir / "checkpoints" / "last.ckpt"
    with open_dict(fold_cfg):
        fold_cfg.paths.output_dir = str(fold_dir)
        fold_cfg.data.fold = fold
        fold_cfg.data.n_folds = cfg.n_folds
        fold_cfg.evaluate = False
        fold_cfg.ckpt_path = str(last) if last.is_file() else None
    return fold_cfg


def run_fold(cfg: DictConfig, fold: int) -> tuple[dict, dict]:
    """Train one fold (unless its checkpoint exists) and score its best checkpoint on its val fold.

    Returns the fold's row for the report and its predictions for the pooled out-of-fold view.
    """
    fold_cfg = fold_config(cfg, fold)
    fold_dir = Path(fold_cfg.paths.output_dir)
    best = fold_dir / "checkpoints" / "best.ckpt"
    if not (best.is_file() and (fold_dir / "metrics.json").is_file()):
        log.info("fold %d/%d -> %s", fold + 1, cfg.n_folds, fold_dir)
        train(fold_cfg)  # not the main path: outputs/latest stays where it is
    if not best.is_file():
        raise ConfigError(f"fold {fold} left no {best}: cv needs callbacks.model_checkpoint (best by val)")
    summary = json.loads((fold_dir / "metrics.json").read_text())
    dm = build_datamodule(fold_cfg)
    dm.prepare_data()
    dm.setup("validate")
    val = dm.datasets["val"]
    model = load_classifier(best)
    probs, targets = test_predictions(model, val, accelerator=cfg.trainer.accelerator)
    logits = model.test_outputs["logits"].numpy()
    csv_log = fold_dir / "csv" / "metrics.csv"
    m = write_evaluation(
        probs,
        targets,
        val,
        dm.class_names,
        fold_dir / "eval-val",
        "val",
        csv_log if csv_log.is_file() else None,
        logits=logits,
        temperature=float(model.temperature),
    )
    row = {name: m[f"val/{name}"] for name in fold_metric_names(dm.class_names)}
    row |= {
        "fold": fold,
        "n_train": len(dm.datasets["train"]),
        "n_val": len(val),
        "epochs": summary.get("epochs"),
        "fit_seconds": summary.get("fit_seconds", 0.0),
        "temperature": float(model.temperature),
        "checkpoint": str(best),
    }
    predictions = {
        "items": val.items,
        "groups": val.groups,
        "sources": val.sources,
        "probs": probs,
        "logits": logits,
        "targets": targets,
        "root": dm.root,
        "transform": val.transform,
        "class_names": dm.class_names,
        "pool": fold_pool_sizes(dm, cfg.n_folds),
    }
    return row, predictions


def fold_pool_sizes(dm: SkinLesionDataModule, n_folds: int) -> tuple[int, int]:
    """(images scored in some fold, images of label-conflict groups that only ever train); photos
    outside the classes (other rashes, ``data=multisource``) are in no fold's scores, so not counted."""
    pool = [r for r in read_manifest(dm.manifest_path) if r["split"] in ("train", "val")]
    folds = assign_folds(pool, n_folds, dm.params.split.seed)  # over the whole pool, as fold_rows does
    scored = [r for r in pool if r["label"] in set(dm.class_names)]
    conflicts = sum(folds[r["group"]] is None for r in scored)
    return len(scored) - conflicts, conflicts


def oof_sets(
    cfg: DictConfig, probs: np.ndarray, targets: np.ndarray, sizes: list[int], n_classes: int
) -> dict:
    """Out-of-fold prediction sets: each fold's photos get thresholds fitted on the other folds'
    (its own checkpoint's were fitted on the very photos it is scored on). Nothing with one fold."""
    level = float(cfg.get("abstain", {}).get("set_coverage") or 0.0)
    if not level or len(sizes) < 2:
        return {}
    folds = np.repeat(np.arange(len(sizes)), sizes)
    return {
        "prediction_sets": cross_fit_membership(probs, targets, folds, n_classes, level),
        "set_level": level,
    }


def write_calibration_sizes(
    out_dir: Path,
    probs: np.ndarray,
    targets: np.ndarray,
    class_names: list[str],
    level: float,
    split: DictConfig,
) -> None:
    """``oof/calibration_sizes.md``/``.json``: the sets' size against the number of calibration
    photos per class, from the out-of-fold scores (``models.conformal.calibration_sizes``)."""
    draws = 1000
    rows = calibration_sizes(probs, targets, len(class_names), level, float(split.train + split.val), draws)
    write_json(out_dir / "calibration_sizes.json", {"level": level, "draws": draws, "rows": rows})
    (out_dir / "calibration_sizes.md").write_text(calibration_markdown(rows, class_names, level, draws))


def command_line() -> str:
    if HydraConfig.initialized():
        return " ".join(["python -m skinlesion.cv", *HydraConfig.get().overrides.task])
    return "python -m skinlesion.cv"


def cross_validate(cfg: DictConfig) -> dict:
    n_folds = int(cfg.n_folds)
    folds = list(cfg.folds) if cfg.get("folds") is not None else list(range(n_folds))
    if n_folds < 2 or not folds or any(not 0 <= f < n_folds for f in folds):
        raise ConfigError(f"need n_folds >= 2 and folds within 0..{n_folds - 1}, got {n_folds} and {folds}")
    out = Path(cfg.paths.output_dir)
    rows, preds = zip(*(run_fold(cfg, f) for f in folds), strict=True)
    class_names = preds[0]["class_names"]
    pooled = ImageListDataset(
        preds[0]["root"],
        [item for p in preds for item in p["items"]],
        preds[0]["transform"],
        groups=[g for p in preds for g in p["groups"]],
        sources=[s for p in preds for s in p["sources"]],  # out-of-fold scores per source too
    )
    probs = np.concatenate([p["probs"] for p in preds])
    targets = np.concatenate([p["targets"] for p in preds])
    sets = oof_sets(cfg, probs, targets, [len(p["targets"]) for p in preds], len(class_names))
    oof = write_evaluation(
        probs,
        targets,
        pooled,
        class_names,
        out / "oof",
        "oof",
        logits=np.concatenate([p["logits"] for p in preds]),
        **sets,
    )
    if sets:
        write_calibration_sizes(out / "oof", probs, targets, class_names, sets["set_level"], cfg.data.split)
    report = {
        "model": cfg.model.backbone,
        "n_folds": n_folds,
        "class_names": class_names,
        "n_images": preds[0]["pool"][0],
        "n_conflict_images": preds[0]["pool"][1],
        "folds": list(rows),
        "summary": summarise_folds(rows, class_names),
        "oof": {k: oof[f"oof/{k}"] for k in ("n", "acc", "acc_ci", "f1_macro", "f1_macro_ci", "kappa")}
        | {k: oof[f"oof/{k}"] for k in OOF_SET_KEYS if f"oof/{k}" in oof},
        "checkpoints": [r["checkpoint"] for r in rows],
        "command": command_line(),
        "config": {"seed": cfg.seed, "image_size": cfg.data.image_size, "max_epochs": cfg.trainer.max_epochs},
        "train_config": training_signature(cfg),
    }
    write_json(out / "cv_report.json", report)
    (out / "cv_report.md").write_text(cv_markdown(report))
    plot_cv_folds(
        rows,
        fold_metric_names(class_names),
        out / "cv_folds.png",
        title=f"{report['model']}: {len(rows)} of {n_folds} folds",
    )
    s = report["summary"]
    print(
        f"cv {report['model']} ({len(rows)}/{n_folds} folds): acc {mean_sd(s, 'acc')}  "
        f"macro-F1 {mean_sd(s, 'f1_macro')}  -> {out / 'cv_report.md'}"
    )
    return report


main = command(cross_validate, "cv")


if __name__ == "__main__":
    main()
