"""One training run: fit, calibrate, test the best checkpoint, write the run's artefacts.

Everything is instantiated from ``_target_`` in ``conf/``; the return value (best val macro-F1) is
the objective that ``--multirun hparams_search=...`` maximises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from skinlesion.core.artifacts import is_inside, link_latest, record_run, write_json
from skinlesion.core.checkpoints import SafeCheckpointIO
from skinlesion.core.devices import (
    leave_process_group,
    place_trial,
    ranks_rerun_this_job,
    single_device_trainer,
    trainer_kwargs,
)
from skinlesion.core.errors import CheckpointError, ConfigError
from skinlesion.core.resume import ResumableCSVLogger, ResumePoint, inspect_checkpoint, remove_partial_files
from skinlesion.core.task import in_multirun
from skinlesion.data.datamodule import SkinLesionDataModule
from skinlesion.data.manifest import refuse_outputs_inside
from skinlesion.inference.other_rash import other_rash_loaders
from skinlesion.inference.torch_backend import abstention_mask, prediction_sets
from skinlesion.models.abstention import AbstainParams
from skinlesion.models.backbones import get_backbone
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.temperature import calibrate_checkpoint, load_weights
from skinlesion.reports.evaluation import write_evaluation

log = logging.getLogger(__name__)


def plain(node) -> dict | list | None:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def build_datamodule(cfg: DictConfig) -> SkinLesionDataModule:
    """The DataModule, with the normalisation of the chosen backbone."""
    spec = get_backbone(cfg.model.backbone)
    return hydra.utils.instantiate(cfg.data, mean=list(spec.mean), std=list(spec.std), _convert_="all")


def build_model(
    cfg: DictConfig, dm: SkinLesionDataModule, manifest_sha256: str | None
) -> SkinLesionClassifier:
    """The classifier; optimizer, scheduler and regularizer travel as plain ``_target_`` dicts."""
    return hydra.utils.instantiate(
        cfg.model,
        class_names=dm.class_names,
        class_weights=dm.loss_weights,
        image_size=cfg.data.image_size,
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")),
        regularizer=plain(cfg.regularizer),
        data_manifest_sha256=manifest_sha256,
        _recursive_=False,
        _convert_="all",
    )


def instantiate_group(group: DictConfig | None) -> list:
    """Callbacks or loggers: every entry with a ``_target_`` (null entries switch one off)."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def resolve_ckpt_path(value: str | None, run_dir: Path) -> str | None:
    """``last`` -> this run's last.ckpt; a run directory -> its last.ckpt; a file -> itself."""
    if not value:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if value == "last" else Path(value)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt" if (path / "checkpoints").is_dir() else path / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"cannot resume: checkpoint {path} not found")
    return str(path)


def prepare_resume(trainer: L.Trainer, resume: ResumePoint, run_dir: Path) -> None:
    """Keep the logged history before the resume point and clear what the crash left half-written."""
    for logger in trainer.loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.resume_from(resume.step)
        elif isinstance(logger, TensorBoardLogger) and logger._experiment is None:
            logger._kwargs.setdefault("purge_step", resume.step)  # hide the interrupted epoch's events
    for stale in remove_partial_files(run_dir):
        log.info("removed %s, left by an interrupted write", stale)
    log.info("resuming %s from %s (epoch %d, step %d)", run_dir, resume.path, resume.epoch, resume.step)


def latest_mode(cfg: DictConfig) -> bool | str:
    """``link_latest``: ``auto`` (default), ``true`` or ``false``; checked before training, not after."""
    mode = cfg.get("link_latest", "auto")
    if mode not in (True, False, "auto"):
        raise ConfigError(f"link_latest must be auto, true or false, got {mode!r}")
    return mode


