"""Preparation: deterministic, grouped, stratified, leakage-free; bad data gets a clear answer."""

import csv
from collections import Counter, defaultdict

import pytest

from skinlesion.core.errors import DataError
from skinlesion.data.manifest import PrepareParams, ensure_prepared, prepare, read_manifest
from tests.helpers import CLASSES, add_duplicates, make_class_folders

PARAMS = PrepareParams.from_config(CLASSES, {"seed": 7}, None, "train")


def test_manifest_is_byte_identical_for_same_inputs(tmp_path, synthetic_root):
    add_duplicates(synthetic_root)
    prepare(synthetic_root, tmp_path / "a", PARAMS)
    prepare(synthetic_root, tmp_path / "b", PARAMS)
    assert (tmp_path / "a/manifest.csv").read_bytes() == (tmp_path / "b/manifest.csv").read_bytes()
    other = PrepareParams.from_config(CLASSES, {"seed": 8}, None, "train")
    prepare(synthetic_root, tmp_path / "c", other)
    assert (tmp_path / "a/manifest.csv").read_bytes() != (tmp_path / "c/manifest.csv").read_bytes()


def test_groups_never_straddle_splits_and_conflicts_stay_in_train(tmp_path, synthetic_root):
    add_duplicates(synthetic_root)
    report = prepare(synthetic_root, tmp_path, PARAMS)
    rows = read_manifest(tmp_path / "manifest.csv")
    splits_of = defaultdict(set)
    group_of = {}
    for r in rows:
        splits_of[r["group"]].add(r["split"])
        group_of[r["path"]] = r["group"]
    assert all(len(s) == 1 for s in splits_of.values())
    assert group_of["Measles/measles0.png"] == group_of["Measles/measles_copy.png"]
    assert group_of["Normal/normal0.png"] == group_of["Normal/normal_reencoded.jpg"]
    conflict = group_of["Chickenpox/chickenpox0.png"]
    assert conflict == group_of["Monkeypox/monkeypox_mislabelled.png"]
    assert splits_of[conflict] == {"train"}
    assert [g["group"] for g in report["conflicts"]] == [conflict]
    assert report["n_exact_pairs"] == 2 and report["n_near_pairs"] >= 1


def test_conflicts_can_be_excluded(tmp_path, synthetic_root):
    add_duplicates(synthetic_root)
    params = PrepareParams.from_config(CLASSES, None, None, "exclude")
    prepare(synthetic_root, tmp_path, params)
    rows = {r["path"]: r["split"] for r in read_manifest(tmp_path / "manifest.csv")}
    assert rows["Monkeypox/monkeypox_mislabelled.png"] == "excluded"


def test_split_is_stratified_80_10_10(tmp_path):
    root = make_class_folders(tmp_path / "data", per_class=20)
    report = prepare(root, tmp_path / "out", PARAMS)
    for name in CLASSES:
        counts = {s: report["counts"][s].get(name, 0) for s in ("train", "val", "test")}
        assert counts == {"train": 16, "val": 2, "test": 2}


def test_corrupt_and_non_image_files_are_reported_not_dropped_silently(tmp_path, synthetic_root):
    good = (synthetic_root / "Measles/measles1.png").read_bytes()
    (synthetic_root / "Measles/truncated.png").write_bytes(good[: len(good) // 3])
    (synthetic_root / "Normal/notes.txt").write_text("not an image")
    (synthetic_root / "README.md").write_text("stray file at the root")
    report = prepare(synthetic_root, tmp_path, PARAMS)
    reasons = {e["path"]: e["reason"] for e in report["excluded"]}
    assert "corrupt or truncated" in reasons["Measles/truncated.png"]
    assert "not a recognised image" in reasons["Normal/notes.txt"]
    assert "README.md" in reasons
    paths = {r["path"] for r in read_manifest(tmp_path / "manifest.csv")}
    assert "Measles/truncated.png" not in paths and "Measles/measles1.png" in paths
    md = (tmp_path / "report.md").read_text()
    assert "Measles/truncated.png" in md and "notes.txt" in md


def test_missing_root_says_where_to_get_the_data(tmp_path):
    with pytest.raises(DataError, match="dipuiucse/monkeypoxskinimagedataset") as err:
        prepare(tmp_path / "nowhere", tmp_path / "out", PARAMS)
    assert "data.root" in str(err.value) and "SKINLESION_DATA" in str(err.value)


def test_empty_class_folder_is_a_clear_error(tmp_path, synthetic_root):
    for f in (synthetic_root / "Measles").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"Measles.*no usable images"):
        prepare(synthetic_root, tmp_path / "out", PARAMS)


def test_wrong_folders_are_named(tmp_path, synthetic_root):
    (synthetic_root / "Measles").rename(synthetic_root / "measels")
    with pytest.raises(DataError, match=r"lacks the class folder\(s\) \['Measles'\].*measels"):
        prepare(synthetic_root, tmp_path / "out", PARAMS)


def test_ensure_prepared_reuses_then_notices_changed_data(tmp_path, synthetic_root):
    manifest, first = ensure_prepared(synthetic_root, tmp_path, PARAMS)
    stamp = manifest.stat().st_mtime_ns
    ensure_prepared(synthetic_root, tmp_path, PARAMS)
    assert manifest.stat().st_mtime_ns == stamp  # reused
    (synthetic_root / "Normal/normal0.png").unlink()
    _, second = ensure_prepared(synthetic_root, tmp_path, PARAMS)
    assert second["n_images"] == first["n_images"] - 1


def test_manifest_columns(tmp_path, synthetic_root):
    prepare(synthetic_root, tmp_path, PARAMS)
    with open(tmp_path / "manifest.csv", newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["path", "sha256", "label", "group", "split"]
        labels = Counter(row[2] for row in reader)
    assert labels == dict.fromkeys(CLASSES, 12)
