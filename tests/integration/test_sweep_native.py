"""``python -m skinlesion.sweep_native``: trials report every epoch and a pruned trial stops early."""

import subprocess
import sys

import optuna
from optuna.trial import TrialState

from skinlesion.sweeps.study import OUTPUT_ATTR


def test_native_sweep_reports_each_epoch_and_prunes(tmp_path, synthetic_root):
    # ThresholdPruner(lower=1.01): no macro-F1 reaches it, so the trial is pruned at the first
    # epoch after its warm-up (step 1), one epoch before its budget of 3.
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "skinlesion.sweep_native",
            "hparams_search=optuna_cpu",
            "model=simple_cnn",
            "data.image_size=16",
            "trainer.max_epochs=3",
            "hydra.sweeper.n_trials=1",
            f"data.root={synthetic_root}",
            f"paths.output_root={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "pruner=none",
            "pruner._target_=optuna.pruners.ThresholdPruner",
            "+pruner.lower=1.01",
            "+pruner.n_warmup_steps=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:]
    study = optuna.load_study(
        study_name="skinlesion-cpu", storage=f"sqlite:///{tmp_path / 'sweeps/optuna.db'}"
    )
    assert [t.state for t in study.trials] == [TrialState.PRUNED]  # a pruned trial uses the budget
    (trial,) = study.trials
    assert sorted(trial.intermediate_values) == [0, 1]
    assert all(0 <= v <= 1 for v in trial.intermediate_values.values())
    run = tmp_path / "run" / "trial-0"
    assert trial.user_attrs[OUTPUT_ATTR] == str(run)
    assert (run / "run_info.json").is_file() and not (run / "metrics.json").exists()  # stopped early
    assert "Trial 0 pruned. Trial was pruned at epoch 1." in r.stdout
