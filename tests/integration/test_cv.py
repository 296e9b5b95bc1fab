"""Cross-validation end to end on the real-data slice: fold runs, report, resume, test untouched."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from skinlesion.calibrate import calibrate
from skinlesion.core.errors import ConfigError, DataError
from skinlesion.cv import cross_validate
from skinlesion.cv_compare import compare
from skinlesion.data.manifest import read_manifest
from skinlesion.evaluate import evaluate
from skinlesion.inference.loading import load_classifier
from skinlesion.models.conformal import fit_set_thresholds
from skinlesion.reports.heldout import read_predictions
from tests.helpers import FAST


def probabilities(predictions: Path) -> np.ndarray:
    with open(predictions, newline="") as fh:
        return np.array(
            [[float(v) for k, v in row.items() if k.startswith("p_")] for row in csv.DictReader(fh)]
        )


def val_paths(fold_dir: Path) -> set[str]:
    with open(fold_dir / "eval-val" / "predictions.csv", newline="") as fh:
        return {row["path"] for row in csv.DictReader(fh)}


@pytest.mark.integration
def test_cv_on_real_slice(tmp_path, compose_cfg, real_slice):
    cfg = compose_cfg(f"data.root={real_slice}", *FAST, "trainer.max_epochs=1", "n_folds=3", config_name="cv")
    report = cross_validate(cfg)
    out = Path(cfg.paths.output_dir)
    assert [f["fold"] for f in report["folds"]] == [0, 1, 2]
    for name in ("acc", "f1_macro", "recall/Measles"):
        values = [f[name] for f in report["folds"]]
        assert report["summary"][name]["mean"] == pytest.approx(np.mean(values))
        assert report["summary"][name]["sd"] == pytest.approx(np.std(values, ddof=1))
    for a in ("cv_report.md", "cv_report.json", "cv_folds.png", "oof/confusion_matrix.png"):
        assert (out / a).stat().st_size > 0, a
    assert "± " in (out / "cv_report.md").read_text()
    sizes = json.loads((out / "oof" / "calibration_sizes.json").read_text())  # set size by calibration size
    assert sizes["level"] == report["oof"]["set_level"] == 0.9 and sizes["draws"] == 1000
    assert "How many calibration photos" in (out / "oof" / "calibration_sizes.md").read_text()

    # every train+val image is scored in exactly one fold; no test image ever is
    manifest = read_manifest(next((tmp_path / "outputs" / "prepared").glob("*/manifest.csv")))
    folds = [val_paths(out / f"fold{k}") for k in range(3)]
    assert sum(map(len, folds)) == len(set().union(*folds)) == report["n_images"]
    pool = {r["path"] for r in manifest if r["split"] in ("train", "val")}
    assert set().union(*folds) <= pool and report["n_images"] + report["n_conflict_images"] == len(pool)
    assert all(Path(c).is_file() for c in report["checkpoints"])  # kept for a fold ensemble
    assert not (tmp_path / "outputs" / "latest").exists()

    # a second call resumes: finished folds are not trained again, an interrupted one (no
    # metrics.json yet) goes on from its last.ckpt and keeps its best.ckpt name
    stamps = [Path(c).stat().st_mtime_ns for c in report["checkpoints"]]
    (out / "fold1" / "metrics.json").unlink()
    again = cross_validate(cfg)
    assert [Path(c).stat().st_mtime_ns for c in again["checkpoints"]][::2] == stamps[::2]
    assert (out / "fold1" / "metrics.json").is_file()
    assert sorted(p.name for p in (out / "fold1" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert again["summary"] == report["summary"]
    assert json.loads((out / "cv_report.json").read_text())["oof"]["n"] == report["n_images"]

    # the fold ensemble on the test split: the mean of the members' probabilities, image by image
    ens = evaluate(compose_cfg(f"ckpt_path={out}", config_name="evaluate"))
    assert ens["test/ensemble_members"] == report["checkpoints"]
    members = []
    for k, ckpt in enumerate(report["checkpoints"]):
        evaluate(
            compose_cfg(f"ckpt_path={ckpt}", f"output_dir={tmp_path / f'member{k}'}", config_name="evaluate")
        )
        members.append(probabilities(tmp_path / f"member{k}" / "predictions.csv"))
    assert np.allclose(
        probabilities(out / "ensemble-eval" / "predictions.csv"), np.mean(members, axis=0), atol=2e-6
    )

    # cv_compare reads a real run's artefacts: its fold scores are the report's; against a copy of
    # itself every paired difference is 0 and the ensemble scores as the run
    twin = shutil.copytree(out, tmp_path / "twin", ignore=shutil.ignore_patterns("*.ckpt"))
    cmp = compare(
        compose_cfg(f"runs=[{out},{twin}]", f"output_dir={tmp_path / 'cmp'}", config_name="cv_compare")
    )
    assert cmp["rows"][0]["fold_acc"] == pytest.approx([f["acc"] for f in report["folds"]])
    assert cmp["rows"][0]["oof_acc"] == pytest.approx(report["oof"]["acc"])
    assert cmp["rows"][1]["diff_acc"]["mean"] == 0 and cmp["rows"][2]["oof_acc"] == cmp["rows"][0]["oof_acc"]

    # a model's sets fitted on the CV's out-of-fold scores (calibrate set_scores=<cv dir>): fold 0's
    # run, whose own train + val photos are the CV's pool; its thresholds are the rule's on those scores
    run = shutil.copytree(out / "fold0", tmp_path / "oofcal")
    ckpt = run / "checkpoints" / "best.ckpt"

    def refit(scores: Path) -> dict:
        overrides = [f"ckpt_path={ckpt}", f"set_scores={scores}", "~data@other_data"]
        return calibrate(compose_cfg(*overrides, config_name="calibrate"))

    summary = refit(out)
    scored = read_predictions(out / "oof" / "predictions.csv")
    assert np.allclose(
        load_classifier(ckpt).set_threshold.numpy(), fit_set_thresholds(scored.probs, scored.targets, 4, 0.9)
    )
    assert (
        summary["sets/calibration"] == "out of fold"
        and summary["sets/calibration_photos"] == report["n_images"]
    )
    assert json.loads((run / "metrics.json").read_text())["sets/calibration"] == "out of fold"

    # refused, the checkpoint untouched: scores of a photo of the model's test split, of other classes,
    # or no CV at all
    before = ckpt.read_bytes()
    leaky = tmp_path / "leaky"
    (leaky / "oof").mkdir(parents=True)
    lines = (out / "oof" / "predictions.csv").read_text().splitlines()
    a_test_photo = next(r["path"] for r in manifest if r["split"] == "test")
    (leaky / "oof" / "predictions.csv").write_text(
        "\n".join([*lines, a_test_photo + lines[1][lines[1].index(",") :]])
    )
    with pytest.raises(DataError, match=r"1 of the \d+ photos .* are in this model's test split"):
        refit(leaky)
    (leaky / "oof" / "predictions.csv").write_text(
        "\n".join([lines[0].replace("p_Measles", "p_Mpox"), *lines[1:]])
    )
    with pytest.raises(ConfigError, match="scores the classes"):
        refit(leaky)
    with pytest.raises(ConfigError, match="is not a cross-validation run"):
        refit(tmp_path / "nowhere")
    assert ckpt.read_bytes() == before
