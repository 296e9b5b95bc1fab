"""Resuming a run that died: what to check in ``last.ckpt`` first, and a CSV log that survives it.

Lightning 2.6's CSVLogger deletes ``csv/metrics.csv`` when it finds one, so a resumed run would lose
the epochs before the crash. :class:`ResumableCSVLogger` keeps the rows logged before the resume
point (the optimizer step the checkpoint was taken at) and drops those of the interrupted epoch,
which the resumed run logs again; the resulting file equals the one of an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from skinlesion.core.artifacts import TMP_INFIX, atomic_write_bytes
from skinlesion.core.checkpoints import load_checkpoint
from skinlesion.core.errors import CheckpointError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePoint:
    path: str
    epoch: int
    step: int  # the logging step (batches that stepped the optimizer) the checkpoint was taken at


def inspect_checkpoint(path: str, manifest_sha256: str | None) -> ResumePoint:
    """Read the resume point safely (``weights_only``, memory-mapped) and refuse a changed dataset."""
    ckpt = load_checkpoint(path, mmap=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(f"cannot resume from {path}: it is not a full training checkpoint")
    trained_on = (ckpt.get("hyper_parameters") or {}).get("data_manifest_sha256")
    if trained_on and manifest_sha256 and trained_on != manifest_sha256:
        raise CheckpointError(
            f"cannot resume from {path}: it was trained on data with manifest SHA-256 {trained_on[:12]}, "
            f"the data now gives {manifest_sha256[:12]}; resuming would mix two datasets. Restore the data "
            "or start a new run."
        )
    epoch_loop = ckpt["loops"].get("fit_loop", {}).get("epoch_loop.state_dict", {})
    step = int(epoch_loop.get("_batches_that_stepped", ckpt.get("global_step", 0)))
    return ResumePoint(path, int(ckpt.get("epoch", 0)), step)


def writer_alive(partial: Path) -> bool:
    """Whether the process named in a ``.<name>.partial-<pid>-<token>`` file still runs."""
    try:
        os.kill(int(partial.name.rsplit(TMP_INFIX, 1)[1].split("-")[0]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_partial_files(directory: Path) -> list[Path]:
    """Temporary files under ``directory`` whose writer was killed (see ``runs.atomic_write``)."""
    candidates = Path(directory).rglob(f".*{TMP_INFIX}*")
    partial = sorted(p for p in candidates if p.is_file() and not writer_alive(p))
    for p in partial:
        p.unlink(missing_ok=True)
    return partial


class _HistoryWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing metrics.csv keeps its rows before ``keep_before``."""

    def __init__(self, log_dir: str, keep_before: int | None) -> None:
        self.keep_before = keep_before
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        keep = self.keep_before
        if keep is None or not self._fs.isfile(self.metrics_file_path):
            super()._check_log_dir_exists()  # a fresh run: start a new file, as Lightning does
            return
        with open(self.metrics_file_path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = [r for r in reader if (r.get("step") or "").isdigit() and int(r["step"]) < keep]
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=header)  # the same dialect as Lightning's writer
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.metrics_file_path, buf.getvalue().encode())
        self.metrics_keys = header
        log.info("kept %d logged rows before step %d in %s", len(rows), keep, self.metrics_file_path)


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose ``metrics.csv`` survives a resume (see :meth:`resume_from`)."""

    _keep_before: int | None = None

    def resume_from(self, step: int) -> None:
        """Keep the rows logged before ``step``; call before fitting starts."""
        if self._experiment is not None:
            raise RuntimeError("resume_from() must be called before the logger writes anything")
        self._keep_before = step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryWriter(self.log_dir, self._keep_before)
        return self._experiment
