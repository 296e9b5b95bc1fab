"""The other-rash gate's trade-off: how many other rashes it turns away for how many in-class photos.

From the per-photo rows of ``evaluate_abstention`` (their ``ood_score``, ``other_score`` and set),
for every threshold of the other-rash score: the share of in-class photos turned away (by either
gate), of other-rash photos of held-out patients, and of non-skin images. Beside it, the same curve
for the out-of-distribution score alone, as if its one threshold were lowered to catch other
rashes (what calibrating the existing gate on them would do).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skinlesion.reports.plots import _save, subplots

GROUPS = ("inside", "other", "nonskin")  # in-class test photos, other rashes (held out), non-skin


def scores(rows: Sequence[dict], group_of) -> dict[str, dict[str, np.ndarray]]:
    """Per group (``group_of(row)`` -> one of ``GROUPS`` or None): the photos' two scores."""
    out = {}
    for g in GROUPS:
        chosen = [r for r in rows if group_of(r) == g]
        out[g] = {k: np.array([r[k] for r in chosen], dtype=float) for k in ("ood_score", "other_score")}
    return out


def curve(s: dict, score: str, thresholds: np.ndarray, ood_threshold: float | None) -> dict[str, list]:
    """Turned-away shares per group for each threshold of ``score``; with ``ood_threshold`` the
    out-of-distribution gate stays on at it (the deployed rule with a moved other-rash threshold)."""
    out: dict[str, list] = {"threshold": [float(t) for t in thresholds]}
    for g in GROUPS:
        values, ood = s[g][score], s[g]["ood_score"]
        base = ood > ood_threshold if ood_threshold is not None else np.zeros(len(ood), bool)
        out[g] = [float((base | (values > t)).mean()) if len(values) else float("nan") for t in thresholds]
    return out


def tradeoff(s: dict, ood_threshold: float | None, points: int = 41) -> dict[str, dict]:
    """Both curves, thresholds at quantiles of the in-class photos' scores (0 to 40 % turned away)."""
    quantiles = np.linspace(0.6, 1.0, points)
    out = {}
    if len(s["inside"]["other_score"]) and np.ptp(s["inside"]["other_score"]) > 0:
        t = np.quantile(s["inside"]["other_score"], quantiles)
        out["other_gate"] = curve(s, "other_score", np.append(t, np.inf), ood_threshold)
    t = np.quantile(s["inside"]["ood_score"], quantiles) if len(s["inside"]["ood_score"]) else np.zeros(0)
    out["ood_only"] = curve(s, "ood_score", np.append(t, np.inf), None)
    return out


def plot_tradeoff(curves: dict, deployed: dict, path: Path) -> None:
    """Other rashes (and non-skin images) turned away against in-class photos wrongly turned away."""
    fig, ax = subplots(figsize=(6.4, 4.6))
    labels = {"other_gate": "other-rash gate (+ OOD gate)", "ood_only": "OOD score alone"}
    for name, c in curves.items():
        ax.plot(c["inside"], c["other"], "-", label=f"other rashes: {labels[name]}")
        ax.plot(c["inside"], c["nonskin"], ":", label=f"non-skin: {labels[name]}")
    if deployed:
        ax.plot([deployed["inside"]], [deployed["other"]], "o", color="black", label="deployed thresholds")
    ax.axvline(0.10, color="grey", lw=0.8, ls="--")
    ax.axhline(0.60, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="in-class test photos turned away", ylabel="turned away", xlim=(0, 0.4), ylim=(0, 1.02))
    ax.set_title("Turned away: other rashes of held-out patients vs in-class photos")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def best_under(c: dict, ceiling: float) -> int | None:
    """The threshold turning away the most other rashes with at most ``ceiling`` in-class photos."""
    ok = [i for i, x in enumerate(c["inside"]) if x <= ceiling + 1e-9]
    return max(ok, key=lambda i: c["other"][i]) if ok else None


def tradeoff_markdown(curves: dict, at: Sequence[float] = (0.02, 0.05, 0.10, 0.15, 0.20)) -> list[str]:
    """The curves read at a few in-class rejection rates (the best threshold within each)."""
    lines = [
        "| in-class turned away (at most) | other rashes: gate | non-skin: gate | other rashes: OOD alone |",
        "|---|---|---|---|",
    ]
    gate, ood = curves.get("other_gate"), curves["ood_only"]
    for a in at:
        i, j = (best_under(gate, a) if gate else None), best_under(ood, a)
        cells = [f"{gate[k][i]:.1%}" if i is not None else "–" for k in ("other", "nonskin")]
        cells.append(f"{ood['other'][j]:.1%}" if j is not None else "–")
        lines.append(f"| {a:.0%} | " + " | ".join(cells) + " |")
    return lines
