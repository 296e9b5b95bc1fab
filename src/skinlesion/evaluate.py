"""``python -m skinlesion.evaluate``: score a checkpoint on a split or any class-per-folder folder.

Writes ``metrics.json``, ``classification_report.md``, ``confusion_matrix.png``,
``misclassified.png``, ``roc_curves.png``, ``reliability_diagram.png``, ``predictions.csv`` and,
when the run's CSV log is there, ``training_curves.png``. Besides the point scores: bootstrap
intervals (an image and its duplicates resampled together), Cohen's κ, one-vs-rest ROC AUC, and ECE/NLL/Brier
before and after temperature scaling. ``train`` calls :func:`write_evaluation` on its best
checkpoint, so every run directory carries the same artefacts in ``<run>/eval/``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from torch.utils.data import DataLoader

from skinlesion.cli import run_task
from skinlesion.data.datamodule import ImageListDataset, SkinLesionDataModule, folder_items
from skinlesion.data.transforms import eval_transforms
from skinlesion.errors import CheckpointError, ConfigError, DataError
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.paths import CONF_DIR
from skinlesion.reports.calibration import (
    accuracy_coverage,
    calibration_metrics,
    reliability_bins,
    selective_metrics,
    softmax,
)
from skinlesion.reports.metrics import (
    DEFAULT_BOOTSTRAP,
    Bootstrap,
    abstention_metrics,
    classification_metrics,
    confusion_matrix,
    details_markdown,
    report_markdown,
    roc_one_vs_rest,
    uncertainty_metrics,
)
from skinlesion.reports.plots import (
    plot_accuracy_coverage,
    plot_confusion_matrix,
    plot_misclassified,
    plot_reliability,
    plot_roc_curves,
    plot_training_curves,
)
from skinlesion.runs import write_json

log = logging.getLogger(__name__)


def load_classifier(path: str | Path) -> SkinLesionClassifier:
    """Load a Lightning checkpoint without running pickled code (``weights_only=True``)."""
    return SkinLesionClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()


def run_dir_of(ckpt: Path) -> Path:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def test_predictions(model: SkinLesionClassifier, dataset, batch_size: int = 64, accelerator: str = "auto"):
    """Run the Lightning test loop once; returns (probs, targets) as NumPy arrays."""
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(model, dataloaders=DataLoader(dataset, batch_size=batch_size), verbose=False)
    return model.test_outputs["probs"].numpy(), model.test_outputs["targets"].numpy()


def write_evaluation(
    probs: np.ndarray,
    targets: np.ndarray,
    dataset: ImageListDataset,
    class_names: Sequence[str],
    out_dir: Path,
    prefix: str = "test",
    csv_log: Path | None = None,
    *,
    logits: np.ndarray | None = None,
    temperature: float | None = None,
    abstained: np.ndarray | None = None,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    ece_bins: int = 15,
) -> dict:
    """Metrics and every evaluation artefact for one set of predictions.

    ``probs`` are what the model outputs (temperature-scaled); with the raw ``logits`` calibration
    is also reported before scaling. The bootstrap resamples ``dataset.groups`` when it has them.
    ``abstained`` (a mask, from :func:`abstention_mask`) adds the abstention figures.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot write the evaluation to {out_dir}: {e.strerror or e}") from e
    metrics = classification_metrics(probs, targets, class_names, prefix)
    metrics |= uncertainty_metrics(probs, targets, class_names, prefix, dataset.groups, bootstrap)
    metrics |= calibration_metrics(probs, targets, prefix, logits, temperature, ece_bins)
    metrics |= selective_metrics(probs, targets, prefix)
    if abstained is not None:
        metrics |= abstention_metrics(probs, targets, abstained, class_names, prefix)
    write_json(out_dir / "metrics.json", metrics)
    title = f"Classification report ({prefix}, {len(targets)} images)"
    (out_dir / "classification_report.md").write_text(
        report_markdown(probs, targets, class_names, title)
        + "\n"
        + details_markdown(metrics, class_names, prefix)
    )
    preds = probs.argmax(1)
    cm = confusion_matrix(targets, preds, len(class_names))
    plot_confusion_matrix(cm, class_names, out_dir / "confusion_matrix.png", title=prefix)
    plot_roc_curves(roc_one_vs_rest(probs, targets), class_names, out_dir / "roc_curves.png", title=prefix)
    panels = [] if logits is None else [("raw softmax (T = 1)", softmax(logits), "_uncalibrated")]
    panels.append(("temperature-scaled" if logits is not None else "as output", probs, ""))
    plot_reliability(
        [(t, reliability_bins(p, targets, ece_bins), metrics[f"{prefix}/ece{k}"]) for t, p, k in panels],
        out_dir / "reliability_diagram.png",
    )
    plot_accuracy_coverage(
        *accuracy_coverage(probs, targets),
        out_dir / "accuracy_coverage.png",
        title=prefix,
        own_rule=(
            (1 - metrics[f"{prefix}/abstention_rate"], metrics[f"{prefix}/acc_non_abstained"])
            if abstained is not None and abstained.any()
            else None
        ),
    )
    wrong = np.nonzero(preds != targets)[0]
    wrong = wrong[np.argsort(-probs[wrong, preds[wrong]])]  # most confident mistakes first
    plot_misclassified(
        [dataset.raw(int(i)).permute(1, 2, 0).numpy() for i in wrong[:24]],
        [class_names[targets[i]] for i in wrong[:24]],
        [class_names[preds[i]] for i in wrong[:24]],
        [float(probs[i, preds[i]]) for i in wrong[:24]],
        out_dir / "misclassified.png",
    )
    with open(out_dir / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "true", "pred", *[f"p_{c}" for c in class_names]])
        for (path, _), t, p, row in zip(dataset.items, targets, preds, probs, strict=True):
            w.writerow([path, class_names[t], class_names[p], *[f"{v:.6f}" for v in row]])
    if csv_log is not None:
        plot_training_curves(csv_log, out_dir / "training_curves.png")
    return metrics


