"""``python -m skinlesion.sweep_bench`` (``make sweep-bench``): measure the sweep floors.

- ``floor``: one fresh sweep of ``search`` (optuna_cpu: 8 trials x 2 epochs at 48 px): wall time
  and the load average around it (the machine may be shared).
- ``resume``: the same sweep killed with SIGKILL once ``kill_after`` trials have completed, then the
  same command again: how many jobs the second run launched and how every trial ended.
- ``pruning``: ``python -m skinlesion.sweep_native`` with the pruner and with ``pruner=none`` on the same
  budget: epochs trained, wall time and best val macro-F1, and their ratios.

Every sweep gets a fresh study in ``<output_dir>/bench.db``; results go to ``bench.json`` and
``bench.md`` there, the sweeps' logs beside them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from skinlesion.core.artifacts import write_json
from skinlesion.core.task import command
from skinlesion.sweeps.study import count_states, make_storage

log = logging.getLogger(__name__)


class Bench:
    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.storage = str(self.out / "bench.db")
        self.stamp = datetime.now().strftime("%Y%m%d-%H%M%S")

    def command(self, module: str, study: str, *extra: str) -> list[str]:
        multirun = ["--multirun"] if module == "skinlesion.train" else []
        return [
            sys.executable,
            "-m",
            module,
            *multirun,
            f"hparams_search={self.cfg.search}",
            f"hydra.sweeper.storage={self.storage}",
            f"hydra.sweeper.study_name={study}",
            f"paths.output_root={self.cfg.paths.output_root}",
            *self.cfg.overrides,
            *extra,
        ]

    def start(self, command: list[str], name: str) -> subprocess.Popen:
        log.info("%s: %s", name, " ".join(command[1:]))
        logfile = open(self.out / f"{name}.log", "w")  # noqa: SIM115 -- closed with the process
        return subprocess.Popen(command, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)

    def timed(self, command: list[str], name: str) -> dict:
        load_before, started = os.getloadavg(), time.perf_counter()
        rc = self.start(command, name).wait()
        return {
            "command": " ".join(command[1:]),
            "returncode": rc,
            "wall_s": round(time.perf_counter() - started, 1),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        }

    def trials(self, study: str) -> list[optuna.trial.FrozenTrial]:
        """The study's trials; none while the sweep has not created it yet."""
        try:
            return optuna.load_study(study_name=study, storage=make_storage(self.storage)).trials
        except KeyError:
            return []

    def outcome(self, study: str) -> dict:
        found = self.trials(study)
        values = [t.value for t in found if t.state == TrialState.COMPLETE]
        return {
            "study": study,
            "states": dict(sorted(count_states(found).items())),
            "best_value": max(values) if values else None,
            "epochs_trained": sum(len(t.intermediate_values) or t.user_attrs.get("epochs", 0) for t in found),
        }

    def floor(self) -> dict:
        study = f"floor-{self.stamp}"
        return self.timed(self.command("skinlesion.train", study), study) | self.outcome(study)

    def resume(self) -> dict:
        study, kill_after = f"resume-{self.stamp}", self.cfg.resume.kill_after
        beat = ["hydra.sweeper.heartbeat_interval=5"]
        started = time.perf_counter()
        proc = self.start(self.command("skinlesion.train", study, *beat), f"{study}-killed")
        try:
            while proc.poll() is None:
                time.sleep(2)
                if sum(t.state == TrialState.COMPLETE for t in self.trials(study)) >= kill_after:
                    break
        finally:  # also when this process fails: never leave the sweep running
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        killed_wall = time.perf_counter() - started
        before = self.outcome(study)
        n_before = len(self.trials(study))
        time.sleep(11)  # the heartbeat (every 5 s) goes stale after 10 s
        again = self.timed(self.command("skinlesion.train", study, *beat), f"{study}-resumed")
        return {
            "killed_after_s": round(killed_wall, 1),
            "at_kill": before["states"],
            "resumed": again,
            "jobs_in_resumed_run": len(self.trials(study)) - n_before,
        } | self.outcome(study)

    def pruning(self) -> dict:
        runs = {}
        for pruner in (self.cfg.pruning.pruner, "none"):
            study = f"pruning-{pruner}-{self.stamp}"
            extra = [f"hydra.sweeper.n_trials={self.cfg.pruning.n_trials}", f"pruner={pruner}"]
            command = self.command("skinlesion.sweep_native", study, *extra, *self.cfg.pruning.overrides)
            runs[pruner] = self.timed(command, study) | self.outcome(study)
        pruned, full = runs[self.cfg.pruning.pruner], runs["none"]
        return runs | {
            "epochs_ratio": round(pruned["epochs_trained"] / max(1, full["epochs_trained"]), 3),
            "wall_ratio": round(pruned["wall_s"] / full["wall_s"], 3),
        }


def markdown(results: dict) -> str:
    """bench.json as nested bullet lists, one section per part."""

    def bullets(d: dict, indent: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            if isinstance(v, dict):
                out += [f"{indent}- {k}:", *bullets(v, indent + "  ")]
            else:
                out.append(f"{indent}- {k}: `{v}`")
        return out

    lines = ["# Sweep measurements", "", "Written by `python -m skinlesion.sweep_bench`.", ""]
    for part, r in results.items():
        lines += [f"## {part}", "", *bullets(r), ""]
    return "\n".join(lines)


def bench(cfg: DictConfig) -> dict:
    runner = Bench(cfg)
    parts = ["floor", "resume", "pruning"] if cfg.part == "all" else [cfg.part]
    previous = runner.out / "bench.json"
    results = json.loads(previous.read_text()) if previous.is_file() else {}  # one part at a time adds up
    for part in parts:
        results[part] = getattr(runner, part)()
        log.info("%s: %s", part, results[part])
        write_json(runner.out / "bench.json", results)
        (runner.out / "bench.md").write_text(markdown(results))
    return results


main = command(bench, "sweep_bench")


if __name__ == "__main__":
    main()
