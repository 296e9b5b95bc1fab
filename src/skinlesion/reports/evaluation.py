"""The evaluation artefacts of one set of predictions: metrics, intervals, plots, tables.

``train`` calls :func:`write_evaluation` on its best checkpoint and ``evaluate`` on any split or folder,
so every run directory carries the same artefacts in ``<run>/eval/``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import DataError
from skinlesion.data.datamodule import ImageListDataset
from skinlesion.reports.coverage import set_markdown, set_metrics
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
from skinlesion.reports.per_source import per_source_metrics, sources_markdown
from skinlesion.reports.plots import (
    plot_accuracy_coverage,
    plot_confusion_matrix,
    plot_misclassified,
    plot_reliability,
    plot_roc_curves,
    plot_training_curves,
)
from skinlesion.reports.reliability import (
    accuracy_coverage,
    calibration_metrics,
    reliability_bins,
    selective_metrics,
    softmax,
)


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
    prediction_sets: np.ndarray | None = None,
    set_level: float | None = None,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    ece_bins: int = 15,
) -> dict:
    """Metrics and every evaluation artefact for one set of predictions.

    ``probs`` are what the model outputs (temperature-scaled); with the raw ``logits`` calibration
    is also reported before scaling. The bootstrap resamples ``dataset.groups`` when it has them.
    When ``dataset.sources`` names more than one source, each is scored beside the pooled figures.
    ``abstained`` (a mask, from :func:`abstention_mask`) adds the abstention figures;
    ``prediction_sets`` (an (N, C) membership, at coverage ``set_level``) the sets' coverage and sizes.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot write the evaluation to {out_dir}: {e.strerror or e}") from e
    metrics = classification_metrics(probs, targets, class_names, prefix)
    metrics |= uncertainty_metrics(probs, targets, class_names, prefix, dataset.groups, bootstrap)
    sources = getattr(dataset, "sources", None)  # a stand-in dataset (a test's) may have none
    metrics |= per_source_metrics(probs, targets, class_names, prefix, sources, dataset.groups, bootstrap)
    metrics |= calibration_metrics(probs, targets, prefix, logits, temperature, ece_bins)
    metrics |= selective_metrics(probs, targets, prefix)
    if abstained is not None:
        metrics |= abstention_metrics(probs, targets, abstained, class_names, prefix)
    if prediction_sets is not None:
        metrics |= set_metrics(prediction_sets, targets, class_names, prefix, set_level or float("nan"))
    write_json(out_dir / "metrics.json", metrics)
    title = f"Classification report ({prefix}, {len(targets)} images)"
    (out_dir / "classification_report.md").write_text(
        report_markdown(probs, targets, class_names, title)
        + "\n"
        + details_markdown(metrics, class_names, prefix)
        + sources_markdown(metrics, class_names, prefix)
        + set_markdown(metrics, class_names, prefix)
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
        # group (the resampling unit) and abstained, when known, for paired re-analysis (lodo)
        extra = {"group": dataset.groups, "abstained": None if abstained is None else abstained.tolist()}
        extra = {k: v for k, v in extra.items() if v is not None}
        w.writerow(["path", "true", "pred", *[f"p_{c}" for c in class_names], *extra])
        for i, ((path, _), t, p, row) in enumerate(zip(dataset.items, targets, preds, probs, strict=True)):
            tail = [int(v[i]) if isinstance(v[i], bool) else v[i] for v in extra.values()]
            w.writerow([path, class_names[t], class_names[p], *[f"{v:.6f}" for v in row], *tail])
    if csv_log is not None:
        plot_training_curves(csv_log, out_dir / "training_curves.png")
    return metrics


def summary_line(metrics: dict, prefix: str) -> str:
    """The headline figures on one line, intervals in brackets."""
    parts = []
    keys = ("acc", "f1_macro", "kappa", "auc_macro", "ece", "abstention_rate", "acc_non_abstained")
    for key in (*keys, "set_coverage", "set_mean_size"):
        value, ci = metrics.get(f"{prefix}/{key}"), metrics.get(f"{prefix}/{key}_ci")
        if value is None:
            continue
        bounds = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else ""
        parts.append(f"{prefix}/{key}={value:.4f}{bounds}")
    return "  ".join(parts)
