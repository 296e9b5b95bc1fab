"""The sweep behind ``hydra/sweeper=skinlesion_optuna`` (``hparams_search=optuna``).

hydra-optuna-sweeper 1.4 runs ``n_trials`` more trials on every call (so the same command run
again repeats the whole budget), asks and tells outside ``Study.optimize`` (so no heartbeats: a
killed trial stays RUNNING for ever) and checks ``max_failure_rate`` per batch. This subclass keeps
its config, search-space grammar and launcher; its objective (for ``skinlesion.sweeps.loop``,
shared with ``python -m skinlesion.sweep_native``) launches one job per trial, the ``n_jobs``
trials of a batch from Optuna's worker threads at once.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from optuna.trial import Trial

from skinlesion.core.errors import ConfigError
from skinlesion.sweeps.loop import open_sweep, run_sweep
from skinlesion.sweeps.study import OUTPUT_ATTR, objective_value

log = logging.getLogger(__name__)


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(self, heartbeat_interval: int | None = 30, conditional: Any = None, **upstream: Any) -> None:
        super().__init__(**upstream)  # the own fields are read from the config node in sweep()

    def sweep(self, arguments: list[str]) -> None:
        if self.custom_search_space_extender or len(self._get_directions()) != 1:
            raise ConfigError(
                "hydra.sweeper: one objective (val macro-F1); conditional parameters go in "
                "hydra.sweeper.conditional, not custom_search_space"
            )
        search = open_sweep(self.config.hydra.sweeper, arguments)
        lock = threading.Lock()
        n_jobs = self.n_jobs
        if n_jobs > 1 and type(self.launcher).__name__ == "BasicLauncher":
            log.warning("hydra.sweeper.n_jobs=%d: the basic launcher runs one job at a time", n_jobs)
            n_jobs = 1

        def objective(trial: Trial) -> float:
            overrides = search.configure(trial)
            with lock:  # job numbers (and so output folders) stay unique across worker threads
                job, self.job_idx = self.job_idx, self.job_idx + 1
            (ret,) = self.launcher.launch([overrides], initial_job_idx=job)
            record_job(trial, ret)
            return objective_value(trial, lambda: ret.return_value)  # re-raises the job's exception

        run_sweep(search, objective, n_jobs, Path(self.config.hydra.sweep.dir))


def record_job(trial: Trial, ret: JobReturn) -> None:
    """Where the job wrote its run, and how long it trained (from skinlesion.train's metrics)."""
    if ret.hydra_cfg is None:
        return
    output_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
    trial.set_user_attr("job", ret.hydra_cfg.hydra.job.num)
    trial.set_user_attr(OUTPUT_ATTR, str(output_dir))
    if (output_dir / "metrics.json").is_file():
        trial.set_user_attr("epochs", json.loads((output_dir / "metrics.json").read_text()).get("epochs"))
