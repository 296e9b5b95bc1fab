"""The abstention commands: refit the thresholds of a saved checkpoint, measure the rejection rates."""

import json
import shutil

import pytest

from skinlesion.calibrate import calibrate
from skinlesion.evaluate_abstention import evaluate_abstention
from skinlesion.inference.loading import load_classifier
from skinlesion.inference.torch_backend import thresholds_of
from skinlesion.reports.nonskin import nonskin_set
from tests.helpers import compose_task

# No photos of other rashes: preparing data=multisource (its crop search) is too slow for this test;
# the other-rash gate has its own tests (tests/unit/test_other_rash.py, tests/e2e/test_page.py).
NO_OTHER = ["~data@other_data"]


@pytest.mark.integration
def test_refit_then_measure(real_deployed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(real_deployed.ckpt.parent.parent, run, ignore=shutil.ignore_patterns("export"))
    ckpt = run / "checkpoints" / "best.ckpt"
    before = thresholds_of(load_classifier(ckpt))
    summary = calibrate(compose_task("calibrate", [f"ckpt_path={ckpt}", "abstain.ood_reject=0.4", *NO_OTHER]))
    after = thresholds_of(load_classifier(ckpt))
    assert after.ood_score == pytest.approx(summary["abstain/ood_threshold"], rel=1e-5)
    assert after.ood_score < before.ood_score  # turning away 40 % of val needs a lower threshold
    assert (
        json.loads((run / "metrics.json").read_text())["abstain/ood_threshold"]
        == summary["abstain/ood_threshold"]
    )

    out = tmp_path / "eval"
    report = evaluate_abstention(
        compose_task("evaluate_abstention", [f"ckpt_path={ckpt}", f"output_dir={out}", *NO_OTHER])
    )
    rows = json.loads((out / "abstention.json").read_text())["rows"]
    nonskin = [r for r in rows if r["set"] == "nonskin"]
    assert [r["file"] for r in nonskin] == [name for name, _ in nonskin_set()]
    for group, s in report["sets"].items():
        members = [r for r in rows if r["set"] == group]
        assert s["n"] == len(members) > 0
        assert s["rejected_fraction"] == sum(r["abstained"] for r in members) / len(members)
        assert all((r["reason"] is None) != r["abstained"] for r in members)
        assert all(r["ood_score"] > after.ood_score for r in members if r["reason"] == "out_of_distribution")
    assert "| nonskin | 48 |" in (out / "abstention.md").read_text()
    by_name = {r["file"]: r for r in nonskin}
    for name in ("synthetic/blank_white", "synthetic/document_text", "skimage/page.png"):  # far from skin
        assert by_name[name]["reason"] == "out_of_distribution", by_name[name]


def test_evaluate_abstains_exactly_where_the_predictor_does(deployed, tmp_path):
    """make evaluate's abstention figures apply the deployed gates, image by image."""
    from skinlesion.data.datamodule import folder_items
    from skinlesion.evaluate import evaluate
    from skinlesion.inference.runtime import Predictor
    from skinlesion.inference.torch_backend import TorchBackend

    run = tmp_path / "run"  # a copy: the session's model keeps its thresholds
    shutil.copytree(deployed.ckpt.parent.parent, run, ignore=shutil.ignore_patterns("export"))
    ckpt = run / "checkpoints" / "best.ckpt"
    calibrate(compose_task("calibrate", [f"ckpt_path={ckpt}", "abstain.ood_reject=0.3", *NO_OTHER]))
    model = load_classifier(ckpt)
    overrides = [f"ckpt_path={ckpt}", f"folder={deployed.data}", f"output_dir={tmp_path / 'eval'}"]
    overrides.append("exclude_training_duplicates=false")  # the model's own data, scored on purpose
    metrics = evaluate(compose_task("evaluate", overrides))
    predictor = Predictor(TorchBackend(model))
    items, _ = folder_items(deployed.data, model.class_names)
    decided = [predictor.predict_file(deployed.data / path).abstained for path, _ in items]
    assert 0 < sum(decided) < len(decided)  # ood_reject=0.3 turns some images away, not all
    assert metrics["folder/n_abstained"] == sum(decided)
    assert metrics["folder/abstention_rate"] == pytest.approx(sum(decided) / len(decided))
