"""``python -m skinlesion.leakage_audit`` (``make leakage-audit``): the published protocol beside ours.

The published MSID papers split at random, file by file (duplicates and near-duplicates may sit in
train and test at once); this project keeps every duplicate group on one side
(``data.split.grouped``). For each seed the default recipe trains under both protocols, each seed
on its own split (``data.split.seed=<seed> seed=<seed>``), into
``<output_dir>/<protocol>/seed<k>/``; a finished run is read back, not trained again. The table
(``leakage_audit.md`` and ``.json``) gives each protocol's test scores, how many test images have a
twin in train (counted from the very manifest each run trained on), and the paired per-seed
difference random - grouped with its t interval: how much the grouping changes the score, and
where the project stands on the published papers' own terms.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import ConfigError, DataError
from skinlesion.core.task import command
from skinlesion.data.manifest import read_manifest
from skinlesion.reports.paired import paired_difference
from skinlesion.training.runs import train_once

log = logging.getLogger(__name__)
PROTOCOLS = {"random": "false", "grouped": "true"}  # name -> data.split.grouped
QUIET = ("callbacks.progress_bar=null", "trainer.enable_model_summary=false")
METRICS = {"test/acc": "acc", "test/f1_macro": "f1_macro"}


def find_manifest(prepared_dir: Path, sha256: str) -> Path:
    """The prepared manifest a run trained on, found by the SHA-256 its ``metrics.json`` records."""
    for report in sorted(Path(prepared_dir).glob("*/report.json")):
        if json.loads(report.read_text()).get("manifest_sha256") == sha256:
            return report.with_name("manifest.csv")
    raise DataError(
        f"no prepared manifest with SHA-256 {sha256[:12]} under {prepared_dir}: was it prepared again "
        "since the run, or elsewhere (set prepared_dir=...)?"
    )


def twins_in_train(rows: list[dict[str, str]], class_names: list[str]) -> dict[str, int]:
    """Sizes of train and test, and how many test images have an exact copy (same SHA-256) or any
    member of their duplicate group (exact, near or crop copy; a patient's other photo) in train."""
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test" and r["label"] in class_names]
    shas, groups = {r["sha256"] for r in train}, {r["group"] for r in train}
    return {
        "n_train": len(train),
        "n_test": len(test),
        "test_exact_in_train": sum(r["sha256"] in shas for r in test),
        "test_group_in_train": sum(r["group"] in groups for r in test),
    }


def run_protocol(cfg: DictConfig, protocol: str, seed: int) -> dict:
    """Train (unless finished) one protocol at one seed; its test scores and its leak counts."""
    run_dir = Path(cfg.output_dir) / protocol / f"seed{seed}"
    overrides = [*QUIET, *cfg.common, f"data.split.grouped={PROTOCOLS[protocol]}"]
    metrics = train_once(
        run_dir, [*overrides, f"data.split.seed={seed}", f"seed={seed}"], cfg.paths.output_root
    )
    manifest = find_manifest(Path(cfg.prepared_dir), metrics["data_manifest_sha256"])
    class_names = json.loads(manifest.with_name("report.json").read_text())["class_names"]
    row = {"seed": seed, "run_dir": str(run_dir), **{k: metrics.get(k) for k in METRICS}}
    return row | twins_in_train(read_manifest(manifest), class_names)


def values(rows: list[dict], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)


def summarise(rows: list[dict]) -> dict:
    """Mean and sample sd over the seeds of the test scores; mean, min and max of the counts."""
    out: dict = {"seeds": len(rows)}
    for key, name in METRICS.items():
        v = values(rows, key)
        sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out[name] = {"mean": float(v.mean()), "sd": sd} if len(v) else None
    for key in ("n_test", "test_exact_in_train", "test_group_in_train"):
        v = values(rows, key)
        out[key] = {"mean": float(v.mean()), "min": int(v.min()), "max": int(v.max())}
    return out


def differences(runs: dict[str, list[dict]], level: float) -> dict:
    """Paired per-seed random - grouped of each test score, with the corrected resampled t interval
    of :func:`skinlesion.reports.paired.paired_difference` (``n_test / n_train``): each seed is a new
    split of the same images, so the seeds' training sets overlap and a plain t would be too narrow."""
    grouped = {r["seed"]: r for r in runs["grouped"]}
    pairs = [(r, grouped[r["seed"]]) for r in runs["random"] if r["seed"] in grouped]
    everything = [row for rows in runs.values() for row in rows]
    n_test, n_train = values(everything, "n_test").mean(), values(everything, "n_train").mean()
    out: dict[str, dict | None] = {}
    for key, name in METRICS.items():
        diffs = np.array([a[key] - b[key] for a, b in pairs if None not in (a.get(key), b.get(key))])
        if not len(diffs):
            out[name] = None
            continue
        d = paired_difference(diffs, n_test, n_train, level)
        out[name] = {k: None if math.isnan(v) else v for k, v in d.items()} | {"n": len(diffs)}
    return out


def fmt_counts(c: dict) -> str:
    spread = "" if c["min"] == c["max"] else f" ({c['min']}–{c['max']})"
    return f"{c['mean']:.1f}{spread}"


def fmt_diff(d: dict | None, pct: int) -> str:
    if d is None:
        return "—"
    if d["n"] < 2:
        return f"{d['mean']:+.3f} (one seed: no interval)"
    noise = "includes 0: noise" if d["low"] <= 0 <= d["high"] else "excludes 0"
    return f"{d['mean']:+.3f} ({pct} % CI {d['low']:+.3f} – {d['high']:+.3f}; {noise})"


def markdown(result: dict) -> str:
    pct = round(100 * result["level"])
    lines = [
        "# Leakage audit: the published MSID protocol beside the project's grouped split",
        "",
        "The default recipe, trained and tested per seed under two splits of the same data (80/10/10, "
        "stratified by class; each seed a new split and a new training seed):",
        "",
        "- **random**: file by file, as the published MSID papers split: exact and near-duplicates "
        "may sit in train and test at once (`data.split.grouped=false`);",
        "- **grouped**: the project's split: a duplicate group never straddles train, val and test.",
        "",
        "| protocol | seeds | test acc mean ± sd | test macro-F1 mean ± sd | test images | "
        "with an exact copy in train | with a duplicate (exact or near) in train |",
        "|---" * 7 + "|",
    ]
    for name, s in result["summary"].items():
        scores = [f"{s[m]['mean']:.3f} ± {s[m]['sd']:.3f}" if s[m] else "—" for m in METRICS.values()]
        counts = [fmt_counts(s[k]) for k in ("n_test", "test_exact_in_train", "test_group_in_train")]
        lines.append(f"| {name} | {s['seeds']} | " + " | ".join(scores + counts) + " |")
    d = result["difference"]
    lines += [
        "",
        f"Paired per-seed difference random − grouped: accuracy {fmt_diff(d['acc'], pct)}; "
        f"macro-F1 {fmt_diff(d['f1_macro'], pct)}.",
        "",
        "A difference whose interval includes 0 is noise: these seeds cannot tell the protocols apart. "
        "The interval is the corrected resampled t interval (Nadeau & Bengio, 2003) over the seeds, "
        "wider than a plain paired t interval because the seeds' training sets overlap. sd: sample "
        "standard deviation over the seeds. Counts: mean over the seeds (min–max), read from the "
        "manifest each run trained on.",
        "",
        "| seed | random acc | grouped acc | random macro-F1 | grouped macro-F1 | "
        "random: test images with a twin in train |",
        "|---" * 6 + "|",
    ]
    by_seed = {p: {r["seed"]: r for r in rows} for p, rows in result["runs"].items()}
    for seed in result["seeds"]:
        r, g = by_seed["random"].get(seed, {}), by_seed["grouped"].get(seed, {})
        cells = [r.get("test/acc"), g.get("test/acc"), r.get("test/f1_macro"), g.get("test/f1_macro")]
        twins = r.get("test_group_in_train")
        lines.append(
            f"| {seed} | "
            + " | ".join("—" if c is None else f"{c:.3f}" for c in cells)
            + f" | {'—' if twins is None else twins} |"
        )
    if result["published"]:
        cited = ", ".join(f"{k} {v:.2%}" for k, v in result["published"].items())
        lines += [
            "",
            f"For context only: published MSID accuracies ({cited}, as cited in docs/experiments.md) "
            "come from the papers' own splits, which do not group near-duplicates: not these splits, "
            "seeds or recipe. On their terms, compare them with the random row.",
        ]
    common = " ".join(result["common"]) or "(none)"
    lines += ["", f"Common overrides: `{common}`. Regenerate: `make leakage-audit`.", ""]
    return "\n".join(lines)


def leakage_audit(cfg: DictConfig) -> dict:
    if not cfg.seeds:
        raise ConfigError("seeds= names no seed; e.g. seeds=[1,2,3,4,5]")
    runs: dict[str, list[dict]] = {p: [] for p in PROTOCOLS}
    for seed in cfg.seeds:
        for protocol in PROTOCOLS:
            runs[protocol].append(run_protocol(cfg, protocol, int(seed)))
    result = {
        "seeds": [int(s) for s in cfg.seeds],
        "common": list(cfg.common),
        "level": cfg.level,
        "runs": runs,
        "summary": {p: summarise(rows) for p, rows in runs.items()},
        "difference": differences(runs, cfg.level),
        "published": OmegaConf.to_container(cfg.published) if cfg.published else {},
    }
    out = Path(cfg.output_dir)
    write_json(out / "leakage_audit.json", result)
    text = markdown(result)
    (out / "leakage_audit.md").write_text(text)
    print(text)
    return result


main = command(leakage_audit, "leakage_audit")


if __name__ == "__main__":
    main()
