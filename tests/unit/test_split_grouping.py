"""``data.split.grouped``: false splits file by file (the published MSID papers' protocol, for the
leakage audit); true (the default) keeps duplicate groups whole and leaves today's prepared data as
it was, byte for byte and folder for folder."""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from pathlib import Path

import hydra.utils
import pytest

from skinlesion.core.errors import DataError
from skinlesion.data.manifest import PrepareParams, prepare, prepared_dir, read_manifest
from tests.helpers import CLASSES, make_class_folders

# conf/data/msid.yaml's preparation settings, as they were before split.grouped existed
MSID_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1, "seed": 42}
MSID_NEAR = {"enabled": True, "phash": 10, "dhash": 10, "whash": 6, "min_votes": 2}
MSID_KEY = "7ed4e5a4"  # the prepared-folder key of data=msid before split.grouped (outputs/prepared)


def params(**split) -> PrepareParams:
    return PrepareParams.from_config(CLASSES, {"seed": 7} | split, None, "train")


@pytest.fixture
def twins_root(tmp_path: Path) -> Path:
    """10 images per class, each with an exact copy: 40 duplicate groups of two files."""
    root = make_class_folders(tmp_path / "data", per_class=10)
    for f in sorted(root.glob("*/*.png")):
        shutil.copy(f, f.with_name(f"{f.stem}_copy.png"))
    return root


def splits_by_group(rows: list[dict[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        out[r["group"]].add(r["split"])
    return out


def test_ungrouped_lets_duplicate_groups_straddle_the_splits_grouped_never(tmp_path, twins_root):
    prepare(twins_root, tmp_path / "grouped", params())
    report = prepare(twins_root, tmp_path / "random", params(grouped=False))
    grouped = read_manifest(tmp_path / "grouped/manifest.csv")
    ungrouped = read_manifest(tmp_path / "random/manifest.csv")

    assert all(len(s) == 1 for s in splits_by_group(grouped).values())
    straddling = [g for g, s in splits_by_group(ungrouped).items() if len(s) > 1]
    assert straddling, "with 40 twin pairs, a file-by-file split must cut some"
    assert any("test" in splits_by_group(ungrouped)[g] for g in straddling)
    # the group column still records the duplicate groups: the audit counts twins across splits by it
    assert [(r["path"], r["group"]) for r in grouped] == [(r["path"], r["group"]) for r in ungrouped]
    assert len({r["group"] for r in ungrouped}) == 40
    # still stratified by class, 80/10/10 of each class's 20 files
    counts = Counter((r["label"], r["split"]) for r in ungrouped)
    assert all(counts[c, "train"] == 16 and counts[c, "val"] == 2 and counts[c, "test"] == 2 for c in CLASSES)
    # the report names the splits each straddling group landed in
    assert report["params"]["split"]["grouped"] is False
    assert {g["group"] for g in report["duplicate_groups"] if "+" in g["split"]} == set(straddling)


def test_ungrouped_split_follows_its_seed(tmp_path, twins_root):
    prepare(twins_root, tmp_path / "a", params(grouped=False))
    prepare(twins_root, tmp_path / "b", params(grouped=False))
    prepare(twins_root, tmp_path / "c", params(grouped=False, seed=8))
    a, b, c = (tmp_path / d / "manifest.csv" for d in "abc")
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_default_keeps_the_prepared_key_and_the_manifest_bytes(tmp_path, synthetic_root):
    before = PrepareParams.from_config(CLASSES, MSID_SPLIT, MSID_NEAR, "train")
    now = PrepareParams.from_config(CLASSES, MSID_SPLIT | {"grouped": True}, MSID_NEAR, "train")
    assert before.key() == now.key() == MSID_KEY
    assert "grouped" not in now.as_dict()["split"]
    ungrouped = PrepareParams.from_config(CLASSES, MSID_SPLIT | {"grouped": False}, MSID_NEAR, "train")
    assert prepared_dir(tmp_path, synthetic_root, ungrouped) != prepared_dir(tmp_path, synthetic_root, now)

    prepare(synthetic_root, tmp_path / "implicit", params())
    prepare(synthetic_root, tmp_path / "explicit", params(grouped=True))
    for name in ("manifest.csv", "report.json", "report.md"):
        assert (tmp_path / "implicit" / name).read_bytes() == (tmp_path / "explicit" / name).read_bytes()


def test_the_msid_config_is_grouped_with_the_old_key(compose_cfg):
    cfg = compose_cfg("data=msid")
    assert cfg.data.split.grouped is True
    assert hydra.utils.instantiate(cfg.data).params.key() == MSID_KEY


def test_grouped_must_be_a_boolean():
    with pytest.raises(DataError, match="grouped"):
        params(grouped="no")
