"""Kill a training process with SIGKILL, resume it, and get the run an uninterrupted one gives.

Also: two runs with the same seed agree exactly on CPU with deterministic algorithms, and a
different seed does not (so the comparisons can fail).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from skinlesion.core.task import TRUSTED_TARGETS_ENV
from skinlesion.training.fit import train
from tests.helpers import make_class_folders

REPO = Path(__file__).resolve().parents[2]
MAX_EPOCHS = 3
COMMON = [
    "model=simple_cnn",
    "data.image_size=32",
    "data.batch_size=8",
    f"trainer.max_epochs={MAX_EPOCHS}",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "seed=7",
]
VOLATILE = {"fit_seconds", "best_checkpoint"}  # wall time, and the absolute path of the run


def start(run_dir: Path, data: Path, *extra: str) -> subprocess.Popen:
    args = [*COMMON, f"data.root={data}", f"paths.output_root={run_dir.parent}", f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(
        [sys.executable, "-m", "skinlesion.train", *args, *extra],
        cwd=REPO,  # so that the subprocess can import tests.integration.stall
        # the stall callback is the test's own: trusted from the environment, as a user's would be
        env=os.environ | {"PYTHONWARNINGS": "ignore", TRUSTED_TARGETS_ENV: "tests.integration.stall.*"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def kill_after_first_epoch(run_dir: Path, data: Path) -> None:
    signal = run_dir.parent / f"{run_dir.name}.stalled"
    proc = start(
        run_dir,
        data,
        "+callbacks.stall._target_=tests.integration.stall.StallInSecondEpoch",
        f"+callbacks.stall.signal_file={signal}",
    )
    deadline = time.monotonic() + 600
    while not signal.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before the kill point: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("training never reached the kill point")
        time.sleep(0.2)
    proc.kill()  # SIGKILL: no handler, no flush, no cleanup
    proc.communicate()
    assert proc.returncode == -9


def checkpoint(run_dir: Path, name: str) -> dict:
    return torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)


def metrics(run_dir: Path) -> dict:
    return {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k not in VOLATILE}


def portable(state, run_dir: Path):
    """Callback state with tensors as exact Python numbers and the run's own path masked."""
    if isinstance(state, torch.Tensor):
        return state.tolist()
    if isinstance(state, dict):
        return {portable(k, run_dir): portable(v, run_dir) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return [portable(v, run_dir) for v in state]
    return state.replace(str(run_dir), "<run>") if isinstance(state, str) else state


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """An uninterrupted run and a run killed in epoch 1 then resumed, side by side (same seed)."""
    base = tmp_path_factory.mktemp("resume")
    data = make_class_folders(base / "data", per_class=12)
    straight, resumed = base / "out" / "straight", base / "out" / "resumed"
    proc = start(straight, data)
    kill_after_first_epoch(resumed, data)
    after_kill = {
        "last": checkpoint(resumed, "last.ckpt"),
        "csv": (resumed / "csv/metrics.csv").read_text(),  # newlines normalised to \n
        "best_bytes": (resumed / "checkpoints/best.ckpt").read_bytes(),
    }
    finish(start(resumed, data, "ckpt_path=last"))
    finish(proc)
    return {"data": data, "straight": straight, "resumed": resumed, "after_kill": after_kill}


@pytest.mark.slow
def test_the_kill_left_a_first_epoch_checkpoint_and_its_log(runs):
    after = runs["after_kill"]
    assert after["last"]["epoch"] == 0 and after["last"]["global_step"] > 0
    assert "\n0," in after["csv"] and "\n1," not in after["csv"]  # epoch 0 logged, epoch 1 not


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_one(runs):
    straight, resumed = runs["straight"], runs["resumed"]
    # the whole metric history, byte for byte: every epoch's train/val metrics, learning rates, test
    history = (straight / "csv/metrics.csv").read_text()
    assert (resumed / "csv/metrics.csv").read_text() == history
    assert [ln.split(",")[0] for ln in history.splitlines()].count(str(MAX_EPOCHS - 1)) >= 2
    # the same number of epochs, the same best score, the same test metrics
    m = metrics(straight)
    assert m["epochs"] == MAX_EPOCHS and "test/f1_macro" in m
    assert metrics(resumed) == m
    # bit-identical final weights, optimizer step count, callback state (early stopping, best score)
    a, b = checkpoint(straight, "last.ckpt"), checkpoint(resumed, "last.ckpt")
    assert_same_weights(a, b)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert portable(a["callbacks"], straight) == portable(b["callbacks"], resumed)
    assert_same_weights(checkpoint(straight, "best.ckpt"), checkpoint(resumed, "best.ckpt"))
    info = json.loads((resumed / "run_info.json").read_text())
    assert len(info["resumes"]) == 1 and info["resumes"][0]["from"].endswith("last.ckpt")
    assert "resumes" not in json.loads((straight / "run_info.json").read_text())


@pytest.mark.slow
def test_same_seed_same_run_in_another_process_and_other_seed_differs(runs, compose_cfg, tmp_path):
    """In-process run versus the subprocess one: identical first-epoch losses and final metrics."""
    straight = runs["straight"]

    def run(name: str, *overrides: str) -> Path:
        cfg = compose_cfg(*COMMON, f"data.root={runs['data']}", *overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / name)
        try:
            train(cfg)
        finally:
            torch.use_deterministic_algorithms(False)  # Lightning leaves it on for the whole process
        return Path(cfg.paths.output_dir)

    same = run("same")
    assert (same / "csv/metrics.csv").read_text() == (straight / "csv/metrics.csv").read_text()
    assert metrics(same) == metrics(straight)

    def first_epoch_loss(run_dir: Path) -> str:
        rows = (run_dir / "csv/metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        col, epoch = header.index("train/loss"), header.index("epoch")
        return next(r.split(",")[col] for r in rows[1:] if r.split(",")[epoch] == "0" and r.split(",")[col])

    other = run("other", "seed=8", "trainer.max_epochs=1", "evaluate=false")
    assert first_epoch_loss(same) == first_epoch_loss(straight)
    assert first_epoch_loss(other) != first_epoch_loss(straight)
