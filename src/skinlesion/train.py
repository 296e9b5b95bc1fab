"""``python -m skinlesion.train``: fit, test the best checkpoint, write the run's artefacts.

Everything is instantiated from ``_target_`` in ``conf/``; the return value (best val macro-F1) is
the objective that ``--multirun hparams_search=...`` maximises.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from skinlesion.cli import run_task
from skinlesion.data.datamodule import SkinLesionDataModule
from skinlesion.errors import CheckpointError
from skinlesion.evaluate import write_evaluation
from skinlesion.models.backbones import get_backbone
from skinlesion.models.calibration import calibrate_checkpoint
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.paths import CONF_DIR
from skinlesion.runs import link_latest, provenance, write_json

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


def train(cfg: DictConfig) -> float:
    torch.set_float32_matmul_precision("high")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    dm = build_datamodule(cfg)
    report = dm.prepare_data()
    dm.setup("fit")
    model = build_model(cfg, dm, report["manifest_sha256"])
    callbacks, loggers = instantiate_group(cfg.get("callbacks")), instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if trainer.is_global_zero:
        write_json(run_dir / "run_info.json", provenance(report["manifest_sha256"]))
    started = time.perf_counter()
    trainer.fit(model, datamodule=dm, ckpt_path=resolve_ckpt_path(cfg.get("ckpt_path"), run_dir))
    fit_seconds = time.perf_counter() - started
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
    }
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if best and len(dm.datasets["val"]):
        summary |= calibrate_checkpoint(model, dm.eval_loader("val"), Path(best))
    if cfg.get("evaluate", True) and len(dm.datasets["test"]):
        tester = (
            trainer if trainer.world_size == 1 else L.Trainer(devices=1, logger=False, accelerator="auto")
        )
        tester.test(model, datamodule=dm, ckpt_path=best, verbose=False)
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
        )
    write_json(run_dir / "metrics.json", summary)
    if cfg.get("link_latest", True):
        link_latest(Path(cfg.paths.output_root), run_dir)
    keys = ("val/f1_macro_best", "test/acc", "test/f1_macro")
    log.info("run %s: %s", run_dir, "  ".join(f"{k}={summary[k]:.4f}" for k in keys if k in summary))
    return objective


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    return run_task(train, cfg)


if __name__ == "__main__":
    main()
