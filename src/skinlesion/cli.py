"""What every ``python -m skinlesion.<task>`` shares: clear one-line errors instead of tracebacks."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from skinlesion.errors import SkinLesionError

log = logging.getLogger("skinlesion")
T = TypeVar("T")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def root_cause(e: BaseException) -> BaseException:
    while e.__cause__ is not None:
        e = e.__cause__
    return e


def first_user_error(e: BaseException | None) -> SkinLesionError | None:
    """The outermost SkinLesionError in the cause chain: its message is the one written for users."""
    while e is not None and not isinstance(e, SkinLesionError):
        e = e.__cause__
    return e


def run_task(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run a task; a user-fixable error becomes one line on stderr and exit status 2.

    In a multirun the error propagates instead, so that the sweeper records a failed trial and
    goes on with the next one.
    """
    try:
        return task(cfg)
    except (SkinLesionError, InstantiationException, OmegaConfBaseException) as e:
        if in_multirun():
            raise
        cause, user = root_cause(e), first_user_error(e)
        message = str(user) if user is not None else f"{type(cause).__name__}: {cause}"
        if isinstance(e, InstantiationException) and user is None:
            message = f"invalid configuration: {e}"
        print(f"skinlesion {cfg.get('task_name', '')}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
