"""``python -m skinlesion.lodo`` (``make lodo``, ``make generalisation-study``): leave one source out.

For each arm of the config, each held-out source and each seed: train on the other sources with
``data.holdout=<source>`` (the held-out source is the run's test split), and score the external
folder. Arms that evaluate another arm's checkpoints differently (``adapt_bn=true``) or average
other arms (an ensemble) run no training. Runs and evaluations already done are skipped, so an
interrupted study resumes. Writes ``<table>.md`` and ``<table>.json`` (``lodo``, ``lodo_study``)
beside the runs (:mod:`skinlesion.reports.heldout`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import ConfigError
from skinlesion.core.task import command
from skinlesion.reports.heldout import (
    TARGETS,
    difference,
    markdown,
    mean_of,
    read_predictions,
    summarise,
)
from skinlesion.reports.metrics import Bootstrap
from skinlesion.training.runs import best_checkpoint, evaluate_once, train_once

log = logging.getLogger(__name__)


def check_arms(arms: dict, baseline: str) -> None:
    """Every arm is one of the three kinds, and refers only to arms defined before it."""
    if baseline not in arms:
        raise ConfigError(f"baseline {baseline!r} is not an arm; arms: {list(arms)}")
    seen: list[str] = []
    for name, arm in arms.items():
        kinds = [k for k in ("train", "of", "members") if k in (arm or {})]
        if len(kinds) != 1:
            raise ConfigError(f"arm {name!r} needs exactly one of train, of, members; got {arm!r}")
        refs = [arm["of"]] if "of" in arm else list(arm.get("members", []))
        missing = [r for r in refs if r not in seen]
        if missing or ("members" in arm and len(refs) < 2):
            raise ConfigError(
                f"arm {name!r} refers to {missing or refs}: name two or more arms defined above it"
            )
        seen.append(name)


def external_overrides(cfg: DictConfig) -> list[str] | None:
    if not cfg.external:
        return None
    if not Path(cfg.external).is_dir():
        log.warning("external folder %s not found: only the held-out sources are scored", cfg.external)
        return None
    return [f"folder={Path(cfg.external).resolve()}"]


def run_cell(cfg: DictConfig, arms: dict, name: str, holdout: str, seed: int) -> Path:
    """Train (or evaluate) one arm on one held-out source with one seed; returns its directory,
    whose ``eval/`` and ``eval-external/`` hold the predictions."""
    arm = arms[name]
    cell = Path(cfg.output_dir) / name / holdout / f"seed{seed}"
    external = external_overrides(cfg)
    if "train" in arm:
        overrides = [*cfg.common, *arm["train"], f"data.holdout={holdout}", f"seed={seed}"]
        train_once(cell, overrides, cfg.paths.output_root)
        ckpt, extra = best_checkpoint(cell), []
    elif "of" in arm:
        ckpt, extra = best_checkpoint(run_cell(cfg, arms, arm["of"], holdout, seed)), list(arm["evaluate"])
        evaluate_once(ckpt, cell / "eval", "split=test", *extra)
    else:
        return cell  # an ensemble: read from its members
    if external:
        evaluate_once(ckpt, cell / "eval-external", *external, *extra)
    return cell


def read_cells(cfg: DictConfig, arms: dict, holdouts: list[str], seeds: list[int], targets) -> dict:
    """arm -> holdout -> target -> seed -> :class:`Scored`, each ``predictions.csv`` read once;
    an ensemble from its members' (defined above it, so already read)."""
    cells: dict = {}
    for name, arm in arms.items():
        for holdout in holdouts:
            for target in targets:
                by_seed = cells.setdefault(name, {}).setdefault(holdout, {}).setdefault(target, {})
                for seed in seeds:
                    if "members" in arm:
                        by_seed[seed] = mean_of([cells[m][holdout][target][seed] for m in arm["members"]])
                        continue
                    folder = "eval" if target == "heldout" else "eval-external"
                    cell = Path(cfg.output_dir) / name / holdout / f"seed{seed}"
                    by_seed[seed] = read_predictions(cell / folder / "predictions.csv")
    return cells


def command_line() -> str:
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        name = [] if hc.job.config_name == "lodo" else [f"--config-name {hc.job.config_name}"]
        return " ".join(["python -m skinlesion.lodo", *name, *hc.overrides.task])
    return "python -m skinlesion.lodo"


def leave_one_out(cfg: DictConfig) -> dict:
    arms = OmegaConf.to_container(cfg.arms, resolve=True)
    check_arms(arms, cfg.baseline)
    seeds, holdouts = [int(s) for s in cfg.seeds], list(cfg.holdouts)
    if not seeds or not holdouts:
        raise ConfigError("lodo needs at least one seed and one held-out source")
    for name in arms:
        for holdout in holdouts:
            for seed in seeds:
                run_cell(cfg, arms, name, holdout, seed)
    targets = TARGETS if external_overrides(cfg) else TARGETS[:1]
    options = Bootstrap(level=float(cfg.level))
    scored = read_cells(cfg, arms, holdouts, seeds, targets)
    table: dict = {}
    for name in arms:
        for holdout in holdouts:
            cell = table.setdefault(name, {}).setdefault(holdout, {})
            for target in targets:
                runs, base = scored[name][holdout][target], scored[cfg.baseline][holdout][target]
                cell[target] = {"summary": summarise(runs, options)}
                if name != cfg.baseline:
                    cell[target]["vs_baseline"] = difference(runs, base, options)
    result = {
        "command": command_line(),
        "seeds": seeds,
        "holdouts": holdouts,
        "external": cfg.external,
        "baseline": cfg.baseline,
        "arm_definitions": arms,
        "arms": table,
    }
    out = Path(cfg.output_dir)
    table_name = cfg.get("table") or "lodo"
    write_json(out / f"{table_name}.json", result)
    (out / f"{table_name}.md").write_text(markdown(result))
    print(markdown(result))
    return result


main = command(leave_one_out, "lodo")


if __name__ == "__main__":
    main()
