"""Scores per source beside the pooled ones: a model trained on several collections (``data=multisource``)
can be good on one and poor on another, which a pooled figure hides."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skinlesion.reports.metrics import (
    DEFAULT_BOOTSTRAP,
    Bootstrap,
    classification_metrics,
    fmt_ci,
    fmt_num,
    uncertainty_metrics,
)


def per_source_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    class_names: Sequence[str],
    prefix: str,
    sources: Sequence[str] | None,
    groups: Sequence[str] | None = None,
    options: Bootstrap = DEFAULT_BOOTSTRAP,
) -> dict:
    """Each source's figures beside the pooled ones, keyed ``prefix/source/<name>/...``, when the
    images come from more than one source (``data=multisource``); else nothing."""
    if sources is None or len(set(sources)) < 2:
        return {}
    probs, targets = np.asarray(probs), np.asarray(targets)
    names = sorted(set(sources))
    out: dict = {f"{prefix}/sources": names}
    for s in names:
        idx = np.array([i for i, v in enumerate(sources) if v == s])
        p = f"{prefix}/source/{s}"
        subset_groups = [groups[i] for i in idx] if groups is not None else None
        out |= classification_metrics(probs[idx], targets[idx], class_names, p)
        out |= uncertainty_metrics(probs[idx], targets[idx], class_names, p, subset_groups, options)
    return out


def sources_markdown(m: dict, class_names: Sequence[str], prefix: str = "test") -> str:
    """A report section with each source's scores (from :func:`per_source_metrics`), or nothing."""
    names = m.get(f"{prefix}/sources")
    if not names:
        return ""
    level = round(100 * m[f"{prefix}/ci_level"])
    lines = [
        "## Per source",
        "",
        f"The same predictions, scored on each source's images alone ({level} % bootstrap intervals).",
        "",
        "| source | images | accuracy | macro-F1 | κ | "
        + " | ".join(f"recall {c}" for c in class_names)
        + " |",
        "|---" * (5 + len(class_names)) + "|",
    ]
    for s in names:
        p = f"{prefix}/source/{s}"
        support = {c: m[f"{p}/support/{c}"] for c in class_names}
        recalls = [
            f"{fmt_num(m[f'{p}/recall/{c}'])} (n={support[c]})" if support[c] else "—" for c in class_names
        ]
        lines.append(
            f"| {s} | {m[f'{p}/n']} | {fmt_num(m[f'{p}/acc'])} [{fmt_ci(m[f'{p}/acc_ci'])}] | "
            f"{fmt_num(m[f'{p}/f1_macro'])} [{fmt_ci(m[f'{p}/f1_macro_ci'])}] | {fmt_num(m[f'{p}/kappa'])} | "
            + " | ".join(recalls)
            + " |"
        )
    return "\n".join([*lines, ""]) + "\n"
