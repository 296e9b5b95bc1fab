"""SkinLesionDataModule: prepared manifest -> datasets -> loaders, with augmentation and balancing."""

from __future__ import annotations

import copy
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from skinlesion.core.checkpoints import SafeLoading
from skinlesion.core.determinism import EpochSampler
from skinlesion.core.errors import DataError, ImageDecodeError
from skinlesion.core.paths import default_data_root
from skinlesion.data.images import load_image, printable
from skinlesion.data.manifest import PrepareParams, ensure_prepared, read_manifest
from skinlesion.data.manifest import prepared_dir as prepared_dir_for
from skinlesion.data.scan import iter_class_files
from skinlesion.data.sources import common_root, holdout_rows, move_sources
from skinlesion.data.splits import fold_rows
from skinlesion.data.transforms import AugmentParams, eval_transforms, train_transforms

log = logging.getLogger(__name__)

BALANCE_MODES = ("loss", "sampler", "none")


def to_uint8_tensor(image: Image.Image, max_side: int | None = None) -> torch.Tensor:
    """RGB PIL -> uint8 CHW tensor, shrinking very large images once so the cache stays small."""
    if max_side and min(image.size) > max_side:
        image = image.copy()
        scale = max_side / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    return TF.pil_to_tensor(image)


class ImageListDataset(Dataset):
    """(relative path, label index) items under a root, decoded by the project's one decoder.

    ``groups`` (duplicate-group id per item, from the manifest) lets evaluation resample whole
    groups; None for ad-hoc folders, where every image is its own unit. ``sources`` (the source
    of each item) lets evaluation report each source beside the pooled figures.
    """

    def __init__(
        self,
        root: Path,
        items: Sequence[tuple[str, int]],
        transform,
        cache: bool = True,
        max_side: int | None = None,
        groups: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.items = list(items)
        self.groups = list(groups) if groups is not None else None
        self.sources = list(sources) if sources is not None else None
        self.transform = transform
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.max_side = max_side

    def __len__(self) -> int:
        return len(self.items)

    def with_transform(self, transform) -> ImageListDataset:
        """The same images, sharing the decoded cache, under another transform (another model's
        preprocessing): decoded once however many models look at them."""
        view = copy.copy(self)
        view.transform = transform
        return view

    def raw(self, index: int) -> torch.Tensor:
        """The decoded uint8 image (cached), before any transform."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        tensor = to_uint8_tensor(load_image(self.root / self.items[index][0]), self.max_side)
        if self.cache is not None:
            self.cache[index] = tensor
        return tensor

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """``dataset[i]``, or ``dataset[i, seed]``: the transform draws from ``seed`` (see EpochSampler)."""
        if isinstance(index, tuple):
            index, seed = index
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.transform(self.raw(index)), self.items[index][1]
        return self.transform(self.raw(index)), self.items[index][1]

    def drop_unreadable(self) -> list[dict]:
        """Decode everything now; remove and return the items that fail (for ad-hoc folders)."""
        keep, dropped = [], []
        for i, item in enumerate(self.items):
            try:
                self.raw(i)
                keep.append(i)
            except ImageDecodeError as e:
                dropped.append({"path": item[0], "reason": str(e)})
        if dropped:
            self.items = [self.items[i] for i in keep]
            if self.groups is not None:
                self.groups = [self.groups[i] for i in keep]
            if self.sources is not None:
                self.sources = [self.sources[i] for i in keep]
            if self.cache is not None:
                self.cache.clear()
        return dropped


def folder_items(root: Path, class_names: Sequence[str]) -> tuple[list[tuple[str, int]], list[dict]]:
    """Items of a class-per-folder directory whose folders are a subset of ``class_names``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"evaluation folder {root} does not exist or is not a directory")
    present = sorted(e for e in os.listdir(root) if (root / e).is_dir() and not e.startswith("."))
    lookup = {c.lower(): i for i, c in enumerate(class_names)}
    known = [f for f in present if f.lower() in lookup]
    if not known:
        raise DataError(
            f"{root} has no folder named after a class of the model ({', '.join(class_names)}); "
            f"it holds {present or 'no folders'}"
        )
    reason = "not a class of the model (ignored)"
    ignored = [{"path": printable(f), "reason": reason} for f in present if f not in known]
    items = []
    for f in known:
        for p in iter_class_files(root, f):
            rel = p.relative_to(root).as_posix()
            if p.name.startswith("."):
                continue
            if printable(rel) != rel:  # could not be written to predictions.csv
                ignored.append({"path": printable(rel), "reason": "file name is not valid UTF-8; rename it"})
                continue
            items.append((rel, lookup[f.lower()]))
    return items, ignored


