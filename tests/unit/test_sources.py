"""Several sources: configuration, cross-source duplicates (crops too), patients, per-source splits."""

import csv
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
from PIL import Image, ImageDraw

from skinlesion.core.errors import ConfigError, DataError
from skinlesion.data.crops import CropParams, FeatureCache, Item, crop_pairs, vote
from skinlesion.data.datamodule import SkinLesionDataModule
from skinlesion.data.manifest import PrepareParams, prepare, read_manifest
from skinlesion.data.splits import SplitParams, assign_folds, assign_splits
from skinlesion.reports.per_source import per_source_metrics, sources_markdown
from tests.helpers import CLASSES, add_duplicates, compose_task, make_class_folders

CROPS = {"enabled": True}


def textured(seed: int, size: int = 192) -> Image.Image:
    """A photo-like image with many corners and blobs (what SIFT finds), unique per seed."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(np.clip(rng.normal(128, 30, (size, size, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(6, 30, 2)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        box = [int(x), int(y), int(x + w), int(y + h)]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


def crop_of(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """A crop resized back to the original size: what MSLD v2 made of many MSID photos."""
    return image.crop(box).resize(image.size, Image.BICUBIC)


def make_sources(tmp_path: Path) -> tuple[Path, Path]:
    """``alpha``: the four class folders, 5 images each. ``beta``: MSLD-like folders and names
    (<CLASS>_<patient>_<image>), Healthy for Normal, Cowpox outside the classes, no Measles; its
    MKP_09_01 is a crop of alpha's monkeypox0 (same label), its CHP_05_01 a crop of alpha's
    measles1 (another label)."""
    alpha, beta = tmp_path / "alpha", tmp_path / "beta"
    for ci, name in enumerate(CLASSES):
        (alpha / name).mkdir(parents=True)
        for k in range(5):
            textured(100 * ci + k).save(alpha / name / f"{name.lower()}{k}.png")
    prefixes = {"Chickenpox": "CHP", "Healthy": "HEALTHY", "Cowpox": "CWP", "Monkeypox": "MKP"}
    for fi, (folder, prefix) in enumerate(prefixes.items()):
        (beta / folder).mkdir(parents=True)
        for patient in range(1, 5):
            for image in range(1, 3 if patient % 2 else 2):
                seed = 10_000 + 1000 * fi + 10 * patient + image
                textured(seed).save(beta / folder / f"{prefix}_{patient:02d}_{image:02d}.png")
    crop_of(Image.open(alpha / "Monkeypox/monkeypox0.png"), (20, 30, 150, 170)).save(
        beta / "Monkeypox/MKP_09_01.jpg", quality=85
    )
    crop_of(Image.open(alpha / "Measles/measles1.png"), (40, 10, 180, 140)).save(
        beta / "Chickenpox/CHP_05_01.jpg", quality=85
    )
    return alpha, beta


def source_specs(alpha: Path, beta: Path, **beta_changes) -> dict:
    return {
        "alpha": {"name": "alpha", "path": str(alpha)},
        "beta": {
            "name": "beta",
            "path": str(beta),
            "label_map": {"Healthy": "Normal"},
            "outside": ["Cowpox"],
            "group_pattern": r"^([A-Z]+_\d+)_\d+\.",
        }
        | beta_changes,
    }


def params_for(sources: dict, crops: dict | None = CROPS, seed: int = 7) -> PrepareParams:
    return PrepareParams.from_config(CLASSES, {"seed": seed}, None, "train", sources, crops)


def test_two_sources_make_one_manifest_with_patients_crops_and_outside_labels(tmp_path):
    alpha, beta = make_sources(tmp_path)
    report = prepare(tmp_path / "unused", tmp_path / "out/prepared/x", params_for(source_specs(alpha, beta)))
    with open(tmp_path / "out/prepared/x/manifest.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["path", "sha256", "label", "group", "split", "source"]
    rows = read_manifest(tmp_path / "out/prepared/x/manifest.csv")
    row = {(r["source"], r["path"]): r for r in rows}
    assert len(rows) == 20 + 26
    # paths are relative to their own source; Healthy is Normal; Cowpox keeps its own label
    assert row["beta", "Healthy/HEALTHY_01_01.png"]["label"] == "Normal"
    assert {r["label"] for r in rows if r["path"].startswith("Cowpox/")} == {"Cowpox"}
    assert all(r["split"] in ("train", "val", "test") for r in rows)
    # a patient is one group; its images never straddle splits
    patient = row["beta", "Chickenpox/CHP_03_01.png"]["group"]
    assert patient == row["beta", "Chickenpox/CHP_03_02.png"]["group"]
    splits_of = defaultdict(set)
    for r in rows:
        splits_of[r["group"]].add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    # crops across sources join groups; the one with two labels is a reported conflict, kept in train
    crop = row["beta", "Monkeypox/MKP_09_01.jpg"]
    assert crop["group"] == row["alpha", "Monkeypox/monkeypox0.png"]["group"]
    conflict = row["beta", "Chickenpox/CHP_05_01.jpg"]
    assert conflict["group"] == row["alpha", "Measles/measles1.png"]["group"] and conflict["split"] == "train"
    [entry] = report["conflicts"]
    assert entry["members"] == ["alpha/Measles/measles1.png", "beta/Chickenpox/CHP_05_01.jpg"]
    assert report["twins_across_sources"] == {"alpha": {"beta": 2}, "beta": {"alpha": 2}}
    assert report["n_crop_pairs"] == 2 and report["outside_labels"] == ["Cowpox"]
    md = (tmp_path / "out/prepared/x/report.md").read_text()
    assert (
        "2 files of beta have a duplicate (or crop) in alpha" in md
        and "Images per class and split: beta" in md
    )
    # the features are cached by content: a second run computes nothing and agrees byte for byte
    cached = sorted(p.name for p in (tmp_path / "out/prepared/features").rglob("*.npz"))
    assert len(cached) == len({r["sha256"] for r in rows})
    prepare(tmp_path / "unused", tmp_path / "out/prepared/y", params_for(source_specs(alpha, beta)))
    assert (tmp_path / "out/prepared/x/manifest.csv").read_bytes() == (
        tmp_path / "out/prepared/y/manifest.csv"
    ).read_bytes()


def test_without_the_crop_check_crops_are_missed(tmp_path):
    """The reason for the crop check: perceptual hashes alone leave the crops in their own groups."""
    alpha, beta = make_sources(tmp_path)
    report = prepare(tmp_path, tmp_path / "out/p", params_for(source_specs(alpha, beta), crops=None))
    assert report["twins_across_sources"] == {} and report["conflicts"] == []


def test_datamodule_trains_on_the_classes_only_and_names_each_items_source(tmp_path):
    alpha, beta = make_sources(tmp_path)
    dm = SkinLesionDataModule(
        prepared_dir=str(tmp_path / "prepared"),
        class_names=CLASSES,
        sources=source_specs(alpha, beta),
        crop_duplicates=CROPS,
        image_size=32,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.root == tmp_path.resolve() and dm.manifest_path.parent.name.startswith("alpha+beta-")
    items = [
        (p, s)
        for split in ("train", "val", "test")
        for p, s in zip([i[0] for i in dm.datasets[split].items], dm.datasets[split].sources, strict=True)
    ]
    assert len(items) == 46 - 6  # every image but Cowpox
    assert all(p.startswith(f"{s}/") and (tmp_path / p).is_file() for p, s in items)
    assert not any("Cowpox" in p for p, _ in items)
    x, y = dm.datasets["train"][0]
    assert x.shape == (3, 32, 32) and 0 <= y < 4
    # the data moved: data.root names the folder that holds the sources now
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("alpha", "beta"):
        shutil.move(tmp_path / name, moved / name)
    dm2 = SkinLesionDataModule(
        root=str(moved),
        prepared_dir=str(tmp_path / "prepared"),
        class_names=CLASSES,
        sources=source_specs(alpha, beta),
        crop_duplicates=CROPS,
    )
    assert [s.path for s in dm2.params.sources] == [str(moved / "alpha"), str(moved / "beta")]
    assert dm2.prepare_data()["manifest_sha256"] == dm.report["manifest_sha256"]


def test_one_source_in_sources_form_splits_exactly_like_the_single_root(tmp_path, synthetic_root):
    add_duplicates(synthetic_root)
    legacy = prepare(
        synthetic_root, tmp_path / "a", PrepareParams.from_config(CLASSES, {"seed": 7}, None, "train")
    )
    one = prepare(synthetic_root, tmp_path / "b", params_for({"data": {"path": str(synthetic_root)}}))
    columns = ("path", "label", "group", "split")
    old = [tuple(r[c] for c in columns) for r in read_manifest(tmp_path / "a/manifest.csv")]
    new = read_manifest(tmp_path / "b/manifest.csv")
    assert old == [tuple(r[c] for c in columns) for r in new] and {r["source"] for r in new} == {"data"}
    assert legacy["counts"] == one["counts"]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"path": "/nonexistent/beta"}, DataError, r"source 'beta': path /nonexistent/beta does not exist"),
        (
            {"label_map": {"Healthy": "Norml"}},
            ConfigError,
            r"label_map names unknown class\(es\) \['Norml'\]",
        ),
        (
            {"group_pattern": "^patient([0-9]+)"},
            DataError,
            r"group_pattern '\^patient\(\[0-9\]\+\)' matches none",
        ),
        ({"name": "alpha"}, ConfigError, r"two data sources share the name 'alpha'"),
        ({"label_map": {"Sick": "Monkeypox"}}, DataError, r"name folder\(s\) \['Sick'\] that .* lacks"),
        ({"group_pattern": "(unclosed"}, ConfigError, r"group_pattern '\(unclosed' is invalid"),
        ({"colour": "red"}, ConfigError, r"unknown key\(s\) \['colour'\]"),
    ],
    ids=[
        "missing-path",
        "unknown-class",
        "pattern-matches-nothing",
        "same-name",
        "missing-folder",
        "bad-regex",
        "unknown-key",
    ],
)
def test_bad_sources_get_one_clear_error(tmp_path, change, error, message):
    alpha, beta = make_sources(tmp_path)
    with pytest.raises(error, match=message):
        prepare(tmp_path, tmp_path / "out/p", params_for(source_specs(alpha, beta, **change), crops=None))


def test_a_class_no_source_holds_is_named(tmp_path):
    _, beta = make_sources(tmp_path)
    specs = {"beta": source_specs(tmp_path, beta)["beta"]}
    with pytest.raises(DataError, match=r"no source holds an image of the class\(es\) \['Measles'\]"):
        prepare(tmp_path, tmp_path / "out/p", params_for(specs, crops=None))


def stratified_rows() -> list[dict[str, str]]:
    """Two sources of very different make-up: every split and fold should get its share of each."""
    rows = []
    for source, sizes in (("a", {"Monkeypox": 60, "Normal": 40}), ("b", {"Monkeypox": 20, "Normal": 80})):
        for label, n in sizes.items():
            rows += [
                {
                    "path": f"{source}{label}{k}",
                    "label": label,
                    "group": f"{source}{label}{k}",
                    "source": source,
                    "split": "train",
                }
                for k in range(n)
            ]
    return rows


def test_splits_and_folds_are_stratified_by_class_and_source():
    rows = stratified_rows()
    mapping, _ = assign_splits(
        [r["label"] for r in rows],
        [r["group"] for r in rows],
        SplitParams(seed=3),
        "train",
        [r["source"] for r in rows],
    )
    counts = Counter((r["source"], r["label"], mapping[r["group"]]) for r in rows)
    assert counts["b", "Monkeypox", "test"] == 2 and counts["b", "Monkeypox", "val"] == 2
    assert counts["a", "Monkeypox", "test"] == 6 and counts["b", "Normal", "test"] == 8
    folds = assign_folds(rows, 4, seed=3)
    per_fold = Counter((r["source"], r["label"], folds[r["group"]]) for r in rows)
    assert all(per_fold["b", "Monkeypox", f] == 5 and per_fold["a", "Normal", f] == 10 for f in range(4))


def test_crop_matcher_finds_crops_not_lookalikes_and_is_deterministic(tmp_path):
    originals = [textured(s) for s in range(6)]
    paths = []
    for i, im in enumerate(originals):
        paths.append(tmp_path / f"ref{i}.png")
        im.save(paths[-1])
    crop_of(originals[2], (30, 20, 140, 150)).rotate(7, resample=Image.BICUBIC).save(tmp_path / "q0.jpg")
    crop_of(originals[4], (0, 0, 120, 96)).save(tmp_path / "q1.png")  # not square: anisotropic
    textured(99).save(tmp_path / "q2.png")  # looks like the others to a colour histogram, is none
    refs = [Item(f"ref{i}", f"r{i}", p) for i, p in enumerate(paths)]
    queries = [
        Item(f"q{i}", f"q{i}", tmp_path / name) for i, name in enumerate(["q0.jpg", "q1.png", "q2.png"])
    ]
    params = CropParams(enabled=True)
    cache = FeatureCache(None, params)
    found = crop_pairs(queries, refs, cache, params)
    assert [(p["a"], p["b"]) for p in found] == [("q0", "ref2"), ("q1", "ref4")]
    assert all(p["inliers"] >= params.sure_inliers for p in found)
    first = vote(queries, refs, cache, params)
    assert all(vote(queries, refs, FeatureCache(None, params), params) == first for _ in range(2))


def test_multisource_config_composes_and_a_third_source_is_one_more_file(tmp_path):
    cfg = compose_task("train", ["data=multisource"])
    assert list(cfg.data.sources) == ["msid", "msld_v2"] and cfg.data.crop_duplicates.enabled
    assert dict(cfg.data.sources.msld_v2.label_map) == {"Healthy": "Normal"}
    assert compose_task("train", []).data.get("sources") is None  # data=msid: one root, as before
    alpha, beta = make_sources(tmp_path)
    third = tmp_path / "gamma"
    make_class_folders(third, per_class=3, classes=["Measles", "Normal"])
    conf = tmp_path / "conf/data/source"
    conf.mkdir(parents=True)
    (conf / "gamma.yaml").write_text(f"name: gamma\npath: {third}\nlabel_map: {{}}\noutside: []\n")
    cfg = compose_task(
        "prepare",
        [
            "data=multisource",
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            "+data/source@data.sources.gamma=gamma",
            f"data.sources.msid.path={alpha}",
            f"data.sources.msld_v2.path={beta}",
            "data.sources.msld_v2.outside=[Cowpox]",
            f"paths.output_root={tmp_path / 'outputs'}",
        ],
    )
    dm = hydra.utils.instantiate(cfg.data, _convert_="all", _execution_whitelist_="skinlesion.*")
    report = dm.prepare_data()
    assert [s["name"] for s in report["sources"]] == ["msid", "msld_v2", "gamma"]
    assert set(report["counts_by_source"]["gamma"]["train"]) <= {"Measles", "Normal"}


def test_per_source_metrics_score_each_source_beside_the_pooled_figures():
    targets = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    preds = np.array([0, 1, 2, 3, 0, 1, 0, 0])  # source "a" all right, source "b" half wrong
    probs = np.eye(4)[preds] * 0.7 + 0.075
    sources = ["a"] * 4 + ["b"] * 4
    assert per_source_metrics(probs, targets, CLASSES, "test", None) == {}
    assert per_source_metrics(probs, targets, CLASSES, "test", ["a"] * 8) == {}
    m = per_source_metrics(probs, targets, CLASSES, "test", sources, [f"g{i}" for i in range(8)])
    assert m["test/sources"] == ["a", "b"]
    assert m["test/source/a/acc"] == 1.0 and m["test/source/b/acc"] == 0.5
    assert m["test/source/b/n"] == 4 and m["test/source/b/recall/Monkeypox"] == 0.0
    low, high = m["test/source/b/acc_ci"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0
    md = sources_markdown(m | {"test/ci_level": 0.95}, CLASSES, "test")
    assert "| b | 4 | 0.500" in md and "## Per source" in md
    assert sources_markdown({}, CLASSES, "test") == ""


def test_holdout_makes_the_held_out_source_the_whole_test_split():
    from skinlesion.data.sources import holdout_rows

    def row(source, path, label, group, split):
        return {"source": source, "path": path, "label": label, "group": group, "split": split}

    rows = [
        row("a", "1.png", "Measles", "g1", "train"),
        row("a", "2.png", "Normal", "g2", "test"),
        row("b", "3.jpg", "Measles", "g1", "val"),  # a crop of a's training photo: seen
        row("b", "4.jpg", "Normal", "g3", "train"),
        row("b", "5.jpg", "Cowpox", "g4", "test"),  # outside the classes
        row("b", "6.jpg", "Normal", "g2", "test"),  # twin of a's *test* photo: never trained, kept
    ]
    out, counts = holdout_rows(rows, "b", ["Measles", "Normal"])
    assert [r["split"] for r in out] == ["train", "excluded", "excluded", "test", "excluded", "test"]
    assert counts == {"test": 2, "seen_elsewhere": 1, "outside_classes": 1}
    assert rows[3]["split"] == "train"  # the manifest's rows are not modified
    with pytest.raises(ConfigError, match="'c' is not a source"):
        holdout_rows(rows, "c", ["Measles", "Normal"])
    with pytest.raises(DataError, match="leaves no test photo"):
        holdout_rows(rows[:3], "b", ["Measles", "Normal"])
