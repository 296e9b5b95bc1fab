"""Shared fixtures: tiny synthetic image folders, a small real-data slice, composed configs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

from skinlesion.core.paths import CONF_DIR, default_data_root
from skinlesion.data.datamodule import SkinLesionDataModule

CLASSES = ["Chickenpox", "Measles", "Monkeypox", "Normal"]
COLOURS = {
    "Chickenpox": (200, 60, 60),
    "Measles": (60, 160, 60),
    "Monkeypox": (60, 60, 200),
    "Normal": (200, 180, 140),
}
REAL_ROOT = default_data_root()
PYTHON = os.environ.get("SKINLESION_PYTHON") or shutil.which("python") or "python"


def synthetic_image(colour: tuple[int, int, int], seed: int, size: int = 40) -> Image.Image:
    """A noisy colour field with random blobs: learnable by colour, unique to perceptual hashes."""
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(0, 40, (size, size, 3)) + np.array(colour), 0, 255)
    for _ in range(4):
        y, x = rng.integers(0, size - 8, 2)
        arr[y : y + 8, x : x + 8] = rng.integers(0, 255, 3)
    return Image.fromarray(arr.astype(np.uint8))


def make_class_folders(root: Path, per_class: int = 10, size: int = 40, classes=CLASSES) -> Path:
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            synthetic_image(COLOURS.get(name, (128, 128, 128)), seed=1000 * ci + k, size=size).save(
                root / name / f"{name.lower()}{k}.png"
            )
    return root


def datamodule(root: Path, tmp_path: Path, **kw) -> SkinLesionDataModule:
    """A prepared and set-up DataModule over a synthetic root, with small images."""
    args = dict(
        root=str(root),
        prepared_dir=str(tmp_path / "prepared"),
        class_names=CLASSES,
        image_size=32,
        batch_size=8,
    )
    dm = SkinLesionDataModule(**(args | kw))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def quiet_trainer(**kw) -> L.Trainer:
    """A one-epoch CPU Trainer that writes nothing and prints little."""
    return L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


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
    """Compose a task config the way the CLI does, with outputs under tmp_path."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=[f"paths.output_root={tmp_path / 'outputs'}", *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    return _compose


def pytest_terminal_summary(terminalreporter) -> None:
    """The figure for the reliability report: hostile image inputs the suite tried."""
    from tests.hostile import TALLY

    if TALLY["inputs"]:
        terminalreporter.write_line(
            f"hostile image inputs tried: {TALLY['inputs']} ({TALLY['refused']} refused with "
            f"ImageDecodeError, {TALLY['decoded']} decoded to RGB; any other outcome fails a test)"
        )
