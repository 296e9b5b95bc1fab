"""``python -m skinlesion.sweep_native``: the search of ``hparams_search=...``, with pruning.

The Hydra sweeper hears of a trial only when it ends, so it cannot stop a bad one early. This
entry point runs the same search space against the same study storage in an Optuna loop of its
own: each trial composes ``conf/sweep_native.yaml`` with its parameters, trains in this process, and
reports val macro-F1 after every epoch to the pruner (``pruner=median|hyperband|none``). Trials
run one at a time; start several processes on one storage to run more at once. Trials write to
``<run dir>/trial-<number>/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from optuna.trial import Trial, TrialState

from skinlesion.core.task import command
from skinlesion.sweeps.loop import open_sweep, run_sweep
from skinlesion.sweeps.pruning import OptunaPruning
from skinlesion.sweeps.study import OUTPUT_ATTR, finish_trial
from skinlesion.training.fit import train

log = logging.getLogger(__name__)


def own_override(override: str) -> bool:
    """Overrides that configure this loop rather than a trial (``pruner=...``, ``pruner.x=...``)."""
    return override.lstrip("+~").split("=", 1)[0].split(".", 1)[0] == "pruner"


def run_trial(study: optuna.Study, trial: Trial, overrides: list[str], output_dir: Path) -> TrialState:
    """Compose the trial's config, train it with the pruning callback, and tell the study."""
    attrs = {OUTPUT_ATTR: str(output_dir)}
    try:
        cfg = hydra.compose("sweep_native", overrides=[*overrides, f"paths.output_dir={output_dir}"])
        value = train(cfg, extra_callbacks=[OptunaPruning(trial)])
    except optuna.TrialPruned:
        return finish_trial(study, trial, pruned=True, attrs=attrs)
    except Exception as e:
        return finish_trial(study, trial, error=e, attrs=attrs)
    return finish_trial(study, trial, value, attrs=attrs)


def sweep(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    arguments = [o for o in hydra_cfg.overrides.task if not own_override(o)]
    search = open_sweep(
        hydra_cfg.sweeper,
        arguments,
        pruner=hydra.utils.instantiate(cfg.pruner),
        default_fixed={"hparams_search": hydra_cfg.runtime.choices.get("hparams_search")},
    )
    log.info("pruner: %s", cfg.pruner._target_)
    run_dir = Path(cfg.paths.output_dir)

    def run_batch(trials: list[Trial]) -> list[TrialState]:
        return [
            run_trial(search.study, t, search.configure(t), run_dir / f"trial-{t.number}") for t in trials
        ]

    best = run_sweep(search, run_batch, 1, run_dir)
    return best.value if best else None


main = command(sweep, "sweep_native")


if __name__ == "__main__":
    main()
