"""The Hydra sweeper plugin end to end, on a stand-in task (no training): failures, resuming, kills."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from skinlesion.sweeps.study import ERROR_ATTR, is_interrupted, make_storage

APP = Path(__file__).parents[1] / "fixtures" / "sweep_app.py"


def app_env(tmp_path: Path, **extra: str) -> dict:
    return os.environ | {"SWEEP_APP_DIR": str(tmp_path), "PYTHONWARNINGS": "ignore", **extra}


def sweep(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(APP), "--multirun", *args],
        env=app_env(tmp_path, **env),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # Hydra logs to stdout, errors to stderr: one stream to read
        text=True,
        timeout=300,
    )


def trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="app", storage=make_storage(str(tmp_path / "study.db"), None)).trials


def states(tmp_path: Path) -> list[str]:
    return ["INTERRUPTED" if is_interrupted(t) else t.state.name for t in trials(tmp_path)]


def test_failed_trials_are_recorded_and_the_sweep_goes_on(tmp_path):
    r = sweep(tmp_path, "hydra.sweeper.n_trials=5", SWEEP_APP_FAIL="1:error,2:nan,3:fpe")
    assert r.returncode == 0, r.stdout[-3000:]
    found = trials(tmp_path)
    assert [t.state for t in found] == [TrialState.COMPLETE, *[TrialState.FAIL] * 3, TrialState.COMPLETE]
    errors = [t.user_attrs[ERROR_ATTR] for t in found[1:4]]
    assert "ConfigError: job 1: a user error" in errors[0]
    assert "not a finite number" in errors[1]
    assert "FloatingPointError" in errors[2]
    assert found[4].value == pytest.approx(float(found[4].params["x"]))


def test_too_many_failures_stop_the_sweep_with_a_clear_message(tmp_path):
    r = sweep(
        tmp_path,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failure_rate=0.25",
        SWEEP_APP_FAIL="0:error,1:error,2:error",
    )
    assert r.returncode != 0
    assert "2 trials failed, more than max_failure_rate=0.25 of n_trials=4" in r.stdout
    assert len(trials(tmp_path)) == 2


def test_running_again_resumes_the_study_and_repeats_nothing(tmp_path):
    assert sweep(tmp_path, "hydra.sweeper.n_trials=3").returncode == 0
    first = [t.params for t in trials(tmp_path)]
    again = sweep(tmp_path, "hydra.sweeper.n_trials=3")
    assert again.returncode == 0 and "0 of the budget of 3 to run" in again.stdout
    assert [t.params for t in trials(tmp_path)] == first
    more = sweep(tmp_path, "hydra.sweeper.n_trials=5")
    assert more.returncode == 0
    found = trials(tmp_path)
    assert states(tmp_path) == ["COMPLETE"] * 5
    # the reseeded sampler does not replay the first run's random suggestions
    assert len({t.params["x"] for t in found}) == 5
    changed = sweep(tmp_path, "hydra.sweeper.n_trials=6", "x=interval(0,2)")
    assert changed.returncode != 0
    assert "created with another search space (differs in: x)" in changed.stdout
    assert len(trials(tmp_path)) == 5


def test_a_grid_runs_every_combination_once(tmp_path):
    r = sweep(tmp_path, "hydra.sweeper.grid=true", "hydra.sweeper.n_trials=6", "x=choice(0.25,0.75)")
    assert r.returncode == 0, r.stdout[-3000:]
    assert sorted((t.params["x"], t.params["kind"]) for t in trials(tmp_path)) == [
        (x, k) for x in (0.25, 0.75) for k in ("a", "b", "c")
    ]


def wait_for_running(tmp_path: Path, number: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            found = trials(tmp_path)
        except KeyError:  # the sweep has not created its study yet
            continue
        if len(found) > number and found[number].state == TrialState.RUNNING:
            return
    raise AssertionError(f"trial {number} never started")


def test_killed_sweep_resumes_with_only_the_remaining_trials(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(APP), "--multirun", "hydra.sweeper.n_trials=4"],
        env=app_env(tmp_path, SWEEP_APP_HANG="2"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_running(tmp_path, 2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert states(tmp_path) == ["COMPLETE", "COMPLETE", "RUNNING"]
    killed = trials(tmp_path)[2].params
    time.sleep(3.5)  # the heartbeat (every 1 s) goes stale after 2 s
    r = sweep(tmp_path, "hydra.sweeper.n_trials=4")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "trial 2 was interrupted" in r.stdout
    found = trials(tmp_path)
    assert states(tmp_path) == ["COMPLETE", "COMPLETE", "INTERRUPTED", "COMPLETE", "COMPLETE"]
    assert found[3].params == killed  # the killed configuration ran again, first
    resumed = max((tmp_path / "multirun").iterdir())
    assert sorted(p.name for p in resumed.iterdir() if p.is_dir()) == ["0", "1"]  # 2 jobs, not 4