def move_latest(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Point ``outputs/latest`` (what evaluate, export and the model card use by default) at a
    finished run of the main path, and at nothing else.

    Never from a multirun (sweep trials) or with ``link_latest=false``; a run directory outside
    ``paths.output_root`` only with ``link_latest=true``. CV folds, native sweep trials and retrains
    call :func:`train` without ``main_path`` and never get here.
    """
    mode, output_root = latest_mode(cfg), Path(cfg.paths.output_root)
    if mode is False or in_multirun():
        return None
    link = link_latest(output_root, run_dir, outside=mode is True)
    if link is None and not is_inside(run_dir, output_root):
        log.info("%s/latest left alone: the run is outside it (link_latest=true links it)", output_root)
    return link


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = (), *, main_path: bool = False) -> float:
    """Fit, calibrate and (``evaluate=true``) test; returns the best val macro-F1.

    ``extra_callbacks`` join the configured ones (``skinlesion.sweep_native`` adds its pruning callback).
    Only ``python -m skinlesion.train`` passes ``main_path=True``: its run may move ``outputs/latest``.
    """
    latest_mode(cfg)
    torch.set_float32_matmul_precision("high")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    gpus = place_trial(cfg.trainer)
    dm = build_datamodule(cfg)
    refuse_outputs_inside(dm.root, run_dir, Path(dm.hparams.prepared_dir))
    report = dm.prepare_data()
    dm.setup("fit")
    resume = inspect_checkpoint(ckpt_path, report["manifest_sha256"]) if ckpt_path else None
    model = build_model(cfg, dm, report["manifest_sha256"])
    callbacks = [*instantiate_group(cfg.get("callbacks")), *extra_callbacks]
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[SafeCheckpointIO()],
        **trainer_kwargs(cfg.trainer),
    )
    if resume is not None:
        prepare_resume(trainer, resume, run_dir)
    if trainer.is_global_zero:
        record_run(run_dir, report["manifest_sha256"], ckpt_path)
    started = time.perf_counter()
    same_gpus = [f"trainer.devices=[{','.join(map(str, gpus))}]"] if gpus else []
    with ranks_rerun_this_job(trainer, same_gpus):
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    fit_seconds = time.perf_counter() - started
    if trainer.world_size > 1:
        leave_process_group()
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    score = (
        checkpoint.best_model_score
        if checkpoint is not None
        else trainer.callback_metrics.get("val/f1_macro")
    )
    objective = float(score) if score is not None else float("nan")
    if not trainer.is_global_zero:
        return objective
    summary = {
        "val/f1_macro_best": objective,
        "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 1),
        "best_checkpoint": checkpoint.best_model_path if checkpoint else None,
        "data_manifest_sha256": report["manifest_sha256"],
        "world_size": trainer.world_size,  # processes that fitted (DDP ranks)
    }
    if dm.holdout_counts is not None:  # leave-one-source-out: what became of the held-out photos
        summary["holdout"] = {"source": dm.hparams.holdout, **dm.holdout_counts}
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if best:
        load_weights(model, Path(best))  # test the weights that were checkpointed, EMA or not
        if len(dm.datasets["val"]):
            abstain = AbstainParams(**(plain(cfg.get("abstain")) or {}))
            other = other_rash_loaders(None, dm, model)  # data with folders outside the classes
            summary |= calibrate_checkpoint(
                model, dm.eval_loader("val"), Path(best), dm.eval_loader("train"), abstain, other
            )
    if cfg.get("evaluate", True) and len(dm.datasets["test"]):
        tester = trainer if trainer.world_size == 1 else single_device_trainer(trainer)
        tester.test(model, datamodule=dm, verbose=False)  # the model holds the best weights
        outputs = model.test_outputs
        csv_log = run_dir / "csv" / "metrics.csv"
        summary |= write_evaluation(
            outputs["probs"].numpy(),
            outputs["targets"].numpy(),
            dm.datasets["test"],
            dm.class_names,
            run_dir / "eval",
            "test",
            csv_log if csv_log.is_file() else None,
            logits=outputs["logits"].numpy(),
            temperature=float(model.temperature),
            abstained=abstention_mask(model, outputs["probs"].numpy(), dm.eval_loader("test")),
            **prediction_sets(model, outputs["probs"].numpy()),
        )
    write_json(run_dir / "metrics.json", summary)
    if main_path:
        move_latest(cfg, run_dir)
    keys = ("val/f1_macro_best", "test/acc", "test/f1_macro")
    log.info("run %s: %s", run_dir, "  ".join(f"{k}={summary[k]:.4f}" for k in keys if k in summary))
    return objective
