"""The optimizer study's report: its markdown tables and its two plots (lr search, learning curves).

Reads only the result dict that ``python -m skinlesion.optimizer_study`` writes as JSON, so the
report can be redrawn from ``optimizer_study.json`` alone.
"""

from __future__ import annotations

import math
from pathlib import Path

from skinlesion.reports.optim_grid import COMPARED, lr_label, mean_curve
from skinlesion.reports.plots import subplots

LABELS = {"f1_macro": "macro-F1", "acc": "accuracy"}


def fmt(stat: dict[str, float], digits: int = 3) -> str:
    """``0.912 ± 0.021``; ``—`` when no fold had the value."""
    if not math.isfinite(stat["mean"]):
        return "—"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def fmt_diff(d: dict) -> str:
    ci = "no interval" if not math.isfinite(d["low"]) else f"[{d['low']:+.3f}, {d['high']:+.3f}]"
    return f"{d['mean']:+.3f} {ci}"


def lr_table(result: dict) -> list[str]:
    lines = [
        "| optimizer | lr | val macro-F1 | val loss at best epoch | chosen |",
        "|---|---|---|---|---|",
    ]
    for o, search in result["lr_search"].items():
        for lr, run in search["runs"].items():
            chosen = "**yes**" if lr == lr_label(search["chosen"]) else ""
            lines.append(f"| {o} | {lr} | {fmt(run['f1_macro'])} | {fmt(run['val_loss'])} | {chosen} |")
    return lines


def cell_table(result: dict) -> list[str]:
    lines = [
        "| cell | lr | accuracy | macro-F1 | val loss at best | epochs to best | fit s |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result["cells"]:
        s = c["summary"]
        lines.append(
            f"| {c['name']} | {c['lr']:g} | {fmt(s['acc'])} | {fmt(s['f1_macro'])} | {fmt(s['val_loss'])} "
            f"| {fmt(s['epochs_to_best'], 1)} | {fmt(s['fit_seconds'], 0)} |"
        )
    return lines


def norm_table(result: dict) -> list[str]:
    lines = [
        "| cell | sum \\|w\\| | sqrt(sum w²) | head sum \\|w\\| | head sqrt(sum w²) | "
        "backbone sum \\|w\\| | backbone sqrt(sum w²) |",
        "|---" * 7 + "|",
    ]
    for c in result["cells"]:
        n = c["norms"]
        cells = [fmt(n[k], 1) for k in ("l1", "l2", "head_l1", "head_l2", "backbone_l1", "backbone_l2")]
        lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    return lines


def comparison_table(result: dict) -> list[str]:
    pct = round(100 * result["level"])
    heads = " | ".join(f"Δ {LABELS[k]} (mean, {pct} % CI) | verdict" for k in COMPARED)
    lines = ["| kind | within | b − a | " + heads + " |", "|---" * (3 + 2 * len(COMPARED)) + "|"]
    for c in result["comparisons"]:
        cells = " | ".join(f"{fmt_diff(c['diff'][k])} | {c['diff'][k]['verdict']}" for k in COMPARED)
        lines.append(f"| {c['kind']} | {c['within']} | {c['b']} − {c['a']} | {cells} |")
    return lines


def lr_folds_text(result: dict) -> str:
    """``fold 0 only (sd 0: one fold)`` or ``folds [0, 1, 2]``: a one-fold search has no spread."""
    folds = result.get("lr_folds", result["folds"])
    return f"fold {folds[0]} only (sd 0: one fold)" if len(folds) == 1 else f"folds {folds}"


def markdown(result: dict) -> str:
    k = len(result["folds"])
    return "\n".join(
        [
            f"# Optimizer study: {' vs '.join(result['optimizers'])}, with "
            f"{', '.join(result['regularizers'][1:])} and dropout",
            "",
            f"Grouped {result['n_folds']}-fold cross-validation over train + val (folds {result['folds']}; "
            "the test split is never touched); every cell ran on the same folds. "
            f"Common overrides: `{' '.join(result['common']) or '(none)'}`.",
            "",
            "## Stage 1: learning rate per optimizer",
            "",
            f"Regularizer {result['regularizers'][0]}, dropout {result['base_dropout']:g}, on "
            f"{lr_folds_text(result)}. The lr with the best mean val macro-F1 is kept (ties: the lower "
            "mean val loss); its run is then completed on the other folds as the grid's baseline cell.",
            "",
            *lr_table(result),
            "",
            "![lr search](lr_search.png)",
            "",
            f"## Stage 2: the grid (mean ± sd over {k} folds)",
            "",
            *cell_table(result),
            "",
            "Accuracy and macro-F1: each fold's best checkpoint on its own val fold (optimistic: the "
            "epoch was chosen on it). Val loss and epochs: at the epoch of the best val macro-F1.",
            "",
            "### Trained weights",
            "",
            *norm_table(result),
            "",
            "Over the trainable weight matrices and kernels (what the L1/L2 penalties cover; biases and "
            "normalisation scales left out) of each fold's best checkpoint.",
            "",
            "## Paired differences",
            "",
            *comparison_table(result),
            "",
            "Δ: b − a fold by fold. The interval is the corrected resampled t of Nadeau & Bengio (2003), "
            f"with n_val / n_train = {result['n_val']:.0f} / {result['n_train']:.0f} (the same statistics "
            "as `make cv-compare`). **real**: the interval excludes 0; **noise**: the folds cannot tell "
            "the two apart. Several comparisons are made, so an isolated real one at "
            f"{round(100 * result['level'])} % may still be chance.",
            "",
            "![learning curves](learning_curves.png)",
            "",
            f"Regenerate: `{result['command']}`.",
            "",
        ]
    )


def plot_lr_search(result: dict, path: Path) -> Path:
    """Mean val macro-F1 (± sd over folds) against lr, one line per optimizer, the kept lr ringed."""
    fig, ax = subplots(figsize=(6, 4))
    for o, search in result["lr_search"].items():
        lrs = [float(lr) for lr in search["runs"]]
        means = [run["f1_macro"]["mean"] for run in search["runs"].values()]
        sds = [run["f1_macro"]["sd"] for run in search["runs"].values()]
        line = ax.errorbar(lrs, means, yerr=sds, marker="o", capsize=3, label=o)
        best = list(search["runs"]).index(lr_label(search["chosen"]))
        ax.scatter([lrs[best]], [means[best]], s=160, facecolors="none", edgecolors=line[0].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("val macro-F1 (mean ± sd over folds)")
    ax.set_title("lr search (ringed: kept)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_learning_curves(result: dict, path: Path) -> Path:
    """Train (dashed) and val (solid) loss per epoch, mean over folds, a panel per optimizer."""
    optimizers = result["optimizers"]
    fig, axes = subplots(1, len(optimizers), figsize=(6 * len(optimizers), 4.2), squeeze=False)
    for ax, o in zip(axes[0], optimizers, strict=True):
        cells = [c for c in result["cells"] if c["optimizer"] == o]
        for i, c in enumerate(cells):
            colour = f"C{i % 10}"
            for key, style in (("train_loss", "--"), ("val_loss_curve", "-")):
                epochs, values = mean_curve([{int(e): v for e, v in f[key].items()} for f in c["curves"]])
                if epochs:
                    label = f"{c['regularizer']}, dropout {c['dropout']:g}" if style == "-" else None
                    ax.plot(
                        [e + 1 for e in epochs], values, style, marker="o", ms=3, color=colour, label=label
                    )
        ax.set_title(f"{o} (lr {cells[0]['lr']:g}): val solid, train dashed" if cells else o)
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy (mean over folds)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