def abstention_mask(model: SkinLesionClassifier, probs: np.ndarray, loader=None) -> np.ndarray | None:
    """Which images the model declines to answer, by the gates fitted into the checkpoint.

    The same rule as ``inference.decision.decide``: out-of-distribution score above its threshold
    (computed from ``loader``, the images behind ``probs`` in order), or top probability below the
    confidence threshold. None when the checkpoint has no fitted gate (no abstention figures).
    """
    from skinlesion.models.inference import collect_outputs, ood_score, thresholds_of  # imports us

    gates = thresholds_of(model)
    if gates.confidence is None and gates.ood_score is None:
        return None
    abstained = np.zeros(len(probs), dtype=bool)
    if gates.ood_score is not None:
        if loader is None:
            raise ValueError("the out-of-distribution gate needs the images (loader=...)")
        device = model.temperature.device
        taps = [t.to(device) for t in collect_outputs(model, loader)["taps"]]
        abstained |= ood_score(model, taps).cpu().numpy() > gates.ood_score
    if gates.confidence is not None:
        abstained |= np.asarray(probs).max(1) < gates.confidence
    return abstained


def check_manifest(model: SkinLesionClassifier, manifest: Path) -> None:
    """Warn when the prepared data differs from the data the checkpoint was trained on."""
    expected = model.hparams.get("data_manifest_sha256")
    if not expected or not manifest.is_file():
        return
    actual = hashlib.sha256(manifest.read_bytes()).hexdigest()
    if actual != expected:
        log.warning(
            "the data under this checkpoint has changed: manifest %s has SHA-256 %s, the checkpoint "
            "was trained on %s. Scores are not comparable with the run's own.",
            manifest,
            actual[:12],
            expected[:12],
        )


def checkpoint_datamodule(
    ckpt: Path, model: SkinLesionClassifier, root: str | None = None
) -> SkinLesionDataModule:
    """The checkpoint's own data splits, set up (``root`` if the data moved); warns if the data changed."""
    overrides = {"root": root} if root else {}
    dm = SkinLesionDataModule.load_from_checkpoint(ckpt, weights_only=True, **overrides)
    if not dm.manifest_path.is_file():
        dm.prepare_data()
    check_manifest(model, dm.manifest_path)
    dm.setup("test")
    return dm


def split_files(dm: SkinLesionDataModule, split: str) -> list[Path]:
    return [dm.root / path for path, _ in dm.datasets[split].items]


def default_checkpoint(cfg: DictConfig) -> Path:
    """``ckpt_path``, else the best checkpoint of ``outputs/latest``, which must exist."""
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path)
    ckpt = Path(cfg.paths.output_root) / "latest/checkpoints/best.ckpt"
    if not ckpt.is_file():
        raise CheckpointError(
            f"no checkpoint given and {ckpt} does not exist; train first (make train) or pass ckpt_path=..."
        )
    return ckpt


