"""Checkpoints: loaded without running pickled code, written atomically.

A ``.ckpt`` is a pickle, and unpickling can call any function the file names. Every load in the
project goes through :func:`load_checkpoint`, :class:`SafeLoading` or :class:`SafeCheckpointIO`,
which all use ``torch.load(weights_only=True)``: only tensors and plain containers are rebuilt, and
a file that asks for anything else is refused with a :class:`CheckpointError` before it can run.
``weights_only=True`` is passed explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` cannot turn
the guard off.

Lightning's own checkpoint writer goes through fsspec, which stages the file in the system temp
directory and moves it into place; across file systems that move is a copy into the target, so a
full disk can leave a truncated ``best.ckpt`` in place of a good one. :class:`SafeCheckpointIO`
writes next to the target, syncs and renames instead (:func:`skinlesion.core.artifacts.atomic_write`).
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _load as lightning_load

from skinlesion.core.artifacts import atomic_write
from skinlesion.core.errors import CheckpointError

log = logging.getLogger(__name__)

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def load_errors(path: str | os.PathLike, what: str = "skinlesion checkpoint") -> Iterator[None]:
    """Turn the many ways a load fails into one CheckpointError that names the file and the problem."""
    try:
        yield
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported global" in text:  # the file names a callable: the attack weights_only stops
            detail = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), "")
            raise CheckpointError(
                f"refused to load {path}: it holds pickled objects other than tensors and plain values, "
                f"which could run code on this machine ({detail}). Only load checkpoints you trust, "
                "and never with weights_only=False."
            ) from e
        detail = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), text[:120])
        raise CheckpointError(f"{path} is not a usable {what}: corrupt or not a checkpoint ({detail})") from e
    except FileNotFoundError as e:
        raise CheckpointError(f"{what} {path} not found") from e
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a usable {what}: {type(e).__name__}: {e}") from e


def load_checkpoint(path: str | os.PathLike, what: str = "skinlesion checkpoint", mmap: bool = False) -> Any:
    """``torch.load`` onto the CPU with ``weights_only=True``; every failure is a CheckpointError.

    ``mmap=True`` maps the file instead of reading it, for a cheap look at a few fields.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found")
    with load_errors(path, what):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def write_failure(path: str | os.PathLike, e: OSError) -> str:
    message = f"cannot write {path}: {e.strerror or e}"
    if e.errno in DISK_FULL:
        message += " (the disk is full: free space, or set paths.output_root to another disk)"
    return message + f"; the previous {Path(path).name}, if any, is unchanged"


def save_checkpoint(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically; a failure (full disk, no permission) is a CheckpointError."""
    try:
        return atomic_write(path, lambda fh: torch.save(obj, fh))
    except OSError as e:
        raise CheckpointError(write_failure(path, e)) from e


def is_local(path: str | os.PathLike) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


class SafeCheckpointIO(TorchCheckpointIO):
    """The Trainer's checkpoint plug-in: atomic local saves, ``weights_only=True`` loads (resume, test)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_checkpoint(checkpoint, str(path).removeprefix("file://"))

    def load_checkpoint(
        self, path, map_location: Callable | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is False:
            log.warning("weights_only=False ignored: %s is loaded with weights_only=True", path)
        if is_local(path) and not Path(str(path).removeprefix("file://")).is_file():
            raise CheckpointError(f"checkpoint {path} not found")
        with load_errors(path):
            return lightning_load(path, map_location=map_location or "cpu", weights_only=True)


class SafeLoading:
    """Mix-in for LightningModule / LightningDataModule: ``load_from_checkpoint`` is always safe.

    ``weights_only`` is forced to True (False is refused) and load failures become CheckpointError.
    """

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path, *args: Any, weights_only: bool | None = True, **kwargs: Any
    ):
        if weights_only is False:
            raise CheckpointError(
                f"refused to load {checkpoint_path} with weights_only=False: skinlesion checkpoints hold "
                "only tensors and plain values, and unpickling anything else could run code"
            )
        if isinstance(checkpoint_path, str | os.PathLike) and not Path(checkpoint_path).is_file():
            raise CheckpointError(f"checkpoint {checkpoint_path} not found")
        with load_errors(checkpoint_path):
            return super().load_from_checkpoint(checkpoint_path, *args, weights_only=True, **kwargs)  # type: ignore[misc]
