"""How prediction sets did on a labelled set of photos: coverage, class by class, and set sizes.

The sets come in as an (N, C) membership matrix (``inference.torch_backend.prediction_sets``, or
``models.conformal.cross_fit_membership`` out of fold), so this module only counts. Coverage is
the share of photos whose set holds their true class; the promise is per class, so each class's
coverage is reported with its exact (Clopper-Pearson) interval: with ten photos of a class, 0.8 is
no evidence against 0.9. For the same reason the report says how often sets that cover exactly the
level would keep every class within ``FLOOR_MARGIN`` of it on a split of these sizes: with a dozen
photos of a class, one class falling under is what an exact method does a third of the time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import binom, binomtest

from skinlesion.reports.tradeoff import tradeoff_markdown

CI_LEVEL = 0.95
FLOOR_MARGIN = 0.05  # the project's floor: class-conditional coverage >= level - 0.05


def floor_chance(counts: Sequence[int], level: float, margin: float = FLOOR_MARGIN) -> float:
    """The chance that sets covering each class exactly ``level`` keep every class at
    ``level - margin`` or more on a split with ``counts`` photos per class (independent binomials).

    Read beside the lowest class coverage: when it is well under 1, a class under the floor on
    this split is weak evidence against the method.
    """
    chance = 1.0
    for n in counts:
        if n > 0:
            need = math.ceil((level - margin) * n - 1e-9)  # 1e-9: 0.85 * 20 must be 17
            chance *= float(binom.sf(need - 1, n, level))
    return chance


def exact_interval(hits: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    ci = binomtest(hits, n).proportion_ci(CI_LEVEL, method="exact")
    return [float(ci.low), float(ci.high)]


def set_metrics(
    member: np.ndarray, targets: np.ndarray, class_names: Sequence[str], prefix: str, level: float
) -> dict:
    """Coverage overall and per class (with intervals), mean set size, and the share of single answers."""
    member, targets = np.asarray(member, dtype=bool), np.asarray(targets)
    n = len(targets)
    covered = member[np.arange(n), targets] if n else np.zeros(0, dtype=bool)
    sizes = member.sum(1)
    p = prefix
    out: dict = {
        f"{p}/set_level": float(level),
        f"{p}/set_coverage": float(covered.mean()) if n else float("nan"),
        f"{p}/set_coverage_ci": exact_interval(int(covered.sum()), n),
        f"{p}/set_mean_size": float(sizes.mean()) if n else float("nan"),
        f"{p}/set_size_counts": [int((sizes == k).sum()) for k in range(1, member.shape[1] + 1)],
        f"{p}/set_single_rate": float((sizes == 1).mean()) if n else float("nan"),
        f"{p}/set_single_acc": float(covered[sizes == 1].mean()) if (sizes == 1).any() else float("nan"),
    }
    per_class, counts = [], []
    for c, name in enumerate(class_names):
        own = targets == c
        if not own.any():
            continue
        value = float(covered[own].mean())
        per_class.append(value)
        counts.append(int(own.sum()))
        out[f"{p}/set_coverage/{name}"] = value
        out[f"{p}/set_coverage_ci/{name}"] = exact_interval(int(covered[own].sum()), int(own.sum()))
        out[f"{p}/set_mean_size/{name}"] = float(sizes[own].mean())
    out[f"{p}/set_min_class_coverage"] = min(per_class) if per_class else float("nan")
    if level == level:  # no level (NaN): no sets to judge
        out[f"{p}/set_floor_chance"] = floor_chance(counts, level)
    return out


def _ci(bounds) -> str:
    return f"{bounds[0]:.3f} – {bounds[1]:.3f}" if bounds else "–"


def set_markdown(m: dict, class_names: Sequence[str], prefix: str) -> str:
    """The prediction-set section of a classification report (empty when there are no sets)."""
    p = prefix
    if f"{p}/set_coverage" not in m:
        return ""
    level = round(100 * m[f"{p}/set_level"])
    counts = ", ".join(f"{k + 1}: {v}" for k, v in enumerate(m[f"{p}/set_size_counts"]))
    lines = [
        f"## Prediction sets ({level} % class-conditional conformal)",
        "",
        f"Coverage {m[f'{p}/set_coverage']:.3f} ({_ci(m[f'{p}/set_coverage_ci'])}, exact "
        f"{round(100 * CI_LEVEL)} % interval); mean set size {m[f'{p}/set_mean_size']:.3f}; "
        f"single-class answers {m[f'{p}/set_single_rate']:.1%}, right {m[f'{p}/set_single_acc']:.3f} "
        f"of the time; photos by set size {counts}.",
        "",
        "| class | coverage | interval | mean set size |",
        "|---|---|---|---|",
    ]
    for name in class_names:
        if f"{p}/set_coverage/{name}" in m:
            lines.append(
                f"| {name} | {m[f'{p}/set_coverage/{name}']:.3f} | {_ci(m[f'{p}/set_coverage_ci/{name}'])} "
                f"| {m[f'{p}/set_mean_size/{name}']:.2f} |"
            )
    if f"{p}/set_floor_chance" in m:
        floor = round(100 * (m[f"{p}/set_level"] - FLOOR_MARGIN))
        lines += [
            "",
            f"With this many photos per class, sets that covered exactly {level} % would keep every class "
            f"at {floor} % or more only {m[f'{p}/set_floor_chance']:.0%} of the time (binomial): read the "
            "lowest class with its interval.",
        ]
    return "\n".join([*lines, ""]) + "\n"


def _cell(m: dict | None, key: str, pct: bool = False) -> str:
    value = None if m is None else m.get(key)
    if value is None or value != value:  # missing or NaN
        return "–"
    return f"{value:.1%}" if pct else f"{value:.3f}"


def card_lines(test: dict, oof: dict | None, external: dict | None, rejection: dict | None) -> list[str]:
    """The model card's section on sets and abstention, from the files the runs wrote.

    ``test`` and ``external``: ``eval*/metrics.json`` (prefixes ``test``, ``folder``); ``oof``: the CV
    report's ``oof`` block; ``rejection``: the summary of ``evaluate_abstention`` (``abstention.json``).
    """
    if "test/set_coverage" not in test:
        return ["No prediction sets in this run: `python -m skinlesion.calibrate`, then `make evaluate`.", ""]
    level = round(100 * test["test/set_level"])
    promise = (
        f"fitted on the out-of-fold scores of a cross-validation of its train + val photos "
        f"({test.get('sets/calibration_photos', '?')} photos): aimed at a true class in the set with "
        f"probability {level} %, class by class; the fold models are not this one, so that is measured "
        "below, not promised"
        if test.get("sets/calibration") == "out of fold"
        else "fitted on the validation split: for a photo like the calibration photos, its true class is "
        f"in the set with probability at least {level} %, class by class"
    )
    columns = [
        ("in-domain test", test, "test/"),
        ("out of fold (CV)", oof, ""),
        ("external", external, "folder/"),
    ]
    rows = [
        ("coverage", "set_coverage", False),
        ("lowest class coverage", "set_min_class_coverage", False),
        (f"exact {level} % sets keep every class at {level - 5} % here", "set_floor_chance", True),
        ("mean set size", "set_mean_size", False),
        ("single-class answers", "set_single_rate", True),
        ("turned away by the gates", "abstention_rate", True),
    ]
    lines = [
        f"The model names one condition only when its {level} % prediction set holds exactly one; otherwise "
        "it says which conditions the photo could be. Class-conditional split conformal prediction, "
        f"{promise}. Out of fold, each fold's sets use "
        "thresholds fitted on the other folds.",
        "",
        "| | " + " | ".join(name for name, _, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, key, pct in rows:
        cells = [_cell(m, f"{p}{key}", pct) for _, m, p in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    names = [k.rpartition("/")[2] for k in test if k.startswith("test/set_coverage/")]
    lines += ["", "| class | test coverage | external coverage |", "|---|---|---|"]
    for name in names:
        lines.append(
            f"| {name} | {_cell(test, f'test/set_coverage/{name}')} "
            f"| {_cell(external, f'folder/set_coverage/{name}')} |"
        )
    if rejection is not None:
        sets = rejection.get("sets", {})
        shares = ", ".join(
            f"{group} {s['rejected']}/{s['n']} ({s['rejected_fraction']:.1%})" for group, s in sets.items()
        )
        lines += ["", f"Turned away by the gates (`make abstention`): {shares}."]
        if rejection.get("tradeoff"):
            lines += [
                "",
                "The other-rash gate's trade-off on held-out photos (best threshold within each in-class "
                "budget; the deployed one is fitted on val):",
                "",
                *tradeoff_markdown(rejection["tradeoff"]),
            ]
    else:
        lines += ["", "Rejection rates on non-skin images not measured: run `make abstention`."]
    return [*lines, *operating_point_lines(test), ""]


def operating_point_lines(m: dict) -> list[str]:
    """Where the other-rash gate was fitted and why: its cross-fitted catch over the training patients
    (``models.other.cross_fitted_catch``), from the run's ``metrics.json``."""
    prefix = "other/cv_caught_at_"
    curve = {k.removeprefix(prefix).removesuffix("pct"): v for k, v in m.items() if k.startswith(prefix)}
    if "other/reject" not in m or not curve:
        return []
    points = ", ".join(f"{b} %: {v:.1%}" for b, v in sorted(curve.items(), key=lambda kv: float(kv[0])))
    target, budget = m.get("other/catch_target"), f"{m['other/reject'] * 100:g} %"
    why = (
        f"the smallest budget (up to `abstain.other_reject`) that turns away {target:.0%} of other rashes"
        if target
        else "a fixed budget (`abstain.other_catch=0`)"
    )
    return [
        "",
        f"The other-rash gate is fitted at {budget} of in-class validation photos: {why}, as estimated by "
        f"cross-fitting over the training patients, never held-out ones ({points}).",
    ]


def calibration_markdown(rows: list[dict], class_names: Sequence[str], level: float, draws: int) -> str:
    """The table of ``models.conformal.calibration_sizes``, with what it means."""
    lines = [
        f"## How many calibration photos ({round(100 * level)} % class-conditional sets)",
        "",
        f"Each row: {draws} random calibration sets of that many out-of-fold photos per class "
        f"({', '.join(class_names)}), the thresholds fitted on them and the rest of the photos scored. "
        f"With fewer than {(1 + level) / (1 - level):.0f} photos of a class, its threshold is its single "
        "least-confident photo, so one hard or mislabelled photo opens every set.",
        "",
        "| data.split.val | photos per class | mean set size | 5–95 % of draws | draws over 1.5 "
        "| coverage | lowest class coverage |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["size_range"]
        lines.append(
            f"| {r['val_share']:g} | {', '.join(map(str, r['per_class']))} | {r['mean_size']:.2f} "
            f"| {low:.2f} – {high:.2f} | {r['over_1_5']:.0%} | {r['coverage']:.3f} "
            f"| {r['min_class_coverage']:.3f} |"
        )
    return "\n".join([*lines, ""]) + "\n"
