"""The Hydra sweeper plugin end to end, on a stand-in task (no training): failures, resuming, kills,
a grid, two workers through the joblib launcher, and a PostgreSQL study."""

import json
import os
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from skinlesion.sweeps.study import ERROR_ATTR, make_storage, state_name
from tests.postgres import throwaway_postgres

APP = Path(__file__).parents[1] / "fixtures" / "sweep_app.py"
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]


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


def trials(tmp_path: Path, storage: str | None = None) -> list[optuna.trial.FrozenTrial]:
    rdb = make_storage(storage or str(tmp_path / "study.db"))
    return optuna.load_study(study_name="app", storage=rdb).trials


def states(tmp_path: Path, storage: str | None = None) -> list[str]:
    return [state_name(t) for t in trials(tmp_path, storage)]


def launched(r: subprocess.CompletedProcess) -> int:
    """Jobs the run launched, from Hydra's log (the basic launcher's and joblib's lines alike)."""
    return sum(
        " is launching " in line or "Launching 1 jobs locally" in line for line in r.stdout.splitlines()
    )


def test_failed_trials_are_recorded_and_do_not_use_up_the_budget(tmp_path):
    r = sweep(tmp_path, "hydra.sweeper.n_trials=3", SWEEP_APP_FAIL="1:error,2:nan,3:fpe")
    assert r.returncode == 0, r.stdout[-3000:]
    found = trials(tmp_path)
    assert states(tmp_path) == ["COMPLETE", "FAIL", "FAIL", "FAIL", "COMPLETE", "COMPLETE"]
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
    assert launched(again) == 0 and [t.params for t in trials(tmp_path)] == first
    more = sweep(tmp_path, "hydra.sweeper.n_trials=5")
    assert more.returncode == 0 and launched(more) == 2
    assert states(tmp_path) == ["COMPLETE"] * 5
    # the seeded sampler is reseeded by the trials so far: no replay of the first run's suggestions
    assert len({(t.params["x"], t.params["kind"]) for t in trials(tmp_path)}) == 5
    changed = sweep(tmp_path, "hydra.sweeper.n_trials=6", "x=interval(0,2)")
    assert changed.returncode != 0
    assert "created with another search space (differs in: x)" in changed.stdout
    assert len(trials(tmp_path)) == 5


def test_a_resumed_grid_runs_every_combination_once(tmp_path):
    grid = ["hydra/sweeper/sampler=grid", "x=choice(0.25,0.75)"]
    assert sweep(tmp_path, *grid, "hydra.sweeper.n_trials=4").returncode == 0
    r = sweep(tmp_path, *grid, "hydra.sweeper.n_trials=20")  # capped at the 6 points of the grid
    assert r.returncode == 0, r.stdout[-3000:]
    assert launched(r) == 2 and "the grid has 6 points" in r.stdout
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
    assert "2 complete, 1 interrupted, 1 waiting; 2 of the budget of 4 to run" in r.stdout
    found = trials(tmp_path)
    assert states(tmp_path) == ["COMPLETE", "COMPLETE", "INTERRUPTED", "COMPLETE", "COMPLETE"]
    assert found[3].params == killed  # the killed configuration ran again, first
    resumed = max((tmp_path / "multirun").iterdir())
    assert sorted(p.name for p in resumed.iterdir() if p.is_dir()) == ["0", "1"]  # 2 jobs, not 4


def overlapping(spans: list[list[float]]) -> bool:
    """Two jobs in different processes whose time spans overlap."""
    return any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a, b in combinations(spans, 2))


def test_two_workers_run_trials_side_by_side_through_joblib(tmp_path):
    r = sweep(tmp_path, *JOBLIB, "hydra.sweeper.n_trials=4", SWEEP_APP_SLEEP="1.5")
    assert r.returncode == 0, r.stdout[-3000:]
    assert states(tmp_path) == ["COMPLETE"] * 4
    spans = [json.loads(p.read_text()) for p in (tmp_path / "spans").glob("*.json")]
    assert len(spans) == 4 and overlapping(spans)
    run = max((tmp_path / "multirun").iterdir())
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]


@pytest.fixture(scope="module")
def postgres_url():
    with throwaway_postgres() as url:
        yield url


def test_a_postgresql_study_is_shared_and_resumed_by_two_workers(tmp_path, postgres_url):
    args = [*JOBLIB, f"hydra.sweeper.storage='{postgres_url}'", "hydra.sweeper.n_trials=4"]
    r = sweep(tmp_path, *args, SWEEP_APP_SLEEP="0.5")
    assert r.returncode == 0, r.stdout[-3000:]
    spans = [json.loads(p.read_text()) for p in (tmp_path / "spans").glob("*.json")]
    assert len(spans) == 4 and overlapping(spans)
    first = [t.params for t in trials(tmp_path, postgres_url)]
    again = sweep(tmp_path, *args)
    assert again.returncode == 0 and launched(again) == 0, again.stdout[-3000:]
    assert states(tmp_path, postgres_url) == ["COMPLETE"] * 4
    assert [t.params for t in trials(tmp_path, postgres_url)] == first
