"""What several test modules share: synthetic images and data roots, composed configs, small
trainers, running a command in another process (as this user or an unprivileged one).

Fixtures live in the conftest.py files; everything a test imports lives here.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

from skinlesion.core.artifacts import TMP_INFIX
from skinlesion.core.paths import CONF_DIR, default_data_root
from skinlesion.data.datamodule import SkinLesionDataModule
from skinlesion.models.classifier import SkinLesionClassifier

CLASSES = ["Chickenpox", "Measles", "Monkeypox", "Normal"]
COLOURS = {
    "Chickenpox": (200, 60, 60),
    "Measles": (60, 160, 60),
    "Monkeypox": (60, 60, 200),
    "Normal": (200, 180, 140),
}
REAL_ROOT = default_data_root()
# The short training every command-line test shares: a small CNN at 48 px on the CPU.
FAST = [
    "model=simple_cnn",
    "data.image_size=48",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
    "trainer.enable_model_summary=false",
]

# In-process training at 32 px for one epoch (tests that call ``train`` directly).
TINY = [
    "model=simple_cnn",
    "data.image_size=32",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


# -- data -----------------------------------------------------------------------------------------


def synthetic_image(colour: tuple[int, int, int], seed: int, size: int = 40) -> Image.Image:
    """A noisy colour field with random blobs: learnable by colour, unique to perceptual hashes."""
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(0, 40, (size, size, 3)) + np.array(colour), 0, 255)
    for _ in range(4):
        y, x = rng.integers(0, size - 8, 2)
        arr[y : y + 8, x : x + 8] = rng.integers(0, 255, 3)
    return Image.fromarray(arr.astype(np.uint8))


def make_class_folders(
    root: Path, per_class: int = 10, size: int = 40, classes=CLASSES, first_seed: int = 0
) -> Path:
    """``per_class`` images per class folder; another ``first_seed`` draws other images (not copies)."""
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            synthetic_image(
                COLOURS.get(name, (128, 128, 128)), seed=first_seed + 1000 * ci + k, size=size
            ).save(root / name / f"{name.lower()}{k}.png")
    return root


def add_duplicates(root: Path) -> None:
    """One exact copy, one JPEG re-encode (near duplicate), one image under two labels."""
    shutil.copy(root / "Measles/measles0.png", root / "Measles/measles_copy.png")
    Image.open(root / "Normal/normal0.png").save(root / "Normal/normal_reencoded.jpg", quality=60)
    shutil.copy(root / "Chickenpox/chickenpox0.png", root / "Monkeypox/monkeypox_mislabelled.png")


NAMES = ["A", "B", "C", "D"]


def random_predictions(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(probs, targets) of a fair classifier over the four ``NAMES``: right more often than not."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), targets] += rng.normal(1.0, 1.0, n)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, targets


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: the stand-in for any code an attacker wants run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def evil_checkpoint(directory: Path) -> tuple[Path, Path]:
    """(checkpoint, marker): a real classifier checkpoint with the payload in its hyper-parameters."""
    model = SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False)
    marker = directory / "pwned"
    ckpt = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams) | {"note": Payload(marker)},
        "datamodule_hyper_parameters": {"root": str(directory), "note": Payload(marker)},
        "pytorch-lightning_version": L.__version__,
        "epoch": 0,
        "global_step": 1,
        "loops": {},
    }
    path = directory / "evil.ckpt"
    torch.save(ckpt, path)
    return path, marker


def partial_files(directory: Path) -> list[str]:
    """What interrupted atomic writes left under ``directory``."""
    return sorted(p.name for p in directory.rglob(f"*{TMP_INFIX}*"))


# -- configs and training -------------------------------------------------------------------------


def compose_task(
    name: str, overrides: list[str], output_dir: Path | None = None, *, with_hydra: bool = False
) -> DictConfig:
    """Compose ``conf/<name>.yaml`` the way the command line does; ``output_dir`` stands in for the
    run directory Hydra would create; ``with_hydra`` keeps the ``hydra`` node (for HydraConfig)."""
    with initialize_config_dir(config_dir=str(CONF_DIR)):
        cfg = compose(name, overrides=overrides, return_hydra_config=with_hydra)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


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


# -- other processes ------------------------------------------------------------------------------


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """``python -m <args>`` in its own process group; on timeout the whole group (DDP ranks,
    workers) is killed and the test fails with the output so far."""
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    cmd = [*prefix, sys.executable, "-m", *args]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True, **pipes) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{' '.join(cmd)} still running after {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


NOBODY = 65534  # uid and gid of nobody/nogroup on Debian and most Linux systems


def as_nobody(call: Callable[[], object]) -> object:
    """``call()`` in a forked child that runs as nobody, so that file permissions hold even when the
    tests run as root (as CI does); its result comes back pickled. Import what ``call`` needs first:
    nobody may not be able to read the interpreter's own files."""
    if os.geteuid() != 0:
        return call()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root for good, answer through the pipe, never return to pytest
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        except OSError as e:
            result: tuple[str, object] = ("skip", f"running as root without the right to become nobody: {e}")
        else:
            try:
                result = ("ok", call())
            except BaseException as e:  # reported to the parent, which fails the test
                result = ("error", repr(e))
        with os.fdopen(write, "wb") as fh:
            pickle.dump(result, fh)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        kind, value = pickle.load(fh)
    os.waitpid(pid, 0)
    if kind == "skip":
        pytest.skip(value)
    if kind == "error":
        raise AssertionError(f"as nobody: {value}")
    return value


def nobody_prefix() -> tuple[str, ...]:
    """A command prefix that runs a process as nobody (empty when not root), or a skip saying why
    none works here.

    Plain ``setpriv`` first; where nobody cannot even read the interpreter (a Python under /root),
    ``setpriv`` keeping only CAP_DAC_READ_SEARCH: it may read and search any file, but writes
    are still checked against nobody's permissions.
    """
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop to nobody")
    plain = (setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    read_all = (*plain, "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search")
    for prefix in (plain, read_all):
        probe = subprocess.run([*prefix, sys.executable, "-c", "import skinlesion"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    pytest.skip(f"running as root and nobody cannot run {sys.executable}, even with read access")
