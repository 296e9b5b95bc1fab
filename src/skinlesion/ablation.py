"""``python -m skinlesion.ablation`` (``make ablation``): what each training technique adds.

Each variant in ``conf/ablation.yaml`` is a list of ``train`` overrides; every variant x seed runs
in its own directory (a finished one is skipped, so an interrupted ablation resumes), its best
checkpoint is also scored on the external folder, and the table is written as markdown and JSON.
Choose by the validation column: the test split is reported, never tuned on.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import SkinLesionError
from skinlesion.core.task import command

log = logging.getLogger(__name__)
COLUMNS = {
    "val/f1_macro_best": "val macro-F1",
    "test/acc": "test acc",
    "test/f1_macro": "test macro-F1",
    "folder/acc": "external acc",
    "fit_seconds": "fit s",
}


def run_module(module: str, *overrides: str) -> None:
    cmd = [sys.executable, "-m", module, *overrides]
    log.info("%s", " ".join(cmd))
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise SkinLesionError(f"ablation step failed ({done.returncode}): {' '.join(cmd)}")


def run_variant(cfg: DictConfig, name: str, overrides: list[str], seed: int) -> dict:
    run_dir = Path(cfg.output_dir) / name / f"seed{seed}"
    if not (run_dir / "metrics.json").is_file():
        run_module(
            "skinlesion.train",
            *cfg.common,
            *overrides,
            f"seed={seed}",
            "link_latest=false",  # outputs/latest stays on the default run (make evaluate, model card)
            f"hydra.run.dir={run_dir}",
            f"paths.output_root={cfg.paths.output_root}",
        )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    external = run_dir / "eval-external" / "metrics.json"
    if cfg.external and Path(cfg.external).is_dir() and not external.is_file():
        run_module(
            "skinlesion.evaluate",
            f"ckpt_path={run_dir / 'checkpoints/best.ckpt'}",
            f"folder={cfg.external}",
            f"output_dir={external.parent}",
        )
    if external.is_file():
        metrics |= json.loads(external.read_text())
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
