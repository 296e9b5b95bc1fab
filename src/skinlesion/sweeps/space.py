"""Search spaces in Hydra's sweep grammar, with conditional parameters.

``hydra.sweeper.params`` holds the unconditional space (``choice(...)``, ``interval(...)``,
``tag(log, interval(...))``; a plain value is fixed for every trial). ``hydra.sweeper.conditional``
adds parameters that exist only for some choices::

    regularizer.l1: {if: {regularizer: [l1, elastic]}, suggest: "tag(log, interval(1e-7, 1e-4))"}

so a trial with ``regularizer=none`` never carries a meaningless strength, and TPE models each
strength only on the trials where it applies. The Hydra sweeper and ``python -m skinlesion.sweep_native``
read the same config through this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.errors import HydraException
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import Trial

from skinlesion.core.errors import ConfigError
from skinlesion.sweeps.study import FIXED_ATTR, trial_overrides


@dataclass(frozen=True)
class Conditional:
    """A parameter suggested only when every condition holds (``key`` has one of ``values``)."""

    name: str
    conditions: dict[str, tuple[str, ...]]
    distribution: BaseDistribution

    def applies(self, chosen: Mapping[str, Any]) -> bool:
        return all(str(chosen.get(k)) in values for k, values in self.conditions.items())


def parse_space(
    params: Mapping[str, Any] | None, arguments: Sequence[str] = ()
) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
    """Distributions and fixed values from ``key: expression`` pairs, then command-line overrides;
    the last word on a key wins (``trainer.max_epochs=2`` on the command line fixes it)."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for line in [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments):
        try:
            new_space, new_fixed, _ = create_params_from_overrides([line])
        except (HydraException, ValueError) as e:
            raise ConfigError(f"invalid search space entry {line!r}: {e}") from e
        for key in new_space:
            fixed.pop(key, None)
        for key in new_fixed:
            space.pop(key, None)
        space |= new_space
        fixed |= new_fixed
    return space, fixed


def parse_conditional(spec: Mapping[str, Any] | None) -> list[Conditional]:
    """``{name: {if: {key: [values]}, suggest: <sweep expression>}}`` -> conditionals, in order."""
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    out = []
    for name, entry in (spec or {}).items():
        if not isinstance(entry, Mapping) or set(entry) != {"if", "suggest"}:
            raise ConfigError(
                f"conditional parameter {name}: expected {{if: {{key: [values]}}, suggest: ...}}"
            )
        space, _ = parse_space({name: entry["suggest"]})
        if name not in space:
            raise ConfigError(f"conditional parameter {name}: {entry['suggest']!r} is not a sweep expression")
        conditions = {
            k: tuple(str(v) for v in (vals if isinstance(vals, list | tuple) else [vals]))
            for k, vals in entry["if"].items()
        }
        out.append(Conditional(name, conditions, space[name]))
    return out


def suggest_conditional(trial: Trial, conditionals: Sequence[Conditional], fixed: Mapping[str, Any]) -> None:
    """Suggest each conditional parameter whose conditions hold for this trial's choices (fixed
    values count too: ``model=mobilenet_v2`` on the command line still searches its freezing)."""
    for c in conditionals:
        if c.name not in fixed and c.applies({**fixed, **trial.params}):
            suggest(trial, c.name, c.distribution)


def suggest(trial: Trial, name: str, d: BaseDistribution) -> Any:
    """``trial.suggest_*`` for a parsed distribution (a queued value comes back unchanged)."""
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    raise ConfigError(f"{name}: unsupported distribution {d}")


def design(space: Mapping[str, BaseDistribution], conditionals: Sequence[Conditional]) -> dict[str, str]:
    """A JSON-able fingerprint of the search space, stored in the study to detect a changed one."""
    out = {name: distribution_to_json(d) for name, d in space.items()}
    for c in conditionals:
        when = " and ".join(f"{k} in {list(v)}" for k, v in c.conditions.items())
        out[c.name] = f"{distribution_to_json(c.distribution)} if {when}"
    return out


def configure_trial(
    trial: Trial,
    space: Mapping[str, BaseDistribution],
    conditionals: Sequence[Conditional],
    fixed: Mapping[str, Any],
) -> list[str]:
    """Suggest a trial's parameters (queued values of an interrupted trial come back unchanged)
    and return the Hydra overrides that run it; the fixed values travel in its user attributes."""
    for name, distribution in space.items():
        suggest(trial, name, distribution)
    suggest_conditional(trial, conditionals, fixed)
    trial.set_user_attr(FIXED_ATTR, dict(fixed))
    return trial_overrides(trial.params, fixed)
