"""Shared fixtures: tiny synthetic image folders, a small real-data slice, composed configs.

The helpers they use (and that tests import) are in tests/helpers.py.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import hydra.utils
import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from skinlesion.core.task import EXECUTION_WHITELIST
from tests.helpers import (
    CLASSES,
    REAL_ROOT,
    compose_task,
    evil_checkpoint,
    make_class_folders,
)


@pytest.fixture(autouse=True)
def execution_whitelist() -> Iterator[None]:
    """In-process tests instantiate configs under the whitelist the commands run under (core.task)."""
    with hydra.utils.execution_whitelist(EXECUTION_WHITELIST):
        yield


@pytest.fixture
def synthetic_root(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "data", per_class=12)


@pytest.fixture(scope="session")
def real_slice(tmp_path_factory) -> Path:
    """12 real MSID images per class, linked (not copied) into a temporary root."""
    if not REAL_ROOT.is_dir():
        pytest.skip(f"real data not found at {REAL_ROOT}")
    root = tmp_path_factory.mktemp("msid_slice")
    for name in CLASSES:
        (root / name).mkdir()
        files = sorted((REAL_ROOT / name).iterdir())[
            :: max(1, len(list((REAL_ROOT / name).iterdir())) // 12)
        ][:12]
        for f in files:
            (root / name / f.name).symlink_to(f)
    return root


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a task config the way the CLI does: outputs under tmp_path/outputs, and the run
    directory inside them (tmp_path/outputs/run), where the command line would put it."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        outputs = tmp_path / "outputs"
        return compose_task(config_name, [f"paths.output_root={outputs}", *overrides], outputs / "run")

    return _compose


@pytest.fixture
def hydra_job(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Install a composed ``train`` config as the running Hydra job's (what Hydra does before a
    task), by default as a job of a multirun."""

    def _job(*overrides: str, multirun: bool = True) -> DictConfig:
        mode = ["hydra.mode=MULTIRUN"] if multirun else []
        job_dir = f"hydra.runtime.output_dir={tmp_path / 'job'}"
        cfg = compose_task("train", [*mode, job_dir, *overrides], with_hydra=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _job
    HydraConfig.instance().cfg = None


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(checkpoint, marker): a checkpoint whose unpickling would create ``marker``."""
    return evil_checkpoint(tmp_path)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory every user can reach (pytest's own is private to the user running it),
    for tests that act as an unprivileged user."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        yield Path(d)


def pytest_terminal_summary(terminalreporter) -> None:
    """The figure for the reliability report: hostile image inputs the suite tried."""
    from tests.hostile import TALLY

    if TALLY["inputs"]:
        terminalreporter.write_line(
            f"hostile image inputs tried: {TALLY['inputs']} ({TALLY['refused']} refused with "
            f"ImageDecodeError, {TALLY['decoded']} decoded to RGB; any other outcome fails a test)"
        )
