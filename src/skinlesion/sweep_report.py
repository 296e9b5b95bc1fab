"""``python -m skinlesion.sweep_report``: read a study, write ``sweep_report.md`` and its plots.

The report says how the trials ended, tabulates val macro-F1 by optimizer × regularizer, ranks
the trials and the parameters, lists failures with their errors, prints the Hydra overrides that
reproduce the best trial and writes them as an ``experiment=`` config. ``retrain=true`` trains
that configuration once more with ``evaluate=true``, the only time the sweep looks at the test
split.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import optuna
import yaml
from omegaconf import DictConfig
from optuna.importance import MeanDecreaseImpurityImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import SweepError
from skinlesion.core.paths import CONF_DIR
from skinlesion.core.task import command
from skinlesion.reports.sweep_plots import write_plots
from skinlesion.sweeps.study import ERROR_ATTR, OUTPUT_ATTR, count_states, make_storage, reproduce
from skinlesion.training.fit import train

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
REGULARIZERS = ("none", "l1", "l2", "elastic")
MACHINE_KEYS = ("paths.", "data.root", "hydra.")
EVALUATOR = MeanDecreaseImpurityImportanceEvaluator(seed=0)
STATES = ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED", "RUNNING")


def load_study(storage: str, name: str) -> optuna.Study:
    rdb = make_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=rdb)
    except KeyError as e:
        names = optuna.get_all_study_names(rdb)
        raise SweepError(f"no study '{name}' in {storage}; it holds: {', '.join(names) or 'no study'}") from e


def seconds(trial: FrozenTrial) -> float | None:
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return None


def importances(study: optuna.Study) -> dict[str, float]:
    """Mean decrease in impurity over complete trials, for the parameters every one of them has."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study, evaluator=EVALUATOR)
    except (ValueError, RuntimeError) as e:  # fewer than two complete trials, or nothing shared
        log.info("no parameter importances: %s", e)
        return {}
    return dict(found)


def cross_table(complete: Sequence[FrozenTrial], rows: str, cols: str) -> list[str]:
    """Markdown: best val macro-F1 (and the number of complete trials) per pair of choices."""
    seen_rows = [o for o in OPTIMIZERS if any(t.params.get(rows) == o for t in complete)]
    seen_cols = [g for g in REGULARIZERS if any(t.params.get(cols) == g for t in complete)]
    lines = [f"| {rows} \\ {cols} | " + " | ".join(seen_cols) + " |", "|---|" + "---|" * len(seen_cols)]
    for row in seen_rows:
        cells = []
        for col in seen_cols:
            values = [t.value for t in complete if (t.params.get(rows), t.params.get(cols)) == (row, col)]
            cells.append(f"{max(values):.3f} (n={len(values)})" if values else "–")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def experiment_config(trial: FrozenTrial, study_name: str) -> str:
    """The best trial as an ``experiment=`` file: group choices as defaults, values as keys."""
    defaults, values = [], {}
    for override in reproduce(trial):
        key, value = override.split("=", 1)
        if key.startswith(MACHINE_KEYS):  # where this machine keeps things is no part of a recipe
            continue
        if (CONF_DIR / key).is_dir():
            defaults.append({f"override /{key}": value})
            continue
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    header = (
        "# @package _global_\n"
        f"# Best trial {trial.number} of sweep study '{study_name}' (val macro-F1 {trial.value:.4f}),\n"
        "# written by python -m skinlesion.sweep_report.\n"
    )
    body = yaml.safe_dump({"defaults": defaults, **values}, sort_keys=False)
    return header + body


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if value and (abs(value) < 1e-2 or abs(value) >= 1e3) else f"{value:.3f}"
    return str(value)


def trial_table(trials: Sequence[FrozenTrial], keys: Sequence[str]) -> list[str]:
    lines = ["| trial | val macro-F1 | " + " | ".join(keys) + " | epochs | seconds |"]
    lines.append("|---|---|" + "---|" * len(keys) + "---|---|")
    for t in trials:
        cells = [fmt(t.params[k]) if k in t.params else "–" for k in keys]
        epochs = len(t.intermediate_values) or t.user_attrs.get("epochs", "–")
        secs = seconds(t)
        lines.append(
            f"| {t.number} | {t.value:.4f} | " + " | ".join(cells) + f" | {epochs} | {secs or 0:.0f} |"
        )
    return lines


