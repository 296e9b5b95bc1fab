"""Which files of an evaluation folder are copies (or crops) of a checkpoint's own data.

An external folder measures domain shift only if the model never saw its images: scored with its
duplicates of the training sources, it would flatter the model. The same evidence as ``prepare``
finds them (exact bytes, perceptual hashes with pHash agreeing, verified SIFT crops), with the
features of the training images cached by SHA-256 under the prepared data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from skinlesion.core.errors import ImageDecodeError
from skinlesion.data.crops import FeatureCache, Item, crop_pairs
from skinlesion.data.datamodule import SkinLesionDataModule
from skinlesion.data.duplicates import find_duplicate_pairs, merge_pairs
from skinlesion.data.images import decode_image, read_bytes
from skinlesion.data.manifest import read_manifest
from skinlesion.data.overview import evidence
from skinlesion.data.scan import ImageRecord, image_hashes

QUERY_SOURCE = "\0folder"  # a source name no configured source can have (names hold no NUL)


def folder_records(folder: Path, paths: Sequence[str]) -> list[ImageRecord]:
    """Records (hashes, SHA-256) of the folder's readable files; the unreadable ones are skipped
    here and reported by the caller's own decoding."""
    records = []
    for rel in paths:
        try:
            data = read_bytes(folder / rel)
            image = decode_image(data, rel)
        except ImageDecodeError:
            continue
        records.append(
            ImageRecord(rel, "", hashlib.sha256(data).hexdigest(), image_hashes(image), QUERY_SOURCE)
        )
    return records


def duplicates_of_data(dm: SkinLesionDataModule, folder: Path, paths: Sequence[str]) -> dict[str, dict]:
    """Folder file (relative path) -> ``{"twin", "split", "evidence"}`` for each file that duplicates
    a file of ``dm``'s manifest (any split: the model trained on it or was chosen or calibrated on it,
    and a test image twice is no independent evidence either)."""
    folder = Path(folder)
    rows = read_manifest(dm.manifest_path)
    cache = FeatureCache(Path(dm.hparams.prepared_dir) / "features", dm.params.crops)
    refs = [Item(f"{dm.source_of(r)}/{r['path']}", r["sha256"], dm.root / dm.item_path(r)) for r in rows]
    ref_records = [
        ImageRecord(r["path"], r["label"], r["sha256"], cache.get(it).hashes, dm.source_of(r))
        for r, it in zip(rows, refs, strict=True)
    ]
    split_of = {it.ident: r["split"] for r, it in zip(rows, refs, strict=True)}
    queries = folder_records(folder, paths)
    items = [Item(q.ident, q.sha256, folder / q.path) for q in queries]
    records = queries + ref_records
    pairs = [
        p
        for p in find_duplicate_pairs(records, dm.params.near_duplicates)
        if (p["a"].startswith(QUERY_SOURCE)) != (p["b"].startswith(QUERY_SOURCE))
    ]
    pairs = merge_pairs(records, pairs, crop_pairs(items, refs, cache, dm.params.crops))
    strongest = sorted(pairs, key=lambda p: (not p["exact"], -p.get("inliers", 0), p["a"], p["b"]))
    found: dict[str, dict] = {}
    for p in strongest:  # queries come first in ``records``, so ``a`` is the folder's file
        rel = p["a"].removeprefix(QUERY_SOURCE + "/")
        found.setdefault(rel, {"twin": p["b"], "split": split_of[p["b"]], "evidence": evidence(p)})
    return dict(sorted(found.items()))
