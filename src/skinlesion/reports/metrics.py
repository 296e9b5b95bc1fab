"""Classification metrics from predicted probabilities, in plain NumPy.

The training loop logs the same figures through torchmetrics; these functions serve evaluation of
any saved predictions (a split, an external folder, a fold) and must agree with them (a test checks).
Macro averages run over the classes present in the targets, so a folder without Monkeypox images
is scored on the classes it has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (targets, preds), 1)
    return cm


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(cm).astype(float)
    support = cm.sum(1).astype(float)
    predicted = cm.sum(0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


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
