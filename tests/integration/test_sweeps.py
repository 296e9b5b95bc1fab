"""A real sweep on a small MSID slice: trials train on val only, the report retrains and tests the best."""

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from skinlesion.sweeps.study import OUTPUT_ATTR
from tests.helpers import run_cli


@pytest.mark.integration
def test_sweep_and_report_on_real_data(tmp_path, real_slice):
    sweep = [
        "skinlesion.train",
        "--multirun",
        "hparams_search=optuna_cpu",
        "model=simple_cnn",
        "data.image_size=32",
        "trainer.max_epochs=1",
        "hydra.sweeper.n_trials=2",
        f"data.root={real_slice}",
        f"paths.output_root={tmp_path}",
    ]
    r = run_cli(*sweep)
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(
        study_name="skinlesion-cpu", storage=f"sqlite:///{tmp_path / 'sweeps/optuna.db'}"
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for t in study.trials:
        metrics = json.loads((Path(t.user_attrs[OUTPUT_ATTR]) / "metrics.json").read_text())
        assert t.value == pytest.approx(metrics["val/f1_macro_best"])  # the objective: val macro-F1
        assert not any(k.startswith("test/") for k in metrics)  # trials never look at the test split
        assert t.user_attrs["epochs"] == 1

    report = run_cli(
        "skinlesion.sweep_report",
        "hparams_search=optuna_cpu",
        f"paths.output_root={tmp_path}",
        "retrain=true",
    )
    assert report.returncode == 0, report.stderr[-3000:]
    out = tmp_path / "sweeps/skinlesion-cpu"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_value"] == pytest.approx(study.best_value)
    assert "python -m skinlesion.train " + " ".join(summary["best_overrides"]) in report.stdout
    retrained = json.loads((Path(summary["retrained/output_dir"]) / "metrics.json").read_text())
    assert 0 <= retrained["test/f1_macro"] <= 1  # tested once, after the search
    assert retrained["val/f1_macro_best"] == pytest.approx(study.best_value, abs=1e-6)  # same seed, same run
    assert (out / "sweep_report.md").is_file() and (out / "experiment.yaml").is_file()
