"""DDP for real, on the CPU: two gloo processes train one run, and each trial of a multirun.

``trainer=ddp`` re-launches the command for rank 1 (Lightning's script launcher), so these run
``python -m skinlesion.train`` as the user would. Rank 1 leaves its own Hydra log,
``train_ddp_process_1.log``, in the run directory it re-ran; ``metrics.json`` records how many
processes fitted. Only rank 0 calibrates and tests, on one device.
"""

import csv
import json
from pathlib import Path

from tests.helpers import run_cli

DDP_CPU = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",  # trainer=ddp's 16-mixed is bf16 emulation on a CPU: slow, and not the point
    "model=simple_cnn",
    "data.image_size=32",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "trainer.enable_model_summary=false",
]
TIMEOUT = 300  # a rank waiting for a partner that never starts would otherwise hang the suite


def train_ddp(data: Path, outputs: Path, *overrides: str) -> str:
    """``python -m skinlesion.train`` with DDP on two CPU processes; its output, once it succeeded."""
    args = (*DDP_CPU, f"data.root={data}", f"paths.output_root={outputs}", *overrides)
    r = run_cli("skinlesion.train", *args, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout + r.stderr


def ranks_ran_here(run: Path) -> None:
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["world_size"] == 2, summary
    assert (run / "train_ddp_process_1.log").is_file(), sorted(p.name for p in run.iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_one_run_on_two_cpu_processes(tmp_path, synthetic_root):
    outputs, run = tmp_path / "outputs", tmp_path / "outputs" / "ddp-run"
    assert "distributed_backend=gloo" in train_ddp(synthetic_root, outputs, f"hydra.run.dir={run}")
    ranks_ran_here(run)
    # evaluation ran once, on rank 0 alone, over the whole test split (not a shard per rank)
    (manifest,) = (outputs / "prepared").glob("*/manifest.csv")
    with open(manifest, newline="") as fh:
        n_test = sum(row["split"] == "test" for row in csv.DictReader(fh))
    with open(run / "eval" / "predictions.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == n_test > 0
    assert json.loads((run / "metrics.json").read_text())["test/n"] == n_test
    assert (run / "train.log").read_text().count(f"run {run}:") == 1
    assert f"run {run}:" not in (run / "train_ddp_process_1.log").read_text()
    assert (outputs / "latest").resolve() == run.resolve()  # a main-path run


def test_each_trial_of_a_multirun_trains_on_two_processes(tmp_path, synthetic_root):
    outputs, sweep = tmp_path / "outputs", tmp_path / "outputs" / "multirun" / "sweep"
    main_run = outputs / "main-run"
    main_run.mkdir(parents=True)
    (outputs / "latest").symlink_to("main-run")
    # two trials: the second must start its own rank 1 after the first one's has gone
    train_ddp(synthetic_root, outputs, "--multirun", "seed=1,2", "evaluate=false", f"hydra.sweep.dir={sweep}")
    for job in ("0", "1"):
        ranks_ran_here(sweep / job)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]  # no sweep in a sweep
    assert (outputs / "latest").resolve() == main_run.resolve()  # trials never move it
