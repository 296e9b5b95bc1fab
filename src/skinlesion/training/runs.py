"""Runs of other commands in child processes, for the commands that tabulate many runs
(``ablation``, ``lodo``, ``leakage_audit``): each run is an ordinary ``python -m skinlesion.train``
in its own directory, skipped when its ``metrics.json`` is there, so an interrupted table resumes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from skinlesion.core.errors import SkinLesionError

log = logging.getLogger(__name__)


def run_module(module: str, *overrides: str, threads: int | None = None) -> None:
    """``python -m <module> <overrides>``; a failure raises with the command line.

    ``threads``: the child's intra-op threads (``OMP_NUM_THREADS``), for runs side by side.
    """
    cmd = [sys.executable, "-m", module, *overrides]
    log.info("%s", " ".join(cmd))
    env = None if threads is None else os.environ | {"OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, check=False, env=env)
    if done.returncode != 0:
        raise SkinLesionError(f"step failed ({done.returncode}): {' '.join(cmd)}")


def train_once(run_dir: Path, overrides: Sequence[str], output_root: str | Path) -> dict:
    """Train into ``run_dir`` unless it already finished; return its ``metrics.json``.

    ``outputs/latest`` stays on the default run (make evaluate, the model card).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        run_module(
            "skinlesion.train",
            *overrides,
            "link_latest=false",
            f"hydra.run.dir={run_dir}",
            f"paths.output_root={output_root}",
        )
    return json.loads((run_dir / "metrics.json").read_text())


def best_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "best.ckpt"


def evaluate_once(ckpt: Path, out: Path, *overrides: str) -> dict:
    """Score checkpoint ``ckpt`` into ``out`` (``output_dir``) unless done; its ``metrics.json``."""
    out = Path(out)
    if not (out / "metrics.json").is_file():
        run_module("skinlesion.evaluate", f"ckpt_path={ckpt}", f"output_dir={out}", *overrides)
    return json.loads((out / "metrics.json").read_text())
