"""Cross-validation folds: grouped, stratified, conflicts only in training, test untouched."""

import csv
from collections import Counter, defaultdict
from types import SimpleNamespace

import pytest

from skinlesion.core.errors import DataError
from skinlesion.cv import fold_pool_sizes
from skinlesion.data.datamodule import SkinLesionDataModule
from skinlesion.data.manifest import MANIFEST_COLUMNS
from skinlesion.data.splits import assign_folds, fold_rows
from tests.helpers import CLASSES, add_duplicates


def manifest_rows() -> list[dict[str, str]]:
    """A manifest-like table: 4 classes of unequal size, groups of 1-3 images, one label conflict."""
    rows, g = [], 0
    for ci, (label, n_groups) in enumerate(zip(CLASSES, (21, 17, 45, 40), strict=True)):
        for k in range(n_groups):
            size = 1 + (k * 7 + ci) % 3 if k % 4 == 0 else 1
            split = "test" if k % 10 == 9 else ("val" if k % 10 == 8 else "train")
            rows += [
                {"path": f"{label}/{k}_{j}.png", "label": label, "group": f"g{g}", "split": split}
                for j in range(size)
            ]
            g += 1
    rows += [
        {"path": "Chickenpox/x.png", "label": "Chickenpox", "group": "gc", "split": "train"},
        {"path": "Monkeypox/x.png", "label": "Monkeypox", "group": "gc", "split": "train"},
    ]
    return rows


@pytest.mark.parametrize("n_folds", [2, 5])
def test_folds_are_grouped_stratified_and_keep_conflicts_out(n_folds):
    rows = [r for r in manifest_rows() if r["split"] != "test"]
    folds = assign_folds(rows, n_folds, seed=3)
    assert folds["gc"] is None
    assert set(folds.values()) - {None} == set(range(n_folds))
    per_fold = defaultdict(Counter)
    for r in rows:
        if folds[r["group"]] is not None:
            per_fold[r["label"]][folds[r["group"]]] += 1
    for label in CLASSES:
        counts = [per_fold[label][f] for f in range(n_folds)]
        assert max(counts) - min(counts) <= 3, (label, counts)  # at most one (largest) group apart
    assert assign_folds(rows, n_folds, seed=3) == folds
    assert assign_folds(rows, n_folds, seed=4) != folds


def test_each_non_test_image_is_val_in_exactly_one_fold_and_test_never_moves():
    rows = manifest_rows()
    views = [fold_rows(rows, k, 4, seed=0) for k in range(4)]
    val_counts = Counter(r["path"] for view in views for r in view if r["split"] == "val")
    pool = {r["path"] for r in rows if r["split"] != "test" and r["group"] != "gc"}
    assert set(val_counts) == pool and set(val_counts.values()) == {1}
    for view in views:
        assert [r for r in view if r["split"] == "test"] == [r for r in rows if r["split"] == "test"]
        assert {r["split"] for r in view if r["group"] == "gc"} == {"train"}
        splits_of = defaultdict(set)
        for r in view:
            splits_of[r["group"]].add(r["split"])
        assert all(len(s) == 1 for s in splits_of.values())


def test_bad_fold_numbers_are_named():
    with pytest.raises(DataError, match=r"fold must be in 0\.\.2"):
        fold_rows(manifest_rows(), 3, 3, seed=0)
    with pytest.raises(DataError, match="at least 2 folds"):
        fold_rows(manifest_rows(), 0, 1, seed=0)


def test_datamodule_fold_rebuilds_train_and_val_from_the_manifest(tmp_path, synthetic_root):
    add_duplicates(synthetic_root)
    kw = dict(root=str(synthetic_root), prepared_dir=str(tmp_path / "p"), class_names=CLASSES, image_size=32)
    plain = SkinLesionDataModule(**kw)
    plain.prepare_data()
    plain.setup()
    pool = {p for s in ("train", "val") for p, _ in plain.datasets[s].items}
    seen_val = []
    for k in range(3):
        dm = SkinLesionDataModule(**kw, fold=k, n_folds=3)
        dm.prepare_data()
        dm.setup()
        train, val = ({p for p, _ in dm.datasets[s].items} for s in ("train", "val"))
        assert train | val == pool and not train & val
        assert dm.datasets["test"].items == plain.datasets["test"].items
        assert "Monkeypox/monkeypox_mislabelled.png" in train  # label-conflict group: training only
        assert dm.datasets["val"].groups == [r["group"] for r in dm.split_rows("val")]
        seen_val += val
    conflict = {"Monkeypox/monkeypox_mislabelled.png", "Chickenpox/chickenpox0.png"}
    assert sorted(seen_val) == sorted(pool - conflict)


def test_the_cv_report_counts_only_the_photos_its_folds_score(tmp_path):
    # other rashes (data=multisource) sit in train + val and in the folds' groups, but no fold scores them
    rows = manifest_rows() + [
        {"path": f"Cowpox/{k}.png", "label": "Cowpox", "group": f"o{k}", "split": "train" if k % 5 else "val"}
        for k in range(30)
    ]
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, MANIFEST_COLUMNS, extrasaction="ignore", restval="")
        w.writeheader()
        w.writerows(rows)
    dm = SimpleNamespace(
        manifest_path=manifest, class_names=CLASSES, params=SimpleNamespace(split=SimpleNamespace(seed=0))
    )
    scored_val = [
        r
        for k in range(4)
        for r in fold_rows(rows, k, 4, seed=0)
        if r["split"] == "val" and r["label"] in CLASSES
    ]
    assert fold_pool_sizes(dm, 4) == (len(scored_val), 2)  # the two photos of the conflict group gc
    in_class = [r for r in rows if r["split"] != "test" and r["label"] in CLASSES]
    assert len(scored_val) + 2 == len(in_class) < len([r for r in rows if r["split"] != "test"])