def ensemble_members(cfg: DictConfig) -> list[Path] | None:
    """The checkpoints of an ensemble: ``ckpt_path=[a.ckpt,b.ckpt,...]`` or a CV directory (its folds'
    best checkpoints, from ``cv_report.json``); None for a single checkpoint."""
    spec = cfg.ckpt_path
    if isinstance(spec, ListConfig | list):
        members = [Path(p) for p in spec]
    elif spec and (Path(spec) / "cv_report.json").is_file():
        members = [Path(p) for p in json.loads((Path(spec) / "cv_report.json").read_text())["checkpoints"]]
    else:
        return None
    if not members:
        raise ConfigError("ckpt_path=[] names no checkpoint")
    return members


def check_ensemble(models: list[SkinLesionClassifier]) -> None:
    """Members must answer the same question (their inputs may differ: see :func:`as_model_sees`)."""
    first = models[0]
    if any(m.class_names != first.class_names for m in models):
        raise CheckpointError("ensemble members must share class names (and their order)")


def as_model_sees(dataset: ImageListDataset, model: SkinLesionClassifier) -> ImageListDataset:
    """The same images (and decoded cache) under ``model``'s own eval preprocessing, so that members
    with different backbones (normalisation, input size) can be averaged."""
    pre = model.preprocessing
    return dataset.with_transform(eval_transforms(pre["image_size"], pre["mean"], pre["std"]))


def evaluate(cfg: DictConfig) -> dict:
    members = ensemble_members(cfg)
    ckpt = members[0] if members else default_checkpoint(cfg)
    models = [load_classifier(c) for c in members] if members else [load_classifier(ckpt)]
    check_ensemble(models)
    model = models[0]
    run_dir = run_dir_of(ckpt)
    if cfg.folder:
        folder = Path(cfg.folder)
        items, ignored = folder_items(folder, model.class_names)
        pre = model.preprocessing
        dataset = ImageListDataset(folder, items, eval_transforms(pre["image_size"], pre["mean"], pre["std"]))
        excluded = ignored + dataset.drop_unreadable()
        prefix, name = "folder", folder.resolve().name
    else:
        dm = checkpoint_datamodule(ckpt, model, cfg.data.root)
        if cfg.split not in dm.datasets:
            raise DataError(
                f"split must be one of {list(dm.datasets)} (or use folder=...), got {cfg.split!r}"
            )
        dataset, excluded, prefix, name = dm.datasets[cfg.split], [], cfg.split, cfg.split
    if len(dataset) == 0:
        raise DataError(f"nothing to evaluate: no readable images in {cfg.folder or cfg.split}")
    if members:  # beside the members' runs (a CV directory): ensemble-eval[-<split or folder>]
        default_out = run_dir.parent / ("ensemble-eval" if name == "test" else f"ensemble-eval-{name}")
    else:
        default_out = run_dir / ("eval" if name == "test" else f"eval-{name}")
    out_dir = Path(cfg.output_dir) if cfg.output_dir else default_out
    csv_log = run_dir / "csv" / "metrics.csv"
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
        }
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
    if members:
        metrics[f"{prefix}/ensemble_members"] = [str(c) for c in members]
        write_json(out_dir / "metrics.json", metrics)
    if excluded:
        write_json(out_dir / "excluded.json", excluded)
        log.warning("%d files left out (listed in %s)", len(excluded), out_dir / "excluded.json")
    what = f"an ensemble of {len(members)} checkpoints" if members else str(ckpt)
    log.info("evaluation of %s on %s written to %s", what, name, out_dir)
    print(summary_line(metrics, prefix))
    return metrics


def summary_line(metrics: dict, prefix: str) -> str:
    """The headline figures on one line, intervals in brackets."""
    parts = []
    for key in ("acc", "f1_macro", "kappa", "auc_macro", "ece", "abstention_rate", "acc_non_abstained"):
        value, ci = metrics.get(f"{prefix}/{key}"), metrics.get(f"{prefix}/{key}_ci")
        if value is None:
            continue
        bounds = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else ""
        parts.append(f"{prefix}/{key}={value:.4f}{bounds}")
    return "  ".join(parts)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
