"""Classification metrics from predicted probabilities, in plain NumPy.

The training loop logs the same figures through torchmetrics; these functions serve evaluation of
any saved predictions (a split, an external folder, a fold) and must agree with them (a test checks).
Macro averages run over the classes present in the targets, so a folder without Monkeypox images
is scored on the classes it has.

With 74 test images a point estimate alone misleads, so :func:`uncertainty_metrics` adds
percentile-bootstrap intervals. The resampling unit is the duplicate group where the manifest gives
one (near-copies are not independent evidence), else the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import auc, f1_score, roc_curve


def accuracy_f1(targets: np.ndarray, preds: np.ndarray, labels: Sequence[int]) -> dict[str, float]:
    """Accuracy, and macro-F1 over ``labels`` (e.g. only the classes a partial folder holds)."""
    return {
        "acc": float((np.asarray(preds) == np.asarray(targets)).mean()),
        "f1_macro": float(f1_score(targets, preds, labels=list(labels), average="macro", zero_division=0)),
    }


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (targets, preds), 1)
    return cm


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class of one (C, C) matrix or a stack (..., C, C)."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1).copy()
    support = cm.sum(-1)
    predicted = cm.sum(-2)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def cm_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1 (classes present), Cohen's κ and recall (NaN when absent) from matrices."""
    cm = np.asarray(cm, dtype=float)
    s = per_class_scores(cm)
    n = cm.sum((-2, -1))
    present = s["support"] > 0
    acc = np.trace(cm, axis1=-2, axis2=-1) / np.maximum(n, 1)
    chance = (cm.sum(-1) * cm.sum(-2)).sum(-1) / np.maximum(n, 1) ** 2
    nan = np.full_like(acc, np.nan)
    return {
        "acc": acc,
        "f1_macro": np.divide((s["f1"] * present).sum(-1), present.sum(-1), out=nan.copy(), where=n > 0),
        "kappa": np.divide(acc - chance, 1 - chance, out=nan.copy(), where=(1 - chance) > 1e-12),
        "recall": np.where(present, s["recall"], np.nan),
    }


