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
from skinlesion.reports.sweep_plots import (
    TrialRecord,
    format_value,
    plot_history,
    plot_importances,
    plot_parallel,
    plot_score_by,
)
from skinlesion.sweeps.study import ERROR_ATTR, OUTPUT_ATTR, is_interrupted, make_storage, reproduce
from skinlesion.training.fit import train

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
REGULARIZERS = ("none", "l1", "l2", "elastic")
MACHINE_KEYS = ("paths.", "data.root", "hydra.")
PLOTS = {
    "optimization_history.png": "optimization history",
    "param_importances.png": "parameter importances",
    "score_by_optimizer_regularizer.png": "score by optimizer and by regularizer",
    "parallel_coordinates.png": "parallel coordinates",
}


def load_study(storage: str, name: str) -> optuna.Study:
    rdb = make_storage(storage, None)
    try:
        return optuna.load_study(study_name=name, storage=rdb)
    except KeyError as e:
        names = [s.study_name for s in optuna.get_all_study_summaries(rdb)]
        raise SweepError(f"no study '{name}' in {storage}; it holds: {', '.join(names) or 'no study'}") from e


def state_of(trial: FrozenTrial) -> str:
    return "INTERRUPTED" if is_interrupted(trial) else trial.state.name


def record(trial: FrozenTrial) -> TrialRecord:
    steps = sorted(trial.intermediate_values)
    return TrialRecord(
        number=trial.number,
        state=state_of(trial),
        value=trial.value if trial.state == TrialState.COMPLETE else None,
        params=dict(trial.params),
        curve=tuple(trial.intermediate_values[s] for s in steps),
    )


def seconds(trial: FrozenTrial) -> float | None:
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return None


def importances(study: optuna.Study) -> dict[str, float]:
    """Mean decrease in impurity over complete trials, for the parameters every one of them has."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(
                study, evaluator=MeanDecreaseImpurityImportanceEvaluator(seed=0)
            )
    except (ValueError, RuntimeError) as e:  # fewer than two complete trials, or nothing shared
        log.info("no parameter importances: %s", e)
        return {}
    return dict(found)


def cross_table(records: Sequence[TrialRecord], rows: str, cols: str) -> list[str]:
    """Markdown: best val macro-F1 (and the number of complete trials) per pair of choices."""
    seen_rows = [o for o in OPTIMIZERS if any(r.params.get(rows) == o for r in records)]
    seen_cols = [g for g in REGULARIZERS if any(r.params.get(cols) == g for r in records)]
    lines = [f"| {rows} \\ {cols} | " + " | ".join(seen_cols) + " |", "|---|" + "---|" * len(seen_cols)]
    for row in seen_rows:
        cells = []
        for col in seen_cols:
            values = [
                r.value
                for r in records
                if r.value is not None and (r.params.get(rows), r.params.get(cols)) == (row, col)
            ]
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


def trial_table(trials: Sequence[FrozenTrial], keys: Sequence[str]) -> list[str]:
    lines = ["| trial | val macro-F1 | " + " | ".join(keys) + " | epochs | seconds |"]
    lines.append("|---|---|" + "---|" * len(keys) + "---|---|")
    for t in trials:
        cells = [format_value(t.params[k]) if k in t.params else "–" for k in keys]
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
    records = [record(t) for t in trials]
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    if not trials:
        raise SweepError(f"study '{study.study_name}' has no trials yet")
    counts = {
        s: sum(r.state == s for r in records)
        for s in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED", "RUNNING")
    }
    found = importances(study)
    plot_history(records, out / "optimization_history.png")
    plot_importances(found, out / "param_importances.png")
    plot_score_by(records, ["optimizer", "regularizer"], out / "score_by_optimizer_regularizer.png")
    plot_parallel(records, out / "parallel_coordinates.png")
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
            *cross_table(records, "optimizer", "regularizer"),
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
    lines += ["", "## Plots", ""] + [f"![{title}]({name})" for name, title in PLOTS.items()]
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
