"""Run directories: atomic writes, provenance (versions, git commit, data hash), ``outputs/latest``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import secrets
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePath
from typing import BinaryIO

from skinlesion.core.paths import project_root

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


TMP_INFIX = ".partial-"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file so that readers see the old content or the whole new one, never a part.

    ``write`` fills a temporary file in the same directory; it is flushed to disk and renamed over
    ``path`` only when complete. A crash, a kill or a full disk leaves the previous file intact and
    no temporary file behind (except after SIGKILL: ``.<name>.partial-*`` files are then garbage).
    OSError propagates; callers turn it into their own error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_INFIX}{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like open()
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable; not possible everywhere
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def write_json(path: Path, obj) -> Path:
    """Write JSON atomically: a crash never leaves a half-written file in place of a good one."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str:
    return _git("rev-parse", "HEAD") or "unknown"


def git_dirty() -> bool | None:
    """Whether tracked files differ from the commit (the commit alone does not name the code)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


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
        "git_dirty": git_dirty(),
        "command": " ".join(sys.argv),
        "data_manifest_sha256": manifest_sha256,
    }


def record_run(run_dir: Path, manifest_sha256: str | None, resumed_from: str | None = None) -> dict:
    """Write ``run_info.json``; a resume keeps the original record and appends to its ``resumes``."""
    path = Path(run_dir) / "run_info.json"
    info = provenance(manifest_sha256)
    if resumed_from is not None and path.is_file():
        first = json.loads(path.read_text())
        code = ("packages", "git_commit", "git_dirty", "python")  # what could make the result differ
        changed = [k for k in code if first.get(k) != info[k]]
        resume = {k: info[k] for k in ("command", *code)}
        if changed:
            logging.getLogger(__name__).warning(
                "resuming with a different %s than the run started with: the result may differ "
                "from an uninterrupted run (see %s)",
                "/".join(changed),
                path,
            )
        resume |= {"from": resumed_from, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        first.setdefault("resumes", []).append(resume)
        info = first
    write_json(path, info)
    return info


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies strictly below ``root`` (links resolved)."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return path != root and path.is_relative_to(root)


def link_latest(output_root: Path, run_dir: Path, *, outside: bool = False) -> Path | None:
    """Point ``<output_root>/latest`` at the run (relative link), replacing the old link atomically.

    A run directory that is not inside ``output_root`` is linked only with ``outside=True`` (the
    user asked for it); otherwise, or when the link cannot be written, the old link stays and the
    result is None.
    """
    output_root, run_dir = Path(output_root).resolve(), Path(run_dir).resolve()
    if not (outside or is_inside(run_dir, output_root)):
        return None
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


def run_name(checkpoint: str | None) -> str | None:
    """The run a checkpoint came from, without the server's directories: the run directory below
    the last ``outputs`` folder (``2026-11-25/10-22-48``, ``cv/<date>/<time>/fold0``), else the run
    directory's own name."""
    if not checkpoint:
        return None
    path = PurePath(checkpoint)
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    parts = run.parts
    below = len(parts) - parts[::-1].index("outputs") if "outputs" in parts else len(parts) - 1
    return "/".join(parts[below:]) or None
