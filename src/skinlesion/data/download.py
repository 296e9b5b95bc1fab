"""Fetch MSID from Kaggle through kagglehub, only when asked (data.download=true) and credentials exist."""

from __future__ import annotations

import os
from pathlib import Path

from skinlesion.core.errors import DataError
from skinlesion.data.scan import KAGGLE_DATASET, missing_root_message

CLASSES = ("Chickenpox", "Measles", "Monkeypox", "Normal")


def has_kaggle_credentials() -> bool:
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config_dir / "kaggle.json").is_file() or (config_dir / "access_token").is_file()


def find_class_root(base: Path) -> Path:
    """The folder under a Kaggle download that holds the four class folders of original images."""
    candidates = [Path(d) for d, subdirs, _ in os.walk(base) if all(c in subdirs for c in CLASSES)]
    originals = [c for c in candidates if "augment" not in str(c).lower() and "fold" not in str(c).lower()]
    if not originals:
        raise DataError(f"no folder with {', '.join(CLASSES)} found under the download at {base}")
    return sorted(originals, key=lambda p: ("original" not in str(p).lower(), len(str(p))))[0]


def download_msid() -> Path:
    """Download (or reuse kagglehub's cache) and return the class-per-folder root of originals."""
    if not has_kaggle_credentials():
        raise DataError(missing_root_message(Path("data/msid")) + "\n(no Kaggle credentials found)")
    try:
        import kagglehub
    except ImportError as e:
        raise DataError("data.download=true needs kagglehub: pip install 'skinlesion[kaggle]'") from e
    try:
        base = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as e:  # network, auth or API errors: all reported the same way
        raise DataError(f"downloading {KAGGLE_DATASET} from Kaggle failed: {e}") from e
    return find_class_root(base)
