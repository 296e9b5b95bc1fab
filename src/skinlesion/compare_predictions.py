"""``python -m skinlesion.compare_predictions``: models compared on the photos they all scored.

Two evaluations of one folder can cover different photos (each leaves out copies of its own
training data), so each model is scored on the common photos only, and each difference to the
first is paired photo by photo (:mod:`skinlesion.reports.paired`): called real only when its
interval excludes 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from skinlesion.core.errors import ConfigError
from skinlesion.core.task import command
from skinlesion.reports.heldout import fmt, interval, read_predictions
from skinlesion.reports.metrics import Bootstrap
from skinlesion.reports.paired import bootstrap_mean


def compare(cfg: DictConfig) -> dict:
    evals = [Path(e) for e in cfg.evals]
    if len(evals) < 2:
        raise ConfigError("compare_predictions needs evals=[a,b,...]: two or more evaluation directories")
    names = list(cfg.names) if cfg.names else [str(e) for e in evals]
    if len(names) != len(evals):
        raise ConfigError(f"{len(names)} names for {len(evals)} evaluations")
    scored = [read_predictions(e / "predictions.csv") for e in evals]
    common = set(scored[0].paths).intersection(*(s.paths for s in scored[1:]))
    order = sorted(common)
    if not order:
        raise ConfigError("the evaluations share no photo: compare evaluations of the same folder")
    common_only = [s.subset(order) for s in scored]
    correct = [s.correct.astype(float) for s in common_only]
    groups = common_only[0].groups
    options = Bootstrap(level=float(cfg.level))
    rows = []
    for name, c in zip(names, correct, strict=True):
        diff = c - correct[0]
        ci = bootstrap_mean(diff, groups, options) if name != names[0] else [None, None]
        verdict = "—" if ci[0] is None else ("better" if ci[0] > 0 else "worse" if ci[1] < 0 else "noise")
        rows.append(
            {
                "name": name,
                "acc": float(c.mean()),
                "acc_ci": bootstrap_mean(c, groups, options),
                "diff": float(diff.mean()),
                "diff_ci": ci,
                "verdict": verdict,
            }
        )
    lines = [
        f"{len(order)} photos scored by all {len(evals)} "
        f"(of {', '.join(str(len(s.paths)) for s in scored)}); Δ = paired difference to {names[0]}, "
        f"{round(100 * options.level)} % bootstrap interval over photos.",
        "",
        "| model | acc | CI | Δ acc | CI | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = ("—", "—") if r["diff_ci"][0] is None else (f"{r['diff']:+.3f}", interval(r["diff_ci"]))
        lines.append(
            f"| {r['name']} | {fmt(r['acc'])} | {interval(r['acc_ci'])} | {delta[0]} | {delta[1]} "
            f"| {r['verdict']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(text)
    return {"n_common": len(order), "rows": rows, "mean_correct": [float(np.mean(c)) for c in correct]}


main = command(compare, "compare_predictions")


if __name__ == "__main__":
    main()
