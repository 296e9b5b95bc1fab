"""Loading checkpoints and their data for scoring: one safe path shared by every command that
reads a model."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, ListConfig
from torch.utils.data import DataLoader

from skinlesion.core.errors import CheckpointError, ConfigError
from skinlesion.data.datamodule import ImageListDataset, SkinLesionDataModule
from skinlesion.data.transforms import eval_transforms
from skinlesion.models.classifier import SkinLesionClassifier

log = logging.getLogger(__name__)


def load_classifier(path: str | Path) -> SkinLesionClassifier:
    """Load a Lightning checkpoint without running pickled code (``weights_only=True``)."""
    return SkinLesionClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()


def run_dir_of(ckpt: Path) -> Path:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def test_predictions(model: SkinLesionClassifier, dataset, batch_size: int = 64, accelerator: str = "auto"):
    """Run the Lightning test loop once; returns (probs, targets) as NumPy arrays."""
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(model, dataloaders=DataLoader(dataset, batch_size=batch_size), verbose=False)
    return model.test_outputs["probs"].numpy(), model.test_outputs["targets"].numpy()


def check_manifest(model: SkinLesionClassifier, manifest: Path) -> None:
    """Warn when the prepared data differs from the data the checkpoint was trained on."""
    expected = model.hparams.get("data_manifest_sha256")
    if not expected or not manifest.is_file():
        return
    actual = hashlib.sha256(manifest.read_bytes()).hexdigest()
    if actual != expected:
        log.warning(
            "the data under this checkpoint has changed: manifest %s has SHA-256 %s, the checkpoint "
            "was trained on %s. Scores are not comparable with the run's own.",
            manifest,
            actual[:12],
            expected[:12],
        )


def checkpoint_datamodule(
    ckpt: Path, model: SkinLesionClassifier, root: str | None = None
) -> SkinLesionDataModule:
    """The checkpoint's own data splits, set up (``root`` if the data moved); warns if the data changed."""
    overrides = {"root": root} if root else {}
    dm = SkinLesionDataModule.load_from_checkpoint(ckpt, weights_only=True, **overrides)
    if not dm.manifest_path.is_file():
        dm.prepare_data()
    check_manifest(model, dm.manifest_path)
    dm.setup("test")
    return dm


def split_files(dm: SkinLesionDataModule, split: str) -> list[Path]:
    return [dm.root / path for path, _ in dm.datasets[split].items]


def default_checkpoint(cfg: DictConfig) -> Path:
    """``ckpt_path``, else the best checkpoint of ``outputs/latest``, which must exist."""
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path)
    ckpt = Path(cfg.paths.output_root) / "latest/checkpoints/best.ckpt"
    if not ckpt.is_file():
        raise CheckpointError(
            f"no checkpoint given and {ckpt} does not exist; train first (make train) or pass ckpt_path=..."
        )
    return ckpt


def ensemble_members(cfg: DictConfig) -> list[Path] | None:
    """The checkpoints of an ensemble: ``ckpt_path=[a.ckpt,b.ckpt,...]`` or a CV directory (its folds'
    best checkpoints, from ``cv_report.json``); None for a single checkpoint."""
    spec = cfg.ckpt_path
    if isinstance(spec, ListConfig | list):
        members = [Path(p) for p in spec]
    elif spec and (Path(spec) / "cv_report.json").is_file():
        members = [Path(p) for p in json.loads((Path(spec) / "cv_report.json").read_text())["checkpoints"]]
    else:
        return None
    if not members:
        raise ConfigError("ckpt_path=[] names no checkpoint")
    return members


def check_ensemble(models: list[SkinLesionClassifier]) -> None:
    """Members must answer the same question (their inputs may differ: see :func:`as_model_sees`)."""
    first = models[0]
    if any(m.class_names != first.class_names for m in models):
        raise CheckpointError("ensemble members must share class names (and their order)")


def as_model_sees(dataset: ImageListDataset, model: SkinLesionClassifier) -> ImageListDataset:
    """The same images (and decoded cache) under ``model``'s own eval preprocessing, so that members
    with different backbones (normalisation, input size) can be averaged."""
    pre = model.preprocessing
    return dataset.with_transform(eval_transforms(pre["image_size"], pre["mean"], pre["std"]))
