"""``python -m skinlesion.ablation`` (``make ablation``): what each training technique adds.

Each variant in ``conf/ablation.yaml`` is a list of ``train`` overrides; every variant x seed runs
in its own directory (a finished one is skipped, so an interrupted ablation resumes), its best
checkpoint is also scored on the external folder, and the table is written as markdown and JSON.
Choose by the validation column: the test split is reported, never tuned on.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from skinlesion.core.artifacts import write_json
from skinlesion.core.task import command
from skinlesion.training.runs import best_checkpoint, evaluate_once, train_once

log = logging.getLogger(__name__)
COLUMNS = {
    "val/f1_macro_best": "val macro-F1",
    "test/acc": "test acc",
    "test/f1_macro": "test macro-F1",
    "folder/acc": "external acc",
    "fit_seconds": "fit s",
}


def run_variant(cfg: DictConfig, name: str, overrides: list[str], seed: int) -> dict:
    run_dir = Path(cfg.output_dir) / name / f"seed{seed}"
    metrics = train_once(run_dir, [*cfg.common, *overrides, f"seed={seed}"], cfg.paths.output_root)
    if cfg.external and Path(cfg.external).is_dir():
        metrics |= evaluate_once(
            best_checkpoint(run_dir), run_dir / "eval-external", f"folder={cfg.external}"
        )
    return metrics


def table(results: dict[str, list[dict]], baseline: str) -> str:
    def mean(rows: list[dict], key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return statistics.fmean(values) if values else None

    head = "| variant | seeds | " + " | ".join(COLUMNS.values()) + " | Δ val F1 | Δ test F1 |"
    lines = [head, "|---" * (len(COLUMNS) + 4) + "|"]
    base = results.get(baseline, [])
    for name, rows in results.items():
        cells = []
        for key in COLUMNS:
            m = mean(rows, key)
            cells.append("—" if m is None else (f"{m:.0f}" if key == "fit_seconds" else f"{m:.3f}"))
        deltas = []
        for key in ("val/f1_macro_best", "test/f1_macro"):
            m, b = mean(rows, key), mean(base, key)
            deltas.append("—" if name == baseline or m is None or b is None else f"{m - b:+.3f}")
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells + deltas) + " |")
    return "\n".join(lines) + "\n"


def ablation(cfg: DictConfig) -> dict:
    variants = OmegaConf.to_container(cfg.variants, resolve=True)
    only = set(cfg.only) if cfg.only else set(variants)
    results: dict[str, list[dict]] = {}
    for name, overrides in variants.items():
        if name in only:
            results[name] = [run_variant(cfg, name, list(overrides), s) for s in cfg.seeds]
    out = Path(cfg.output_dir)
    write_json(out / "ablation.json", results)
    text = table(results, cfg.baseline)
    common = " ".join(cfg.common) or "(none)"
    (out / "ablation.md").write_text(
        f"# Ablation\n\nCommon overrides: `{common}`; seeds {list(cfg.seeds)}; external = `{cfg.external}`.\n"
        "Regenerate: `make ablation`. Choose by val macro-F1; test is reported, not tuned on.\n\n" + text
    )
    print(text)
    return results


main = command(ablation, "ablation")


if __name__ == "__main__":
    main()