class SkinLesionDataModule(SafeLoading, L.LightningDataModule):
    """Reads the prepared manifest; train/val/test datasets with separate transforms.

    ``prepare_data`` runs the preparation when the manifest is missing or the data changed, so
    ``python -m skinlesion.train`` works on its own; ``make train`` runs it explicitly first.
    With ``holdout=<source>`` (leave one source out) that source is the whole test split and
    never trains (:func:`skinlesion.data.sources.holdout_rows`).
    With ``fold=k`` the manifest's train + val rows are re-split into ``n_folds`` grouped,
    stratified folds (``prepare.fold_rows``) and fold k is val; test stays as it is.

    One root (``root``), or several ``sources`` (``data=multisource``; see
    :mod:`skinlesion.data.sources`): then ``root`` is the folder that holds them all, the datasets'
    paths are relative to it, and ``data.root=...`` moves them all at once (the data moved).
    Images of labels outside ``class_names`` stay in the manifest and out of every dataset.
    """

    def __init__(
        self,
        root: str | None = None,
        prepared_dir: str = "outputs/prepared",
        class_names: Sequence[str] | None = None,
        split: dict | None = None,
        near_duplicates: dict | None = None,
        conflicts: str = "train",
        image_size: int = 224,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        balance: str = "loss",
        augment: dict | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        cache_images: bool = True,
        download: bool = False,
        seed: int = 42,
        fold: int | None = None,
        n_folds: int = 5,
        sources: dict | Sequence[dict] | None = None,
        crop_duplicates: dict | None = None,
        holdout: str | None = None,
    ) -> None:
        super().__init__()
        if balance not in BALANCE_MODES:
            raise DataError(f"data.balance must be one of {BALANCE_MODES}, got {balance!r}")
        if holdout and not sources:
            raise DataError(f"data.holdout={holdout!r} needs several sources (data=multisource)")
        self.save_hyperparameters(logger=False)
        self.params = PrepareParams.from_config(
            class_names, split, near_duplicates, conflicts, sources, crop_duplicates
        )
        if self.params.sources:
            self.params = replace(self.params, sources=move_sources(self.params.sources, root))
            self.root = common_root([s.root for s in self.params.sources])
        else:
            self.root = Path(root) if root else default_data_root()
        self.augment = AugmentParams(**(augment or {}))
        self.manifest_path = (
            prepared_dir_for(Path(self.hparams.prepared_dir), self.root, self.params) / "manifest.csv"
        )
        self.class_names: list[str] = list(class_names) if class_names else []
        self.datasets: dict[str, ImageListDataset] = {}
        self.holdout_counts: dict[str, int] | None = None  # with ``holdout``: what became of its photos

    # -- preparation ---------------------------------------------------------------------------
    def prepare_data(self, force: bool = False) -> dict:
        if not self.root.exists() and self.hparams.download and not self.params.sources:
            from skinlesion.data.download import download_msid

            self.root = download_msid()
        manifest, report = ensure_prepared(
            self.root, Path(self.hparams.prepared_dir), self.params, force=force
        )
        self.manifest_path = manifest
        return report

    @property
    def report(self) -> dict:
        path = self.manifest_path.with_name("report.json")
        if not path.is_file():
            raise DataError(f"{path} not found; run prepare_data() first")
        return json.loads(path.read_text())

    # -- datasets ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        rows = read_manifest(self.manifest_path)
        if self.hparams.holdout:
            rows, self.holdout_counts = holdout_rows(rows, self.hparams.holdout, self.report["class_names"])
        if self.hparams.fold is not None:
            rows = fold_rows(rows, self.hparams.fold, self.hparams.n_folds, self.params.split.seed)
        self.class_names = list(self.report["class_names"])
        index = {c: i for i, c in enumerate(self.class_names)}
        size, mean, std = self.hparams.image_size, self.hparams.mean, self.hparams.std
        max_side = 2 * size
        for split in ("train", "val", "test"):
            chosen = [r for r in rows if r["split"] == split and r["label"] in index]
            items = [(self.item_path(r), index[r["label"]]) for r in chosen]
            tf = (
                train_transforms(size, mean, std, self.augment)
                if split == "train"
                else eval_transforms(size, mean, std)
            )
            self.datasets[split] = ImageListDataset(
                self.root,
                items,
                tf,
                self.hparams.cache_images,
                max_side,
                [r["group"] for r in chosen],
                [self.source_of(r) for r in chosen],
            )
        if self.hparams.fold is not None and not self.datasets["val"].items:
            raise DataError(
                f"fold {self.hparams.fold} of {self.hparams.n_folds} has no images; use fewer folds"
            )
        self.manifest_rows = rows

    def source_of(self, row: dict[str, str]) -> str:
        """A manifest row's source: its ``source`` column, or the single root's folder name."""
        return row.get("source") or self.root.name

    def item_path(self, row: dict[str, str]) -> str:
        """A manifest row's file, relative to ``self.root``."""
        if not self.params.sources:
            return row["path"]
        source = next(s for s in self.params.sources if s.name == row["source"])
        return (source.root / row["path"]).relative_to(self.root).as_posix()

    def split_rows(self, split: str) -> list[dict[str, str]]:
        return [r for r in self.manifest_rows if r["split"] == split]

    def class_counts(self, split: str = "train") -> list[int]:
        counts = Counter(label for _, label in self.datasets[split].items)
        return [counts.get(i, 0) for i in range(len(self.class_names))]

    @property
    def loss_weights(self) -> list[float] | None:
        """Inverse-frequency class weights for the loss when ``balance=loss``; else None."""
        if self.hparams.balance != "loss":
            return None
        counts = self.class_counts("train")
        total, k = sum(counts), len(counts)
        return [round(total / (k * c), 6) if c else 0.0 for c in counts]

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, sampler=None, batch_size: int | None = None):
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size or self.hparams.batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator(),  # worker seeds drawn from here, not from the global generator
        )

    def train_dataloader(self) -> DataLoader:
        """Order and augmentation depend on (seed, epoch) only, so a resumed run replays them exactly."""
        ds = self.datasets["train"]
        weights = None
        if self.hparams.balance == "sampler":
            counts = self.class_counts("train")
            weights = [1.0 / counts[label] for _, label in ds.items]
        sampler = EpochSampler(len(ds), self.hparams.seed, weights)
        if self.trainer is not None:
            # Lightning builds the iterator (and workers prefetch from it) before it calls set_epoch;
            # start from the epoch it will pass, which on resume is not trainer.current_epoch yet.
            sampler.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return self._loader(ds, sampler=sampler)

    def eval_loader(self, split: str) -> DataLoader:
        """Deterministic batches of any split, with eval transforms (train too, sharing its cache)."""
        dataset = self.datasets[split]
        if split == "train":
            dataset = copy.copy(dataset)
            dataset.transform = eval_transforms(self.hparams.image_size, self.hparams.mean, self.hparams.std)
        return self._loader(dataset, batch_size=self.hparams.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader("test")
