"""GPU placement of concurrent sweep trials (with a faked GPU count) and DDP under Hydra."""

import sys
from types import SimpleNamespace

import pytest
import torch
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.fabric.strategies.launchers.subprocess_script import _hydra_subprocess_cmd
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

from skinlesion.core.devices import gpus_for_job, place_trial, ranks_rerun_this_job, trainer_kwargs
from skinlesion.core.errors import ConfigError


@pytest.fixture
def gpus(monkeypatch):
    def _fake(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return _fake


@pytest.mark.parametrize(
    "per_trial, n_gpus, expected",
    [
        (1, 4, [[0], [1], [2], [3], [0], [1]]),
        (2, 4, [[0, 1], [2, 3], [0, 1], [2, 3], [0, 1], [2, 3]]),
        (3, 4, [[0, 1, 2]] * 6),  # a fourth GPU cannot host a whole trial
        (8, 4, [[0, 1, 2, 3]] * 6),
        (1, 3, [[0], [1], [2], [0], [1], [2]]),
    ],
)
def test_trial_k_gets_its_own_gpus(per_trial, n_gpus, expected):
    assert [gpus_for_job(k, per_trial, n_gpus) for k in range(6)] == expected


@pytest.mark.parametrize("job", [0, 1, 2, 5])
def test_each_concurrent_trial_of_a_multirun_is_pinned_to_gpu_job_mod_g(hydra_job, gpus, job):
    gpus(4)
    cfg = hydra_job("trainer=gpu", f"hydra.job.num={job}")
    assert place_trial(cfg.trainer) == [job % 4]
    assert list(cfg.trainer.devices) == [job % 4]


@pytest.mark.parametrize(
    "n_gpus, overrides, multirun",
    [
        (4, ["trainer=gpu"], False),  # a single run keeps trainer.devices as given
        (1, ["trainer=gpu"], True),  # one GPU: nothing to choose
        (0, [], True),  # no GPU at all
        (4, ["trainer=cpu"], True),
        (4, ["trainer=gpu", "trainer.devices=[3]"], True),  # the user's explicit choice
        (4, ["trainer=ddp"], True),  # devices=-1: all of them
    ],
)
def test_placement_leaves_other_runs_alone(hydra_job, gpus, n_gpus, overrides, multirun):
    gpus(n_gpus)
    cfg = hydra_job(*overrides, "hydra.job.num=1", multirun=multirun)
    before = cfg.trainer.devices
    assert place_trial(cfg.trainer) is None
    assert cfg.trainer.devices == before


def test_sync_batchnorm_is_switched_off_only_without_gpus(hydra_job, gpus):
    gpus(0)
    cfg = hydra_job("trainer=ddp", "trainer.accelerator=cpu")
    assert trainer_kwargs(cfg.trainer) == {"sync_batchnorm": False}
    gpus(2)
    assert trainer_kwargs(hydra_job("trainer=ddp").trainer) == {}


def ddp_trainer() -> SimpleNamespace:
    launcher = _SubprocessScriptLauncher(LightningEnvironment(), num_processes=2, num_nodes=1)
    return SimpleNamespace(strategy=SimpleNamespace(launcher=launcher), world_size=2)


def test_ddp_ranks_of_a_sweep_trial_rerun_that_trial_in_its_directory(hydra_job, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "--multirun", "hparams_search=optuna"])
    hydra_job("optimizer=sgd", "hparams_search=optuna")  # the trial's overrides
    with ranks_rerun_this_job(ddp_trainer(), ["trainer.devices=[2,3]"]):
        command, _ = _hydra_subprocess_cmd(local_rank=1)  # what Lightning runs for rank 1
    assert "--multirun" not in command
    assert command[-6:-3] == ["optimizer=sgd", "hparams_search=optuna", "trainer.devices=[2,3]"]
    assert f'hydra.run.dir="{tmp_path / "job"}"' in command, command
    assert sys.argv == ["train.py", "--multirun", "hparams_search=optuna"]  # restored


def test_ddp_trials_cannot_run_in_joblib_workers(hydra_job):
    hydra_job("hydra/launcher=joblib")
    with pytest.raises(ConfigError, match="joblib workers cannot"), ranks_rerun_this_job(ddp_trainer()):
        pass
