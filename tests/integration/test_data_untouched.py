"""The data root is only read: a full short pipeline leaves every byte, name and timestamp as it was."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from skinlesion.core.errors import DataError
from skinlesion.evaluate import evaluate
from skinlesion.prepare import prepare
from skinlesion.train import train_main_path
from tests.helpers import make_class_folders

FAST = [
    "model=simple_cnn",
    "data.image_size=32",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
]


def tree_digest(root: Path) -> str:
    """Names, types, modes, sizes, mtimes (of directories too: a file created then deleted shows)
    and the content of every file and link under ``root``, without following links."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in [".", *sorted(filenames), *dirnames]:
            p = Path(dirpath) / name
            st = p.lstat()
            h.update(
                os.fsencode(p.relative_to(root)) + f"\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}".encode()
            )
            if stat.S_ISLNK(st.st_mode):
                h.update(os.fsencode(os.readlink(p)))
            elif stat.S_ISREG(st.st_mode):
                h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def run_prepare(compose_cfg, root: Path, tmp_path: Path) -> None:
    prepare(compose_cfg(f"data.root={root}", config_name="prepare"))


def run_train(compose_cfg, root: Path, tmp_path: Path) -> None:
    train_main_path(compose_cfg(f"data.root={root}", *FAST))  # as make train: outputs/latest -> it


def run_evaluate(compose_cfg, root: Path, tmp_path: Path) -> None:
    evaluate(compose_cfg(config_name="evaluate"))  # the latest run's checkpoint on its test split
    # the data root as a plain folder (its images, the training data, scored on purpose)
    evaluate(compose_cfg(f"folder={root}", "exclude_training_duplicates=false", config_name="evaluate"))


# Every task that reads the data root. Cross-validation (skinlesion.cv) is being built in parallel:
# when it lands, add ("cv", run_cv) here with a run_cv that calls it the way its command line does.
PIPELINE = [
    ("prepare", run_prepare),
    ("train", run_train),
    ("evaluate", run_evaluate),
]


def test_a_short_pipeline_leaves_the_data_root_untouched(tmp_path, compose_cfg):
    root = make_class_folders(tmp_path / "data", per_class=8)
    (root / "Normal" / "link.png").symlink_to(root / "Normal" / "normal0.png")
    (root / "Normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # left out, not "fixed"
    before = tree_digest(root)
    for name, step in PIPELINE:
        step(compose_cfg, root, tmp_path)
        assert tree_digest(root) == before, f"{name} changed the data root"
    assert (tmp_path / "outputs/latest/eval-data/metrics.json").is_file()  # the folder evaluation went here
    os.utime(root / "Measles", ns=(0, 0))
    assert tree_digest(root) != before  # the digest sees a directory timestamp, so it would see a write


def test_outputs_inside_the_data_root_are_refused(tmp_path, compose_cfg):
    root = make_class_folders(tmp_path / "data", per_class=2)
    before = tree_digest(root)
    with pytest.raises(DataError, match="inside the data root"):
        prepare(
            compose_cfg(f"data.root={root}", f"paths.prepared_dir={root}/prepared", config_name="prepare")
        )
    assert tree_digest(root) == before
