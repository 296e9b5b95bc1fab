"""Leave-one-source-out tables: each arm (a recipe, or an evaluation of one) on each held-out
source and on the external folder, averaged over seeds, with paired differences to a baseline.

Everything is read back from the runs' ``predictions.csv``, so an arm that averages others (an
ensemble) costs no run, and the table can be rebuilt from the artefacts alone. Intervals: the
seed-averaged accuracy resamples whole groups (patients, duplicate groups) of the scored photos;
a difference to the baseline gets two, the t interval over paired seeds (training noise) and the
group bootstrap of the seed-averaged per-photo difference (which photos were drawn). It is called
real only when both exclude 0.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skinlesion.core.errors import DataError
from skinlesion.reports.metrics import Bootstrap
from skinlesion.reports.paired import bootstrap_mean, paired_difference

TARGETS = ("heldout", "external")


@dataclass
class Scored:
    """One model's predictions on one set of photos (one ``predictions.csv``)."""

    paths: list[str]
    targets: np.ndarray
    probs: np.ndarray
    groups: list[str] | None
    abstained: np.ndarray | None

    @property
    def correct(self) -> np.ndarray:
        return self.probs.argmax(1) == self.targets

    def subset(self, paths: Sequence[str]) -> Scored:
        """The same predictions for ``paths`` only, in that order."""
        where = {p: i for i, p in enumerate(self.paths)}
        idx = [where[p] for p in paths]
        return Scored(
            paths=list(paths),
            targets=self.targets[idx],
            probs=self.probs[idx],
            groups=None if self.groups is None else [self.groups[i] for i in idx],
            abstained=None if self.abstained is None else self.abstained[idx],
        )


def read_predictions(path: Path) -> Scored:
    if not path.is_file():
        raise DataError(f"{path} not found: the run or evaluation behind this cell did not finish")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise DataError(f"{path} holds no predictions")
    names = [k.removeprefix("p_") for k in rows[0] if k.startswith("p_")]
    return Scored(
        paths=[r["path"] for r in rows],
        targets=np.array([names.index(r["true"]) for r in rows]),
        probs=np.array([[float(r[f"p_{c}"]) for c in names] for r in rows]),
        groups=[r["group"] for r in rows] if "group" in rows[0] else None,
        abstained=np.array([r["abstained"] == "1" for r in rows]) if "abstained" in rows[0] else None,
    )


def mean_of(members: Sequence[Scored]) -> Scored:
    """The ensemble of ``members``: mean probabilities on the photos they all scored (no gate)."""
    common = set(members[0].paths).intersection(*(m.paths for m in members[1:]))
    mine = [m.subset([p for p in members[0].paths if p in common]) for m in members]
    first = mine[0]
    return Scored(first.paths, first.targets, np.mean([m.probs for m in mine], axis=0), first.groups, None)


def aligned(a: Scored, b: Scored) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of ``a`` and ``b`` on the photos both scored, in ``a``'s order."""
    where = {p: i for i, p in enumerate(b.paths)}
    keep = [i for i, p in enumerate(a.paths) if p in where]
    return a.correct[keep], b.correct[[where[a.paths[i]] for i in keep]]


def summarise(seeds: dict[int, Scored], options: Bootstrap) -> dict:
    """Accuracy per seed, its seed mean with a group-bootstrap interval, and abstention if known."""
    ordered = [seeds[s] for s in sorted(seeds)]
    first = ordered[0]
    per_photo = np.mean([aligned(first, s)[1] for s in ordered], axis=0)
    out = {
        "n": len(first.paths),
        "acc_by_seed": {s: float(seeds[s].correct.mean()) for s in sorted(seeds)},
        "acc": float(per_photo.mean()),
        "acc_ci": bootstrap_mean(per_photo, first.groups, options),
    }
    if all(s.abstained is not None for s in ordered):
        answered = [s.correct[~s.abstained].mean() if (~s.abstained).any() else np.nan for s in ordered]
        out["abstained"] = float(np.mean([s.abstained.mean() for s in ordered]))
        out["acc_answered"] = float(np.nanmean(answered))
    return out


