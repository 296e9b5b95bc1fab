"""Run directories: atomic JSON, provenance (versions, git commit, data hash), ``outputs/latest``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from skinlesion.paths import project_root

TRACKED_PACKAGES = (
    "skinlesion",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "timm",
    "hydra-core",
    "omegaconf",
    "optuna",
    "numpy",
    "pillow",
)


def write_json(path: Path, obj) -> Path:
    """Write JSON atomically: a crash never leaves a half-written file in place of a good one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(manifest_sha256: str | None = None) -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        "data_manifest_sha256": manifest_sha256,
    }


def link_latest(output_root: Path, run_dir: Path) -> Path | None:
    """Point ``<output_root>/latest`` at the run (relative link), replacing the old link atomically."""
    output_root, run_dir = Path(output_root).resolve(), Path(run_dir).resolve()
    try:
        target = os.path.relpath(run_dir, output_root)
        link = output_root / "latest"
        tmp = output_root / f".latest.{os.getpid()}"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)
        return link
    except OSError:
        return None