def write_report(study: optuna.Study, out: Path, top: int = 10) -> dict[str, Any]:
    """Write ``sweep_report.md``, ``summary.json``, the plots and ``experiment.yaml``; return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    if not trials:
        raise SweepError(f"study '{study.study_name}' has no trials yet")
    found_states = count_states(trials)
    counts = {s: found_states.get(s, 0) for s in STATES}
    found = importances(study)
    plotted = write_plots(study, out, EVALUATOR)
    keys = sorted({k for t in trials for k in t.params})
    total = sum(seconds(t) or 0 for t in trials)
    lines = [
        f"# Sweep report: study `{study.study_name}`",
        "",
        f"{len(trials)} trials: "
        + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
        + f"; {total / 60:.1f} min of trial time. Objective: best val macro-F1 of each trial.",
        "",
    ]
    summary: dict[str, Any] = {
        "study": study.study_name,
        "trials": len(trials),
        **counts,
        "minutes": total / 60,
    }
    if complete:
        best = complete[0]
        command = "python -m skinlesion.train " + " ".join(reproduce(best))
        (out / "experiment.yaml").write_text(experiment_config(best, study.study_name))
        summary |= {"best_trial": best.number, "best_value": best.value, "best_overrides": reproduce(best)}
        lines += [
            f"## Best: trial {best.number}, val macro-F1 {best.value:.4f}",
            "",
            "```bash",
            command,
            "```",
            "",
            "As an experiment config: `experiment.yaml` beside this report; copy it to "
            "`conf/experiment/<name>.yaml` and run `python -m skinlesion.train experiment=<name>`.",
            "",
            "## Val macro-F1 by optimizer × regularizer (best of the complete trials, n = trials)",
            "",
            *cross_table(complete, "optimizer", "regularizer"),
            "",
            f"## Top {min(top, len(complete))} trials",
            "",
            *trial_table(complete[:top], keys),
            "",
        ]
    lines += [f"## Parameter importances ({len(complete)} complete trials; shared parameters only)", ""]
    lines += [f"- `{k}`: {v:.3f}" for k, v in found.items()] or ["(needs two or more complete trials)"]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if failed:
        lines += ["", "## Failed and interrupted trials", "", "| trial | error | output |", "|---|---|---|"]
        for t in failed:
            error = t.user_attrs.get(ERROR_ATTR, "interrupted (killed or stopped); queued again").replace(
                "|", "/"
            )
            lines.append(
                f"| {t.number} | {error.splitlines()[0][:200]} | {t.user_attrs.get(OUTPUT_ATTR, '')} |"
            )
    lines += ["", "## Plots", ""] + [f"![{title}]({name})" for name, title in plotted.items()]
    (out / "sweep_report.md").write_text("\n".join(lines) + "\n")
    write_json(out / "summary.json", summary)
    return summary


def retrain_best(cfg: DictConfig, overrides: list[str], out: Path) -> dict:
    """Train the best configuration again, this time testing it; returns its metrics."""
    run_cfg = hydra.compose(
        "train",
        overrides=[
            *overrides,
            "evaluate=true",
            f"paths.output_root={cfg.paths.output_root}",
            f"paths.output_dir={out}",
        ],
    )
    val = train(run_cfg)
    return {"retrained/val_f1_macro": val, "retrained/output_dir": str(out)}


def sweep_report(cfg: DictConfig) -> dict:
    study = load_study(cfg.storage, cfg.study_name)
    out = Path(cfg.output_dir)
    summary = write_report(study, out, cfg.top)
    log.info("wrote %s", out / "sweep_report.md")
    if "best_overrides" in summary:
        print("best configuration:\n  python -m skinlesion.train " + " ".join(summary["best_overrides"]))
        if cfg.retrain:
            summary |= retrain_best(
                cfg, summary["best_overrides"], out / f"best-trial-{summary['best_trial']}"
            )
            write_json(out / "summary.json", summary)
    return summary


main = command(sweep_report, "sweep_report")


if __name__ == "__main__":
    main()
