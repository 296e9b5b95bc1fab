"""``data.split.min_val_per_class``: val gets at least that many photos of each class, taken from
train as whole groups; test is the split it was, and folders outside the classes are left alone."""

from __future__ import annotations

from collections import Counter

import pytest

from skinlesion.core.errors import DataError
from skinlesion.data.manifest import PrepareParams, prepare, read_manifest
from skinlesion.data.splits import SplitParams, assign_splits
from tests.helpers import CLASSES, make_class_folders


def params(**split) -> PrepareParams:
    return PrepareParams.from_config(CLASSES, {"seed": 5} | split, None, "train")


def test_val_is_topped_up_from_train_and_test_is_untouched(tmp_path):
    root = make_class_folders(tmp_path / "data", per_class=40, size=24)
    prepare(root, tmp_path / "plain", params())
    prepare(root, tmp_path / "topped", params(min_val_per_class=9))
    plain = {r["path"]: r["split"] for r in read_manifest(tmp_path / "plain/manifest.csv")}
    topped = read_manifest(tmp_path / "topped/manifest.csv")

    before = Counter((r["label"], plain[r["path"]]) for r in topped)
    after = Counter((r["label"], r["split"]) for r in topped)
    for c in CLASSES:
        assert before[c, "val"] == 4 and after[c, "val"] == 9  # 10 % of 40, then topped up to 9
        assert after[c, "train"] == before[c, "train"] - 5
    assert all(r["split"] == "test" for r in topped if plain[r["path"]] == "test")
    assert all(plain[r["path"]] == "test" for r in topped if r["split"] == "test")
    moved = [r for r in topped if r["split"] != plain[r["path"]]]
    assert all(plain[r["path"]] == "train" and r["split"] == "val" for r in moved)
    # the same seed gives the same manifest; the key of the prepared folder says the split changed
    prepare(root, tmp_path / "again", params(min_val_per_class=9))
    assert (tmp_path / "again/manifest.csv").read_bytes() == (tmp_path / "topped/manifest.csv").read_bytes()
    assert params(min_val_per_class=9).key() != params().key() == params(min_val_per_class=0).key()


def test_whole_groups_move_and_other_folders_stay_where_they_were():
    # patients of 3 photos each; "Cowpox" is a folder outside the classes (only CLASSES top up)
    labels, groups = [], []
    for label in (*CLASSES, "Cowpox"):
        for p in range(12):
            labels += [label] * 3
            groups += [f"{label}-p{p}"] * 3
    split = SplitParams(seed=1, min_val_per_class=10)
    plain, _ = assign_splits(labels, groups, SplitParams(seed=1), "train")
    topped, _ = assign_splits(labels, groups, split, "train", classes=CLASSES)

    val = Counter(label for label, g in zip(labels, groups, strict=True) if topped[g] == "val")
    assert all(10 <= val[c] <= 12 for c in CLASSES)  # whole patients: 3 at a time, so 12, not 10
    assert all(topped[g] == plain[g] for g in topped if g.startswith("Cowpox"))
    assert all(plain[g] == "train" for g in topped if topped[g] != plain[g])
    assert {g for g in topped if topped[g] == "test"} == {g for g in plain if plain[g] == "test"}
    # without ``classes`` the outside folder would be topped up too: the filter is what keeps it
    every, _ = assign_splits(labels, groups, split, "train")
    assert any(every[g] != plain[g] for g in every if g.startswith("Cowpox"))


def test_a_class_with_too_few_photos_gives_what_train_has():
    labels = ["Measles"] * 6 + ["Normal"] * 40
    groups = [f"f{i}" for i in range(len(labels))]
    topped, _ = assign_splits(labels, groups, SplitParams(seed=0, min_val_per_class=30), "train")
    by = Counter((label, topped[g]) for label, g in zip(labels, groups, strict=True))
    assert by["Measles", "train"] == 0 and by["Measles", "val"] + by["Measles", "test"] == 6
    assert by["Normal", "val"] == 30 and by["Normal", "test"] == 4


@pytest.mark.parametrize("bad", [-1, 2.5, "19", True])
def test_min_val_per_class_must_be_a_whole_number(bad):
    with pytest.raises(DataError, match="min_val_per_class"):
        params(min_val_per_class=bad)
