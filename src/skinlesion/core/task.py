"""What every ``python -m skinlesion.<task>`` shares: one Hydra entry point, and clear one-line errors
instead of tracebacks."""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from skinlesion.core.errors import SkinLesionError
from skinlesion.core.paths import CONF_DIR

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


# OSErrors the user can fix: a full disk or read-only file system, missing permissions, a bad path.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR}
WHERE_TO = "set paths.output_root (or hydra.run.dir) to a writable directory with free space"


def fail(cfg: DictConfig, message: str) -> NoReturn:
    print(f"skinlesion {cfg.get('task_name', '')}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def unwritable_reason(directory: Path) -> str | None:
    """Why ``directory`` could not be created and written, judged from its nearest existing ancestor."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


class OutputDirCheck(Callback):
    """Hydra callback: refuse an unusable run directory in one line, before Hydra fails on it."""

    def _check(self, config: DictConfig, key: str) -> None:
        try:
            directory = Path(str(config.hydra[key].dir))
        except OmegaConfBaseException:
            return  # unresolvable here: leave it to Hydra
        if reason := unwritable_reason(directory):
            fail(config, f"cannot create the run directory {directory}: {reason}; {WHERE_TO}")

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "sweep")


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
        fail(cfg, message)
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS | PATH_ERRNOS or in_multirun():
            raise
        hint = WHERE_TO if e.errno in STORAGE_ERRNOS else "check the path and its permissions"
        fail(cfg, f"{e.strerror}: {e.filename or 'an output file'}; {hint}")


# What a config may name as a ``_target_`` (Hydra 1.4 warns on anything instantiated without such a
# list, and 1.5 refuses it): the project's classes, optimizers and schedulers, Lightning's callbacks
# and loggers, Optuna's samplers and pruners, and the handlers of Hydra's job logging.
EXECUTION_WHITELIST = ("skinlesion.*", "torch.optim.*", "lightning.pytorch.*", "optuna.*", "logging.*")
# Your own callbacks or models: SKINLESION_TRUSTED_TARGETS="mypkg.*,other.Cls" (set by you, never by a
# config file, which is what the whitelist guards against).
TRUSTED_TARGETS_ENV = "SKINLESION_TRUSTED_TARGETS"


def execution_whitelist() -> tuple[str, ...]:
    """The project's whitelist plus the targets the user trusts in ``$SKINLESION_TRUSTED_TARGETS``."""
    extra = os.environ.get(TRUSTED_TARGETS_ENV, "")
    return EXECUTION_WHITELIST + tuple(t.strip() for t in extra.split(",") if t.strip())


def command(task: Callable[[DictConfig], T], config_name: str) -> Callable[[], T]:
    """The entry point of ``python -m skinlesion.<config_name>``: compose ``conf/<config_name>.yaml``
    (plus the command line) and run ``task`` through :func:`run_task`.

    Usage, at the bottom of a command module: ``main = command(evaluate, "evaluate")``.
    """

    def main(cfg: DictConfig) -> T:
        return run_task(task, cfg)

    main.__module__ = f"skinlesion.{config_name}"  # Hydra names the job (and its log file) after it
    main.__doc__ = task.__doc__
    return hydra.main(
        config_path=str(CONF_DIR), config_name=config_name, execution_whitelist=execution_whitelist()
    )(main)
