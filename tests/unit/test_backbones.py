"""Packaged ImageNet weights load strictly and reproduce the reference logits; freezing works."""

import json
from pathlib import Path

import pytest
import torch

from skinlesion.core.errors import CheckpointError, ConfigError
from skinlesion.models.backbones import BACKBONES, get_backbone, load_in_order
from skinlesion.models.classifier import SkinLesionClassifier
from tests.fixtures.make_reference_logits import fixed_input

REFERENCE = json.loads((Path(__file__).parents[1] / "fixtures/reference_logits.json").read_text())


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_pretrained_logits_match_the_packaged_reference(name):
    ref = REFERENCE[name]
    model = get_backbone(name).imagenet(True).eval()
    with torch.no_grad():
        logits = model(fixed_input(ref["input_size"]))[0]
    assert torch.allclose(logits[:10], torch.tensor(ref["first10"]), atol=2e-3)
    assert torch.topk(logits, 5).indices.tolist() == ref["top5_index"]


def test_reference_covers_every_pretrained_backbone():
    assert set(REFERENCE) == {n for n, s in BACKBONES.items() if s.pretrained_available}


def test_load_is_strict_about_count_and_shape(tmp_path):
    model = get_backbone("efficientnet_lite0").imagenet(False)
    sd = model.state_dict()
    short = dict(list(sd.items())[:-1])
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="tensors"):
        load_in_order(model, tmp_path / "short.pth")
    bad = dict(sd)
    key = next(iter(bad))
    bad[key] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_in_order(model, tmp_path / "bad.pth")


def test_pretrained_changes_the_weights():
    a = get_backbone("mobilenet_v2").imagenet(True).state_dict()
    b = get_backbone("mobilenet_v2").imagenet(False).state_dict()
    assert not torch.equal(a["features.0.0.weight"], b["features.0.0.weight"])


def test_normalisation_belongs_to_the_backbone():
    assert get_backbone("efficientnet_lite0").mean == (0.5, 0.5, 0.5)
    assert get_backbone("efficientnet_lite0").std == (0.5, 0.5, 0.5)
    assert get_backbone("mobilenet_v2").mean == (0.485, 0.456, 0.406)


def test_unknown_backbone_is_named():
    with pytest.raises(ConfigError, match="unknown backbone 'resnet9000'"):
        get_backbone("resnet9000")


def test_freezing_keeps_stage_weights_and_bn_statistics():
    model = SkinLesionClassifier(["a", "b"], backbone="efficientnet_lite0", pretrained=True, freeze_stages=3)
    frozen = [p for s in model.backbone.stages[:3] for p in s.parameters()]
    assert frozen and all(not p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    bns = [m for s in model.backbone.stages[:3] for m in s.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert model.backbone.stages[3].training
