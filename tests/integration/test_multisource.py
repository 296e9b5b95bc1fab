"""data=multisource on slices of the real MSID and MSLD v2: train through the command line, score
each source, and leave the external folder's copies of the training photos out of its score."""

import csv
import json
from pathlib import Path

import pytest

from tests.helpers import FAST, REAL_ROOT, run_cli

SHARED = REAL_ROOT.parent
# Known facts about the shared data (see shared/README.md), used as checks of the matcher's recall.
MSID = [
    "Chickenpox/chickenpox57.png",  # MSLD v2's Measles/MSL_19_01.jpg is a crop of it: a label conflict
    "Measles/measles10.png",
    "Measles/measles23.png",
    "Measles/measles37.png",
]
MSLD = [
    "Measles/MSL_19_01.jpg",
    "Chickenpox/CHP_01_01.jpg",  # external Chickenpox/1.jpg is a crop of it
    "Chickenpox/CHP_28_01.jpg",  # external Chickenpox/31.jpg and 68.jpg
    "Measles/MSL_34_01.jpg",  # external Measles/48.jpg and 77.jpg
]
EXTERNAL_CROPS = [
    "Chickenpox/1.jpg",
    "Chickenpox/31.jpg",
    "Chickenpox/68.jpg",
    "Measles/48.jpg",
    "Measles/77.jpg",
]
# Stock faces that SIFT pairs with other stock faces (7 inliers): they must stay in.
EXTERNAL_OTHERS = ["Normal/6.jpg", "Normal/34.jpg", "Chickenpox/10.jpg", "Measles/12.jpg", "Normal/12.jpg"]


def link(files: list[Path], source_root: Path, root: Path) -> None:
    for f in files:
        target = root / f.relative_to(source_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(f)


def slice_of(source_root: Path, root: Path, per_folder: int, known: list[str]) -> Path:
    """Every k-th file of each folder, plus the known ones, linked (not copied) under ``root``."""
    for folder in sorted(p for p in source_root.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        link(files[:: max(1, len(files) // per_folder)][:per_folder], source_root, root)
    link([source_root / k for k in known], source_root, root)
    return root


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> dict[str, Path]:
    if not (SHARED / "msld_v2").is_dir() or not (SHARED / "external/health_app_ml").is_dir():
        pytest.skip(f"msld_v2 or external data not found beside {REAL_ROOT}")
    base = tmp_path_factory.mktemp("multisource")
    return {
        "msid": slice_of(REAL_ROOT, base / "data/msid", 10, MSID),
        "msld_v2": slice_of(SHARED / "msld_v2", base / "data/msld_v2", 6, MSLD),
        "external": link_external(base / "external"),
        "base": base,
    }


def link_external(root: Path) -> Path:
    source = SHARED / "external/health_app_ml"
    link([source / f for f in EXTERNAL_CROPS + EXTERNAL_OTHERS], source, root)
    return root


@pytest.mark.integration
@pytest.mark.slow
def test_train_on_two_sources_scores_each_and_drops_the_external_copies(slices):
    base = slices["base"]
    outputs, run = base / "outputs", base / "outputs/run"
    done = run_cli(
        "skinlesion.train",
        "data=multisource",
        f"data.sources.msid.path={slices['msid']}",
        f"data.sources.msld_v2.path={slices['msld_v2']}",
        *FAST,
        f"paths.output_root={outputs}",
        f"hydra.run.dir={run}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [prepared] = (outputs / "prepared").glob("msid+msld_v2-*")
    report = json.loads((prepared / "report.json").read_text())
    with open(prepared / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["source"] for r in rows} == {"msid", "msld_v2"}
    assert {r["label"] for r in rows if r["source"] == "msld_v2"} >= {"Normal", "Cowpox", "HFMD"}
    conflicts = [set(c["members"]) for c in report["conflicts"]]
    assert any({"msid/Chickenpox/chickenpox57.png", "msld_v2/Measles/MSL_19_01.jpg"} <= c for c in conflicts)
    metrics = json.loads((run / "eval/metrics.json").read_text())
    assert metrics["test/sources"] == ["msid", "msld_v2"]
    assert sum(metrics[f"test/source/{s}/n"] for s in ("msid", "msld_v2")) == metrics["test/n"]
    assert "## Per source" in (run / "eval/classification_report.md").read_text()

    out = base / "eval-external"
    done = run_cli(
        "skinlesion.evaluate",
        f"ckpt_path={run / 'checkpoints/best.ckpt'}",
        f"folder={slices['external']}",
        f"output_dir={out}",
        f"paths.output_root={outputs}",
        "accelerator=cpu",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    excluded = {e["path"]: e["reason"] for e in json.loads((out / "excluded.json").read_text())}
    dropped = {p for p, reason in excluded.items() if reason.startswith("duplicate of the checkpoint's data")}
    assert dropped == set(EXTERNAL_CROPS)
    assert "msld_v2/Chickenpox/CHP_28_01.jpg" in excluded["Chickenpox/31.jpg"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["folder/n_duplicates_of_training_data"] == 5
    assert metrics["folder/n"] == len(EXTERNAL_OTHERS)
    assert "left out 5 files" in done.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_leave_one_source_out_tables_arms_and_resumes(slices):
    """make lodo on the slices: the held-out source is the whole test split and never trains, an
    evaluation arm and an ensemble run no training, and a second run trains nothing again."""
    base = slices["base"]
    out = base / "outputs/lodo"
    sources = ["data=multisource", *(f"data.sources.{s}.path={slices[s]}" for s in ("msid", "msld_v2"))]
    args = (
        "skinlesion.lodo",
        f"output_dir={out}",
        f"paths.output_root={base / 'outputs'}",
        f"external={slices['external']}",
        "holdouts=[msld_v2]",
        "seeds=[1,2]",
        "common=[" + ",".join(f"'{o}'" for o in [*sources, *FAST]) + "]",
        "~arms",  # replaced, not merged into conf/lodo.yaml's
        "+arms={baseline: {train: []}, no_smoothing: {train: ['model.label_smoothing=0.0']},"
        " rescored: {of: baseline, evaluate: ['batch_size=5']},"
        " ensemble: {members: [baseline, no_smoothing]}}",
    )
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    run = out / "baseline/msld_v2/seed1"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["holdout"]["source"] == "msld_v2"
    with open(run / "eval/predictions.csv", newline="") as fh:
        assert {r["path"].split("/")[0] for r in csv.DictReader(fh)} == {"msld_v2"}
    assert metrics["holdout"]["test"] == metrics["test/n"]
    assert metrics["holdout"]["seen_elsewhere"] >= 1  # MSL_19_01 is a crop of an MSID photo
    result = json.loads((out / "lodo.json").read_text())
    cells = result["arms"]
    assert set(cells) == {"baseline", "no_smoothing", "rescored", "ensemble"}
    assert not (out / "rescored/msld_v2/seed1/checkpoints").exists()  # evaluation only
    same = cells["rescored"]["msld_v2"]["heldout"]["vs_baseline"]
    assert same["by_seed"] == [0.0, 0.0] and same["verdict"] == "noise"  # batch size changes nothing
    for arm in cells.values():
        for target in ("heldout", "external"):
            s = arm["msld_v2"][target]["summary"]
            assert 0 <= s["acc_ci"][0] <= s["acc"] <= s["acc_ci"][1] <= 1
    assert cells["baseline"]["msld_v2"]["external"]["summary"]["n"] == len(EXTERNAL_OTHERS)
    assert "## On the external folder" in (out / "lodo.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.ckpt")}
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.ckpt")} == stamps
    assert json.loads((out / "lodo.json").read_text())["arms"] == cells
