"""Test-time batch-norm adaptation: running statistics move to the target images' and nothing else
changes; ``evaluate adapt_bn=true`` works on a split, a folder and an ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from skinlesion.evaluate import evaluate
from skinlesion.models.bn_adapt import adapt_batchnorm, batch_norms
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.training.fit import train
from tests.helpers import CLASSES, TINY, make_class_folders

QUICK = [*TINY, "evaluate=false", "link_latest=false"]
QUICK_EVAL = ["accelerator=cpu", "bootstrap.n_resamples=20", "batch_size=8"]


def classifier() -> SkinLesionClassifier:
    torch.manual_seed(0)
    return SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False, dropout=0.5).eval()


def target_images(n: int = 16) -> torch.Tensor:
    """Another domain: brighter and with more contrast than anything the defaults describe."""
    torch.manual_seed(1)
    return 1.5 + 2.0 * torch.randn(n, 3, 32, 32)


def test_running_statistics_move_to_the_target_images_and_nothing_else_changes():
    model = classifier()
    first = model.backbone.body.stages[0]  # conv -> BatchNorm2d
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momenta = [m.momentum for m in batch_norms(model)]
    x = target_images()
    with torch.no_grad():
        conv = first[0](x)
    want_mean, want_var = conv.mean(dim=(0, 2, 3)), conv.var(dim=(0, 2, 3), unbiased=True)
    assert not torch.allclose(first[1].running_mean, want_mean, atol=0.1)

    assert adapt_batchnorm(model, [(x, torch.zeros(len(x)))]) == len(x)
    assert torch.allclose(first[1].running_mean, want_mean, atol=1e-5)
    assert torch.allclose(first[1].running_var, want_var, rtol=1e-4)
    after = model.state_dict()
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(statistics) for k in changed)  # weights and buffers untouched
    assert not model.training and not any(m.training for m in model.modules())  # eval, as it came
    assert [m.momentum for m in batch_norms(model)] == momenta

    again = classifier()  # dropout stays off during the pass: the estimate is deterministic
    adapt_batchnorm(again, [x])
    assert all(torch.equal(again.state_dict()[k], after[k]) for k in changed)


def test_equal_batches_give_the_mean_over_all_images_and_an_empty_loader_changes_nothing():
    model = classifier()
    x = target_images(16)
    adapt_batchnorm(model, [(x[:8], None), (x[8:], None)])
    with torch.no_grad():
        want = model.backbone.body.stages[0][0](x).mean(dim=(0, 2, 3))
    assert torch.allclose(model.backbone.body.stages[0][1].running_mean, want, atol=1e-5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="at least one image"):
        adapt_batchnorm(model, [])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_evaluate_with_adapt_bn_on_a_split_a_folder_and_an_ensemble(
    tmp_path: Path, compose_cfg, synthetic_root
):
    cfg = compose_cfg(f"data.root={synthetic_root}", *QUICK)
    train(cfg)
    best = Path(cfg.paths.output_dir) / "checkpoints/best.ckpt"
    folder = make_class_folders(tmp_path / "other_source", per_class=3, first_seed=500)

    plain = evaluate(compose_cfg(f"ckpt_path={best}", *QUICK_EVAL, config_name="evaluate"))
    adapted = evaluate(compose_cfg(f"ckpt_path={best}", "adapt_bn=true", *QUICK_EVAL, config_name="evaluate"))
    assert plain["test/adapt_bn"] is False and adapted["test/adapt_bn"] is True
    written = json.loads((best.parent.parent / "eval-adapt_bn/metrics.json").read_text())
    assert written["test/adapt_bn"] is True and written["test/n"] == plain["test/n"]
    assert json.loads((best.parent.parent / "eval/metrics.json").read_text())["test/adapt_bn"] is False
    assert adapted["test/nll"] != pytest.approx(plain["test/nll"], abs=1e-6)  # the statistics mattered

    out = tmp_path / "folder_eval"
    m = evaluate(
        compose_cfg(
            f"ckpt_path={best}",
            f"folder={folder}",
            "adapt_bn=true",
            f"output_dir={out}",
            *QUICK_EVAL,
            config_name="evaluate",
        )
    )
    assert m["folder/adapt_bn"] is True and json.loads((out / "metrics.json").read_text())["folder/n"] == 12

    out = tmp_path / "ensemble_eval"
    m = evaluate(
        compose_cfg(
            f"ckpt_path=[{best},{best}]",
            f"folder={folder}",
            "adapt_bn=true",
            f"output_dir={out}",
            *QUICK_EVAL,
            config_name="evaluate",
        )
    )
    written = json.loads((out / "metrics.json").read_text())
    assert written["folder/adapt_bn"] is True and len(written["folder/ensemble_members"]) == 2
    assert m["folder/nll"] == pytest.approx(
        json.loads((tmp_path / "folder_eval/metrics.json").read_text())["folder/nll"], rel=1e-4
    )  # two copies of one adapted member: the same as the member alone
