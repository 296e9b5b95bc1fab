"""``python -m skinlesion.evaluate``: score a checkpoint on a split or any class-per-folder folder.

Writes ``metrics.json``, ``classification_report.md``, ``confusion_matrix.png``,
``misclassified.png``, ``roc_curves.png``, ``reliability_diagram.png``, ``predictions.csv`` and,
when the run's CSV log is there, ``training_curves.png``. Besides the point scores: bootstrap
intervals (an image and its duplicates resampled together), Cohen's κ, one-vs-rest ROC AUC, and ECE/NLL/Brier
before and after temperature scaling. ``train`` calls :func:`write_evaluation` on its best
checkpoint, so every run directory carries the same artefacts in ``<run>/eval/``.

A folder's files that duplicate (or crop) a file of the checkpoint's own data are left out of its
score; ``excluded.json`` names them with the evidence, ``metrics.json`` counts them.

``adapt_bn=true`` first re-estimates each model's batch-norm statistics on the images being scored
(test-time adaptation to their source, labels unused: :mod:`skinlesion.models.bn_adapt`);
``metrics.json`` records whether it did.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import DataError
from skinlesion.core.task import command
from skinlesion.data.datamodule import ImageListDataset, folder_items
from skinlesion.data.overlap import duplicates_of_data
from skinlesion.data.transforms import eval_transforms
from skinlesion.inference.loading import (
    as_model_sees,
    check_ensemble,
    checkpoint_datamodule,
    default_checkpoint,
    ensemble_members,
    load_classifier,
    run_dir_of,
    test_predictions,
)
from skinlesion.inference.torch_backend import abstention_mask, prediction_sets
from skinlesion.models.bn_adapt import adapt_batchnorm
from skinlesion.reports.evaluation import summary_line, write_evaluation
from skinlesion.reports.metrics import (
    Bootstrap,
)

log = logging.getLogger(__name__)


def training_duplicates(
    checkpoints: list[Path], models: list, root: str | None, folder: Path, items: list[tuple[str, int]]
) -> dict[str, dict]:
    """Files of ``folder`` that duplicate (or crop) a file of a checkpoint's own data: they are left
    out of its score (see :func:`skinlesion.data.overlap.duplicates_of_data`)."""
    found: dict[str, dict] = {}
    seen = set()
    for ckpt, model in zip(checkpoints, models, strict=True):
        dm = checkpoint_datamodule(ckpt, model, root)
        if dm.manifest_path in seen:
            continue
        seen.add(dm.manifest_path)
        for path, twin in duplicates_of_data(dm, folder, [p for p, _ in items]).items():
            found.setdefault(path, twin)
    return found


def twin_entry(path: str, twin: dict) -> dict:
    reason = f"duplicate of the checkpoint's data: {twin['twin']} ({twin['split']} split; {twin['evidence']})"
    return {"path": path, "reason": reason}


def adaptation_device(accelerator: str) -> torch.device:
    """Where the adaptation pass runs: the GPU when the test loop will use one, else the CPU."""
    wants_gpu = accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def evaluate(cfg: DictConfig) -> dict:
    torch.set_float32_matmul_precision("high")
    members = ensemble_members(cfg)
    ckpt = members[0] if members else default_checkpoint(cfg)
    models = [load_classifier(c) for c in members] if members else [load_classifier(ckpt)]
    check_ensemble(models)
    model = models[0]
    run_dir = run_dir_of(ckpt)
    twins: dict[str, dict] = {}
    if cfg.folder:
        folder = Path(cfg.folder)
        items, ignored = folder_items(folder, model.class_names)
        if cfg.get("exclude_training_duplicates", True):
            twins = training_duplicates(members or [ckpt], models, cfg.data.root, folder, items)
        items = [item for item in items if item[0] not in twins]
        pre = model.preprocessing
        dataset = ImageListDataset(folder, items, eval_transforms(pre["image_size"], pre["mean"], pre["std"]))
        excluded = ignored + [twin_entry(p, t) for p, t in twins.items()] + dataset.drop_unreadable()
        prefix, name = "folder", folder.resolve().name
    else:
        dm = checkpoint_datamodule(ckpt, model, cfg.data.root)
        if cfg.split not in dm.datasets:
            raise DataError(
                f"split must be one of {list(dm.datasets)} (or use folder=...), got {cfg.split!r}"
            )
        dataset, excluded, prefix, name = dm.datasets[cfg.split], [], cfg.split, cfg.split
    if len(dataset) == 0 and twins:
        raise DataError(
            f"nothing to evaluate: every readable image of {cfg.folder} duplicates the checkpoint's own "
            f"data ({len(twins)} files); exclude_training_duplicates=false scores them anyway"
        )
    if len(dataset) == 0:
        raise DataError(f"nothing to evaluate: no readable images in {cfg.folder or cfg.split}")
    adapt_bn = bool(cfg.get("adapt_bn", False))
    suffix = "-adapt_bn" if adapt_bn else ""  # never over the run's own (unadapted) evaluation
    if members:  # beside the members' runs (a CV directory): ensemble-eval[-<split or folder>]
        default_out = run_dir.parent / ("ensemble-eval" if name == "test" else f"ensemble-eval-{name}")
    else:
        default_out = run_dir / ("eval" if name == "test" else f"eval-{name}")
    out_dir = Path(cfg.output_dir) if cfg.output_dir else default_out.with_name(default_out.name + suffix)
    csv_log = run_dir / "csv" / "metrics.csv"
    if adapt_bn:  # each member on the images as it sees them; the labels are not used
        device = adaptation_device(cfg.accelerator)
        for m in models:
            loader = DataLoader(as_model_sees(dataset, m), batch_size=cfg.batch_size)
            adapt_batchnorm(m, loader, device)
    # an ensemble outputs the mean of its members' calibrated probabilities (each with its TTA)
    runs = [test_predictions(m, as_model_sees(dataset, m), cfg.batch_size, cfg.accelerator) for m in models]
    probs, targets = np.mean([p for p, _ in runs], axis=0), runs[0][1]
    if members:
        extra = {}  # calibration of the mean as output; abstention gates are per member
    else:
        loader = DataLoader(dataset, batch_size=cfg.batch_size)
        extra = {
            "logits": model.test_outputs["logits"].numpy(),
            "temperature": float(model.temperature),
            "abstained": abstention_mask(model, probs, loader),
        } | prediction_sets(model, probs)
    metrics = write_evaluation(
        probs,
        targets,
        dataset,
        model.class_names,
        out_dir,
        prefix,
        csv_log if csv_log.is_file() and not members else None,
        bootstrap=Bootstrap(**cfg.bootstrap),
        ece_bins=cfg.ece_bins,
        **extra,
    )
    metrics[f"{prefix}/adapt_bn"] = adapt_bn
    if members:
        metrics[f"{prefix}/ensemble_members"] = [str(c) for c in members]
    if cfg.folder:
        metrics[f"{prefix}/n_duplicates_of_training_data"] = len(twins)
        metrics[f"{prefix}/duplicates_of_training_data_by_split"] = dict(
            sorted(Counter(t["split"] for t in twins.values()).items())
        )
        print(
            f"left out {len(twins)} files of {cfg.folder} that duplicate the checkpoint's own data "
            f"(listed in {out_dir / 'excluded.json'})"
        )
    write_json(out_dir / "metrics.json", metrics)  # write_evaluation's, with the keys added here
    if excluded:
        write_json(out_dir / "excluded.json", excluded)
        log.warning("%d files left out (listed in %s)", len(excluded), out_dir / "excluded.json")
    what = f"an ensemble of {len(members)} checkpoints" if members else str(ckpt)
    log.info("evaluation of %s on %s written to %s", what, name, out_dir)
    print(summary_line(metrics, prefix))
    return metrics


main = command(evaluate, "evaluate")


if __name__ == "__main__":
    main()