def cohen_kappa(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    """Agreement beyond chance between labels and predictions; NaN when chance agreement is total."""
    return float(cm_scores(confusion_matrix(targets, preds, num_classes))["kappa"])


def classification_metrics(
    probs: np.ndarray, targets: np.ndarray, class_names: Sequence[str], prefix: str = "test"
) -> dict[str, float]:
    """Accuracy, macro/weighted precision-recall-F1 and per-class scores, keyed ``prefix/name``."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    preds = probs.argmax(1)
    cm = confusion_matrix(targets, preds, len(class_names))
    s = per_class_scores(cm)
    present = s["support"] > 0
    weights = s["support"] / max(s["support"].sum(), 1)
    out = {
        f"{prefix}/n": len(targets),
        f"{prefix}/acc": float((preds == targets).mean()) if len(targets) else float("nan"),
    }
    for key in ("precision", "recall", "f1"):
        out[f"{prefix}/{key}_macro"] = float(s[key][present].mean()) if present.any() else float("nan")
        out[f"{prefix}/{key}_weighted"] = float((s[key] * weights).sum())
    for i, name in enumerate(class_names):
        for key in ("precision", "recall", "f1"):
            out[f"{prefix}/{key}/{name}"] = float(s[key][i])
        out[f"{prefix}/support/{name}"] = int(s["support"][i])
    return out


def report_markdown(probs: np.ndarray, targets: np.ndarray, class_names: Sequence[str], title: str) -> str:
    """A classification report table: precision, recall, F1, support; macro and weighted rows."""
    preds = np.asarray(probs).argmax(1)
    cm = confusion_matrix(np.asarray(targets), preds, len(class_names))
    s = per_class_scores(cm)
    present = s["support"] > 0
    w = s["support"] / max(s["support"].sum(), 1)
    lines = [f"# {title}", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for i, name in enumerate(class_names):
        scores = " | ".join(f"{s[k][i]:.3f}" for k in ("precision", "recall", "f1"))
        lines.append(f"| {name} | {scores} | {int(s['support'][i])} |")
    n = int(s["support"].sum())
    acc = float(np.trace(cm) / max(n, 1))
    for label, agg in (("macro avg", lambda v: v[present].mean()), ("weighted avg", lambda v: (v * w).sum())):
        lines.append(
            f"| **{label}** | {agg(s['precision']):.3f} | {agg(s['recall']):.3f} | {agg(s['f1']):.3f} | {n} |"
        )
    lines += ["", f"Accuracy: **{acc:.3f}** on {n} images.", ""]
    if not present.all():
        absent = [c for c, p in zip(class_names, present, strict=True) if not p]
        lines.append(f"Classes absent from the targets (left out of the macro average): {', '.join(absent)}.")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Bootstrap:
    """How the confidence intervals are drawn; fixed seed, so a report is reproducible."""

    n_resamples: int = 2000
    level: float = 0.95
    seed: int = 0


DEFAULT_BOOTSTRAP = Bootstrap()


def bootstrap_intervals(
    targets: np.ndarray,
    preds: np.ndarray,
    num_classes: int,
    groups: Sequence[str] | None = None,
    options: Bootstrap = DEFAULT_BOOTSTRAP,
) -> dict[str, np.ndarray]:
    """Percentile intervals of :func:`cm_scores` under resampling of whole groups (else images).

    Each unit's confusion matrix is counted once; a resample is a weighted sum of them, so thousands
    of resamples cost one matrix product. Returns name -> (2,) or (2, C) array [low, high].
    """
    targets, preds = np.asarray(targets, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    if options.n_resamples < 1 or not 0 < options.level < 1:
        raise ValueError(f"need n_resamples >= 1 and 0 < level < 1, got {options}")
    units = (
        np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
        if groups is not None
        else np.arange(len(targets))
    )
    n_units = int(units.max()) + 1
    per_unit = np.zeros((n_units, num_classes, num_classes))
    np.add.at(per_unit, (units, targets, preds), 1)
    rng = np.random.default_rng(options.seed)
    draws = rng.integers(0, n_units, (options.n_resamples, n_units))
    weights = np.zeros((options.n_resamples, n_units))
    np.add.at(weights, (np.arange(options.n_resamples)[:, None], draws), 1)
    cms = (weights @ per_unit.reshape(n_units, -1)).reshape(-1, num_classes, num_classes)
    tail = (1 - options.level) / 2
    out = {}
    for name, values in cm_scores(cms).items():
        all_nan = np.isnan(values).all(0)
        filled = np.where(all_nan, 0.0, values)  # a class absent from every resample has no interval
        out[name] = np.where(all_nan, np.nan, np.nanquantile(filled, [tail, 1 - tail], axis=0))
    return out


RocCurve = tuple[np.ndarray, np.ndarray, float]  # false-positive rates, true-positive rates, AUC


def roc_one_vs_rest(probs: np.ndarray, targets: np.ndarray) -> list[RocCurve | None]:
    """(fpr, tpr, AUC) per class against the rest; None where a class has no positives or no negatives."""
    probs, targets = np.asarray(probs), np.asarray(targets)
    curves: list[RocCurve | None] = []
    for k in range(probs.shape[1]):
        positive = targets == k
        if positive.all() or not positive.any():
            curves.append(None)
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, k])
        curves.append((fpr, tpr, float(auc(fpr, tpr))))
    return curves


def interval(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def uncertainty_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    class_names: Sequence[str],
    prefix: str = "test",
    groups: Sequence[str] | None = None,
    options: Bootstrap = DEFAULT_BOOTSTRAP,
) -> dict:
    """Cohen's κ, one-vs-rest ROC AUC, and bootstrap intervals for accuracy, macro-F1, κ and recall."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    preds = probs.argmax(1)
    out: dict = {f"{prefix}/kappa": cohen_kappa(targets, preds, len(class_names))}
    aucs = [c[2] if c else None for c in roc_one_vs_rest(probs, targets)]
    defined = [a for a in aucs if a is not None]
    out[f"{prefix}/auc_macro"] = float(np.mean(defined)) if defined else None
    for name, a in zip(class_names, aucs, strict=True):
        out[f"{prefix}/auc/{name}"] = a
    ci = bootstrap_intervals(targets, preds, len(class_names), groups, options)
    for name in ("acc", "f1_macro", "kappa"):
        out[f"{prefix}/{name}_ci"] = interval(ci[name])
    for i, name in enumerate(class_names):
        out[f"{prefix}/recall_ci/{name}"] = interval(ci["recall"][:, i])
    unit = "group" if groups is not None else "image"
    out |= {
        f"{prefix}/ci_level": options.level,
        f"{prefix}/bootstrap_resamples": options.n_resamples,
        f"{prefix}/bootstrap_seed": options.seed,
        f"{prefix}/bootstrap_unit": unit,
        f"{prefix}/bootstrap_units": len(set(groups)) if groups is not None else len(targets),
    }
    return out


def abstention_metrics(
    probs: np.ndarray, targets: np.ndarray, abstained: np.ndarray, class_names: Sequence[str], prefix: str
) -> dict:
    """Abstention rate, and accuracy and macro-F1 on the images the model did not abstain on."""
    abstained = np.asarray(abstained, dtype=bool)
    kept = classification_metrics(np.asarray(probs)[~abstained], np.asarray(targets)[~abstained], class_names)
    return {
        f"{prefix}/abstention_rate": float(abstained.mean()) if len(abstained) else float("nan"),
        f"{prefix}/n_abstained": int(abstained.sum()),
        f"{prefix}/acc_non_abstained": kept["test/acc"],
        f"{prefix}/f1_macro_non_abstained": kept["test/f1_macro"],
    }


def fmt_num(value) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def fmt_ci(bounds) -> str:
    return "—" if not bounds or None in bounds else f"{bounds[0]:.3f} – {bounds[1]:.3f}"


def bootstrap_units(m: dict, prefix: str) -> str:
    """What the bootstrap resampled, in words."""
    if m[f"{prefix}/bootstrap_unit"] == "group":
        return "groups (an image with its duplicates, as in the manifest)"
    return "images"


def calibration_lines(m: dict, prefix: str) -> list[str]:
    """ECE, NLL and Brier before and after temperature scaling, as a markdown table with its legend."""
    temperature = m.get(f"{prefix}/temperature")
    scaled = f"temperature-scaled (T = {temperature:.3f})" if temperature is not None else "as output"
    lines = [
        f"ECE over {m[f'{prefix}/ece_bins']} equal-width confidence bins (0 = confidence matches accuracy); "
        "NLL and multi-class Brier score, lower is better. The temperature is fitted on val.",
        "",
        "| probabilities | ECE | NLL | Brier |",
        "|---|---|---|---|",
    ]
    for label, suffix in (("raw softmax (T = 1)", "_uncalibrated"), (scaled, "")):
        if f"{prefix}/ece{suffix}" in m:
            scores = " | ".join(fmt_num(m[f"{prefix}/{k}{suffix}"]) for k in ("ece", "nll", "brier"))
            lines.append(f"| {label} | {scores} |")
    return lines


def details_markdown(m: dict, class_names: Sequence[str], prefix: str = "test") -> str:
    """Report sections for the figures of :func:`uncertainty_metrics`, calibration and abstention in ``m``."""
    p, lines = prefix, []
    if f"{p}/acc_ci" in m:
        level = round(100 * m[f"{p}/ci_level"])
        lines += [
            "## Uncertainty",
            "",
            f"{level} % percentile-bootstrap intervals: {m[f'{p}/bootstrap_resamples']} resamples of the "
            f"{m[f'{p}/bootstrap_units']} {bootstrap_units(m, p)} (seed {m[f'{p}/bootstrap_seed']}).",
            "",
            f"| metric | estimate | {level} % CI |",
            "|---|---|---|",
            f"| accuracy | {fmt_num(m[f'{p}/acc'])} | {fmt_ci(m[f'{p}/acc_ci'])} |",
            f"| macro-F1 | {fmt_num(m[f'{p}/f1_macro'])} | {fmt_ci(m[f'{p}/f1_macro_ci'])} |",
            f"| Cohen's κ | {fmt_num(m[f'{p}/kappa'])} | {fmt_ci(m[f'{p}/kappa_ci'])} |",
            f"| macro one-vs-rest ROC AUC | {fmt_num(m[f'{p}/auc_macro'])} | |",
            "",
            f"| class | recall (sensitivity) | {level} % CI | one-vs-rest AUC |",
            "|---|---|---|---|",
        ]
        for c in class_names:
            absent = m[f"{p}/support/{c}"] == 0  # no images of the class: no recall, not 0
            recall, auc_c = "—" if absent else fmt_num(m[f"{p}/recall/{c}"]), fmt_num(m[f"{p}/auc/{c}"])
            lines.append(f"| {c} | {recall} | {fmt_ci(m[f'{p}/recall_ci/{c}'])} | {auc_c} |")
        lines.append("")
    if f"{p}/ece" in m:
        lines += ["## Calibration", "", *calibration_lines(m, p), ""]
    if f"{p}/aurc" in m:
        at = [(k.rsplit("/", 1)[1], v) for k, v in m.items() if k.startswith(f"{p}/acc_at_coverage/")]
        lines += [
            "## Selective accuracy",
            "",
            "Abstaining on the least confident images first (`accuracy_coverage.png`): accuracy on the "
            "answered ones at "
            + ", ".join(f"{round(100 * float(c))} % coverage {fmt_num(v)}" for c, v in at)
            + f"; area under the risk-coverage curve {fmt_num(m[f'{p}/aurc'])} (lower is better). "
            "The best any confidence threshold can do on these images.",
            "",
        ]
    if f"{p}/abstention_rate" in m:
        lines += [
            "## Abstention",
            "",
            f"Abstained on {m[f'{p}/n_abstained']} images (rate {fmt_num(m[f'{p}/abstention_rate'])}); "
            f"on the others accuracy {fmt_num(m[f'{p}/acc_non_abstained'])}, "
            f"macro-F1 {fmt_num(m[f'{p}/f1_macro_non_abstained'])}.",
            "",
        ]
    return "\n".join(lines)