def difference(arm: dict[int, Scored], base: dict[int, Scored], options: Bootstrap) -> dict:
    """Arm minus baseline on the same photos, paired by seed."""
    seeds = sorted(set(arm) & set(base))
    if not seeds:
        return {}
    pairs = [aligned(arm[s], base[s]) for s in seeds]
    by_seed = np.array([a.mean() - b.mean() for a, b in pairs])
    t = paired_difference(by_seed, 0.0, 1.0, options.level)
    per_photo = np.mean([a.astype(float) - b for a, b in pairs], axis=0)
    boot = bootstrap_mean(per_photo, arm[seeds[0]].groups, options)
    lows, highs = [t["low"], boot[0]], [t["high"], boot[1]]
    verdict = "better" if min(lows) > 0 else "worse" if max(highs) < 0 else "noise"
    return {
        "seeds": seeds,
        "mean": t["mean"],
        "by_seed": by_seed.tolist(),
        "t_ci": [t["low"], t["high"]],
        "bootstrap_ci": boot,
        "verdict": verdict,
    }


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def interval(ci: Sequence[float]) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def markdown(result: dict) -> str:
    """One table per target (held-out source, external folder): arms x held-out sources."""
    lines = [
        "# Leave one source out",
        "",
        f"Regenerate: `{result['command']}`. Seeds {result['seeds']}; each run trains on every "
        "source but the held-out one and is tested on that source's in-class photos, less those "
        "a training source also holds (duplicates, crops, same patient). External = "
        f"`{result['external']}`, which no model trained on, less its copies of any source's photos.",
        "",
        "Accuracy is the mean over seeds, with a 95 % interval that resamples the photos (whole "
        "patients or duplicate groups). Δ is the arm minus the baseline on the same photos, paired "
        "by seed; it is called better or worse only when both the t interval over seeds and the "
        "bootstrap interval over photos exclude 0, otherwise noise.",
    ]
    present = [t for t in TARGETS if any(t in c for a in result["arms"].values() for c in a.values())]
    for target in present:
        title = "the held-out source" if target == "heldout" else "the external folder"
        lines += [
            "",
            f"## On {title}",
            "",
            "| arm | held out | n | acc (seed mean) | 95 % CI | acc by seed | abstained | acc answered "
            "| Δ acc | t CI (seeds) | bootstrap CI | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for arm, by_holdout in result["arms"].items():
            for holdout, cell in by_holdout.items():
                s, d = cell[target]["summary"], cell[target].get("vs_baseline") or {}
                seeds = ", ".join(fmt(v) for v in s["acc_by_seed"].values())
                lines.append(
                    f"| {arm} | {holdout} | {s['n']} | {fmt(s['acc'])} | {interval(s['acc_ci'])} | {seeds} "
                    f"| {fmt(s.get('abstained'))} | {fmt(s.get('acc_answered'))} "
                    f"| {fmt(d.get('mean'), 3) if d else '—'} "
                    f"| {interval(d['t_ci']) if d else '—'} | {interval(d['bootstrap_ci']) if d else '—'} "
                    f"| {d.get('verdict', '—')} |"
                )
    return "\n".join(lines) + "\n"


def baseline_lines(result: dict | None, source: str = "") -> list[str]:
    """The baseline arm of a lodo report as one short table (README, model cards)."""
    if not result:
        return ["Not measured yet: `make lodo` writes it.", ""]
    arm = result["arms"][result["baseline"]]
    lines = [
        f"Leave one source out (`{result['command']}`, seeds {result['seeds']}"
        + (f"; read from `{source}`" if source else "")
        + "): each row trained on every source but the held-out one. Accuracy with a 95 % interval "
        "that resamples patients or duplicate groups; external = the web photos no model trained on, "
        "less their copies of any source's photos.",
        "",
        "| held out | trained on | n held out | acc on held-out source | 95 % CI "
        "| n external | acc external | 95 % CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for holdout, cell in arm.items():
        on = [h for h in arm if h != holdout] or ["the other sources"]
        h, e = cell["heldout"]["summary"], (cell.get("external") or {}).get("summary") or {}
        lines.append(
            f"| {holdout} | {', '.join(on)} | {h['n']} | {fmt(h['acc'])} | {interval(h['acc_ci'])} "
            f"| {e.get('n', '—')} | {fmt(e.get('acc'))} | {interval(e.get('acc_ci') or [None, None])} |"
        )
    return [*lines, ""]
