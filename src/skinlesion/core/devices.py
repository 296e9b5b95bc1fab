"""Where a run trains: one GPU per concurrent sweep trial, and DDP that survives Hydra.

- With G visible GPUs and several trials at once (``hydra/launcher=joblib``), trial ``k`` of a
  sweep trains on GPUs ``[(k mod (G // d)) * d, ...]`` where ``d`` is ``trainer.devices``: with
  one device per trial, GPU ``k mod G``. Trials in one batch have consecutive job numbers, so up
  to ``G // d`` of them never share a GPU.
- Lightning starts DDP ranks > 0 by re-running ``sys.argv`` with ``hydra.run.dir=<run.dir>``.
  Inside ``--multirun`` that would start a second sweep in a new directory, so the ranks are made
  to re-run this one job, in its own directory, on the same GPUs.
- Lightning also leaves the launch's ``LOCAL_RANK``, ``MASTER_PORT``, ... in ``os.environ``; the
  next fit in the same process (the next trial of a sweep) would read them as "the ranks were
  started for me" and wait for ever for ranks nobody starts. They are put back after each fit.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import lightning as L
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import DictConfig, read_write

from skinlesion.core.errors import ConfigError
from skinlesion.core.task import in_multirun

log = logging.getLogger(__name__)

GPU_ACCELERATORS = ("gpu", "cuda", "auto")


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpus_for_job(job_num: int, per_trial: int, n_gpus: int) -> list[int]:
    """The GPU ids of the ``job_num``-th trial when each trial takes ``per_trial`` of ``n_gpus``."""
    if n_gpus < 1 or per_trial < 1:
        raise ValueError(f"need at least one GPU per trial and one GPU, got {per_trial} of {n_gpus}")
    per_trial = min(per_trial, n_gpus)
    first = (job_num % (n_gpus // per_trial)) * per_trial
    return list(range(first, first + per_trial))


def place_trial(trainer_cfg: DictConfig) -> list[int] | None:
    """In a multirun on a machine with several GPUs, pin this trial's ``trainer.devices``.

    Explicit lists, ``-1`` and ``"auto"`` are the user's choice and left alone, as is a CPU run.
    """
    devices, accelerator = trainer_cfg.get("devices", 1), str(trainer_cfg.get("accelerator", "auto"))
    n_gpus = visible_gpus()
    if not in_multirun() or accelerator not in GPU_ACCELERATORS or n_gpus < 2:
        return None
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        return None
    ids = gpus_for_job(HydraConfig.get().job.num, devices, n_gpus)
    trainer_cfg.devices = ids
    log.info("trial %d of the sweep trains on GPU %s", HydraConfig.get().job.num, ids)
    return ids


def trainer_kwargs(trainer_cfg: DictConfig) -> dict:
    """Overrides that make a trainer config valid here: SyncBatchNorm exists only on GPUs."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and visible_gpus() == 0)
    if trainer_cfg.get("sync_batchnorm") and on_cpu:
        log.info("sync_batchnorm switched off: SyncBatchNorm only works on GPUs")
        return {"sync_batchnorm": False}
    return {}


def relaunches_script(trainer: L.Trainer) -> bool:
    return isinstance(getattr(trainer.strategy, "launcher", None), _SubprocessScriptLauncher)


# What Lightning's script launcher writes into os.environ for the ranks it starts.
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def restored_launch_env() -> Iterator[None]:
    """Put the launch variables back as they were, so that the next DDP fit in this process
    starts its own ranks (a rank started by a launcher keeps the values it was given)."""
    before = {name: os.environ.get(name) for name in LAUNCH_ENV}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def multirun_job_as_argv(extra_overrides: Sequence[str]) -> Iterator[None]:
    """In a multirun, make ``sys.argv`` and ``hydra.run.dir`` name this one job (a no-op otherwise)."""
    if not in_multirun():
        yield
        return
    hydra_cfg = HydraConfig.get()
    if "joblib" in str(hydra_cfg.launcher.get("_target_", "")):
        raise ConfigError(
            "trainer.strategy=ddp re-runs the script for every rank, which joblib workers cannot do: "
            "run DDP trials with the basic launcher (one trial at a time on all its GPUs)"
        )
    argv = sys.argv
    sys.argv = [argv[0], *hydra_cfg.overrides.task, *extra_overrides]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv


@contextmanager
def ranks_rerun_this_job(trainer: L.Trainer, extra_overrides: Sequence[str] = ()) -> Iterator[None]:
    """While fitting, make DDP's re-launched ranks run this job (in a multirun: as a single run),
    and afterwards forget the launch, so that a later fit in this process launches its own ranks."""
    if not (relaunches_script(trainer) and trainer.world_size > 1):
        yield
        return
    with restored_launch_env(), multirun_job_as_argv(extra_overrides):
        yield


def leave_process_group() -> None:
    """After a DDP fit: wait for every rank, then dissolve the group, so that rank 0 can calibrate
    and test alone (torchmetrics would otherwise wait for ranks that have already returned)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def single_device_trainer(trainer: L.Trainer) -> L.Trainer:
    """A one-device trainer on rank 0's device, for testing after a DDP fit (not another trial's GPU)."""
    root = trainer.strategy.root_device
    if root.type == "cuda":
        return L.Trainer(
            accelerator="gpu", devices=[root.index or 0], logger=False, enable_progress_bar=False
        )
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
