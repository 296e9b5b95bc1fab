"""Reading a class-per-folder image root: which folders are classes, which files are images, and
each image's SHA-256 and perceptual hashes (the evidence that duplicates are found from)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np

from skinlesion.core.errors import DataError, ImageDecodeError
from skinlesion.data.images import decode_image, printable, read_bytes

KAGGLE_DATASET = "dipuiucse/monkeypoxskinimagedataset"


@dataclass
class ImageRecord:
    path: str  # relative to its source's root, POSIX separators
    label: str
    sha256: str
    hashes: dict[str, np.ndarray]  # name -> packed bits (uint8)
    source: str = ""  # the source's name when there are several; "" for a single root

    @property
    def ident(self) -> str:
        """Unique among all sources: ``<source>/<path>``, or the path alone for a single root."""
        return f"{self.source}/{self.path}" if self.source else self.path


def missing_root_message(root: Path) -> str:
    return (
        f"data root {root} does not exist.\n"
        f"Get the MSID dataset from Kaggle ({KAGGLE_DATASET}):\n"
        f"  kaggle datasets download -d {KAGGLE_DATASET} && unzip monkeypoxskinimagedataset.zip\n"
        "then point data.root (or $SKINLESION_DATA) at the folder that holds the class folders "
        "Chickenpox/ Measles/ Monkeypox/ Normal/ (the 'Original Images' set, not the augmented one),\n"
        "or put them under data/msid/ in the checkout. With Kaggle credentials set "
        "(~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY) and `pip install kagglehub`, "
        "data.download=true fetches it."
    )


def class_folders(root: Path, class_names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Return (class names, ignored top-level entries). Raises DataError for wrong folders."""
    if not root.exists():
        raise DataError(missing_root_message(root))
    if not root.is_dir():
        raise DataError(f"data root {root} is not a directory")
    entries = sorted(os.listdir(root))
    # a folder name that is not UTF-8 cannot be a class name in the manifest
    folders = [e for e in entries if (root / e).is_dir() and not e.startswith(".") and printable(e) == e]
    if class_names:
        missing = [c for c in class_names if c not in folders]
        if missing:
            raise DataError(
                f"data root {root} lacks the class folder(s) {missing}; it holds {folders or 'no folders'}. "
                "Expected one folder per class: " + ", ".join(class_names)
            )
        names = list(class_names)
    else:
        names = folders
        if len(names) < 2:
            raise DataError(f"data root {root} needs at least two class folders, found {folders}")
    ignored = [printable(e) for e in entries if e not in names]
    return names, ignored


def iter_class_files(root: Path, name: str) -> list[Path]:
    """All files below one class folder, sorted, without following directory links."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root / name, followlinks=False):
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in sorted(filenames))
    return out


def fingerprint(root: Path) -> str:
    """A cheap digest of the tree's listing (path, size, mtime) to notice changed data."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            rel = os.fsencode(p.relative_to(root).as_posix())  # any bytes, UTF-8 or not
            try:
                st = p.stat()
                h.update(rel + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(rel + b"\0unreadable\n")
    return h.hexdigest()


def _packed(h: imagehash.ImageHash) -> np.ndarray:
    return np.packbits(np.asarray(h.hash, dtype=bool).ravel())


def image_hashes(image) -> dict[str, np.ndarray]:
    """The three perceptual hashes that near-duplicates are found from."""
    return {
        "phash": _packed(imagehash.phash(image)),
        "dhash": _packed(imagehash.dhash(image)),
        "whash": _packed(imagehash.whash(image)),
    }


def scan(root: Path, class_names: Sequence[str] | None) -> tuple[list[ImageRecord], list[dict], list[str]]:
    """Decode every file fully; return (records, excluded files with reasons, class names)."""
    names, ignored = class_folders(root, class_names)
    excluded = [{"path": e, "reason": "not a class folder (ignored)"} for e in ignored]
    records = scan_folders(root, {name: name for name in names}, excluded)
    return records, excluded, names


def scan_folders(
    root: Path, folders: dict[str, str], excluded: list[dict], source: str = ""
) -> list[ImageRecord]:
    """Records of every image below ``folders`` (folder -> label); files left out go to ``excluded``."""
    records: list[ImageRecord] = []
    for name, label in folders.items():
        kept = 0
        for p in iter_class_files(root, name):
            rel = p.relative_to(root).as_posix()
            if p.name.startswith("."):
                excluded.append({"path": printable(rel), "reason": "hidden file"})
                continue
            if printable(rel) != rel:
                reason = "file name is not valid UTF-8 (the manifest cannot name it); rename the file"
                excluded.append({"path": printable(rel), "reason": reason})
                continue
            try:
                data = read_bytes(p)
                image = decode_image(data, rel)  # the bytes that are hashed are the bytes decoded
            except ImageDecodeError as e:
                excluded.append({"path": rel, "reason": str(e).replace(printable(p), rel)})
                continue
            sha = hashlib.sha256(data).hexdigest()
            records.append(ImageRecord(rel, label, sha, image_hashes(image), source))
            kept += 1
        if kept == 0:
            raise DataError(
                f"class folder {root / name} holds no usable images; every class needs at least one. "
                f"Files left out there: {[e for e in excluded if e['path'].startswith(name + '/')]}"
            )
    return records
