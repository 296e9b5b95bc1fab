"""Every optimizer, scheduler, regularizer, model and trainer option composes and instantiates."""

from pathlib import Path

import hydra.utils
import pytest
import torch

from skinlesion.core.paths import CONF_DIR
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.training.fit import build_model, plain

CLASSES = ["a", "b", "c", "d"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_groups_have_the_documented_options():
    assert options("optimizer") == ["adam", "adamw", "rmsprop", "sgd"]
    assert options("regularizer") == ["elastic", "l1", "l2", "none"]
    assert options("scheduler") == ["cosine", "none", "plateau"]
    models = {"simple_cnn", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"}
    assert models <= set(options("model"))
    assert {"cpu", "gpu", "ddp"} <= set(options("trainer"))


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizer_and_scheduler_instantiate(compose_cfg, optimizer, scheduler):
    cfg = compose_cfg(f"optimizer={optimizer}", f"scheduler={scheduler}", "model=simple_cnn")
    model = SkinLesionClassifier(
        CLASSES,
        backbone="simple_cnn",
        pretrained=False,
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")),
    )
    out = model.configure_optimizers()
    opt = out["optimizer"] if isinstance(out, dict) else out
    assert type(opt).__name__.lower() == optimizer
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr)
    if scheduler == "none":
        assert not isinstance(out, dict)
    else:
        assert out["lr_scheduler"]["monitor"] == "val/f1_macro"


@pytest.mark.parametrize("regularizer", options("regularizer"))
def test_regularizer_instantiates_with_documented_strengths(compose_cfg, regularizer):
    cfg = compose_cfg(f"regularizer={regularizer}")
    penalty = hydra.utils.instantiate(cfg.regularizer)
    assert (penalty.l1 > 0) == (regularizer in ("l1", "elastic"))
    assert (penalty.l2 > 0) == (regularizer in ("l2", "elastic"))


@pytest.mark.parametrize("model", options("model"))
def test_every_model_builds_and_runs(compose_cfg, model):
    cfg = compose_cfg(f"model={model}")

    class FakeDM:
        class_names = CLASSES
        loss_weights = (1.0, 2.0, 1.0, 0.5)

    net = build_model(cfg, FakeDM(), "sha").eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 4)
    assert net.hparams.class_names == CLASSES and net.hparams.data_manifest_sha256 == "sha"


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_configs_resolve(compose_cfg, trainer):
    cfg = compose_cfg(f"trainer={trainer}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if trainer == "ddp":
        assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm


def test_cpu_trainer_instantiates(compose_cfg):
    cfg = compose_cfg("trainer=cpu", "logger=csv")
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.accelerator.__class__.__name__ == "CPUAccelerator"


def test_configs_may_only_name_trusted_targets(monkeypatch):
    """A config cannot make the commands call arbitrary code; the user can trust more from the shell."""
    import hydra.utils

    from skinlesion.core.task import TRUSTED_TARGETS_ENV, execution_whitelist

    evil = {"_target_": "subprocess.check_output", "args": ["true"]}
    with hydra.utils.execution_whitelist(execution_whitelist()), pytest.raises(Exception, match="whitelist"):
        hydra.utils.instantiate(evil)
    monkeypatch.setenv(TRUSTED_TARGETS_ENV, "collections.OrderedDict, tests.*")
    assert {"collections.OrderedDict", "tests.*"} <= set(execution_whitelist())
    with hydra.utils.execution_whitelist(execution_whitelist()):
        assert hydra.utils.instantiate({"_target_": "collections.OrderedDict"}) == {}
