"""Photos for the other-rash gate (``models.other``): other rashes, and in-class photos of other
sources, split by patient, never a copy of the checkpoint's own photos.

They come from a prepared manifest with folders outside the classes (``data=multisource``: Cowpox
and HFMD of MSLD v2): the checkpoint's own, when it was trained on such data, or another one
(``other_data``) for a checkpoint trained on MSID alone. Rows are taken by that manifest's split
(patients never straddle two splits), and every group (duplicates, crops, a patient's photos) that
holds a file of the checkpoint's own splits is left out, so a crop of a test photo never trains
the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from skinlesion.core.errors import DataError
from skinlesion.data.datamodule import ImageListDataset, SkinLesionDataModule
from skinlesion.data.transforms import eval_transforms
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.other import OtherRashLoaders

SPLITS = ("train", "val", "test")


@dataclass
class OtherRashSets:
    """Per split: ``outside`` (other rashes, labelled 0.. by folder) and ``inside`` (in-class photos
    of other sources than the checkpoint's, labelled by class); ``outside_names`` the folders."""

    outside: dict[str, ImageListDataset]
    inside: dict[str, ImageListDataset]
    outside_names: list[str]

    def __bool__(self) -> bool:
        return any(len(d) for d in self.outside.values())


def own_files(dm: SkinLesionDataModule) -> set[Path]:
    return {(dm.root / path).resolve() for split in SPLITS for path, _ in dm.datasets[split].items}


def other_rash_sets(
    other: SkinLesionDataModule, own: SkinLesionDataModule, model: SkinLesionClassifier
) -> OtherRashSets:
    """The gate's photos from ``other``'s manifest (set up), seen through ``model``'s preprocessing."""
    names = list(model.class_names)
    rows = other.manifest_rows
    taken = own_files(own)
    path_of = {id(r): (other.root / other.item_path(r)).resolve() for r in rows}
    touched = {r["group"] for r in rows if path_of[id(r)] in taken}
    outside_names = sorted({r["label"] for r in rows if r["label"] not in names})
    pre = model.preprocessing
    transform = eval_transforms(pre["image_size"], pre["mean"], pre["std"])
    sets: dict[str, dict[str, ImageListDataset]] = {"outside": {}, "inside": {}}
    for split in SPLITS:
        free = [r for r in rows if r["split"] == split and r["group"] not in touched]
        for kind, labels in (("outside", outside_names), ("inside", names)):
            chosen = [r for r in free if r["label"] in labels]
            sets[kind][split] = ImageListDataset(
                other.root,
                [(other.item_path(r), labels.index(r["label"])) for r in chosen],
                transform,
                groups=[r["group"] for r in chosen],
                sources=[other.source_of(r) for r in chosen],
            )
    return OtherRashSets(sets["outside"], sets["inside"], outside_names)


def other_datamodule(
    data_cfg: DictConfig | None, own: SkinLesionDataModule, model: SkinLesionClassifier
) -> SkinLesionDataModule | None:
    """The data with other rashes: the checkpoint's own when its manifest has rows outside the
    classes, else ``data_cfg`` (a ``conf/data`` config) prepared and set up; None without either."""
    if any(r["label"] not in model.class_names for r in own.manifest_rows):
        return own
    if data_cfg is None:
        return None
    pre = model.preprocessing
    dm = hydra.utils.instantiate(
        data_cfg, image_size=pre["image_size"], mean=pre["mean"], std=pre["std"], _convert_="all"
    )
    try:
        dm.prepare_data()
    except DataError as e:  # e.g. MSLD v2 absent: say how to go on without the gate
        raise DataError(
            f"the other-rash gate needs other_data (default data=multisource): {e}. "
            "Without that data, pass data@other_data=msid (the gate then stays off)."
        ) from e
    dm.setup("test")
    return dm


def gate_loaders(sets: OtherRashSets, batch_size: int = 64) -> OtherRashLoaders | None:
    """The loaders ``calibrate_checkpoint`` fits the gate on; None without other-rash photos."""
    if not len(sets.outside["train"]):
        return None
    return OtherRashLoaders(
        outside_train=DataLoader(sets.outside["train"], batch_size=batch_size),
        inside_train=DataLoader(sets.inside["train"], batch_size=batch_size),
        inside_val=DataLoader(sets.inside["val"], batch_size=batch_size),
    )


def other_rash_loaders(
    data_cfg: DictConfig | None, own: SkinLesionDataModule, model: SkinLesionClassifier
) -> OtherRashLoaders | None:
    """The gate's loaders from the checkpoint's own data or ``data_cfg`` (``other_datamodule``)."""
    other = other_datamodule(data_cfg, own, model)
    return gate_loaders(other_rash_sets(other, own, model)) if other is not None else None
