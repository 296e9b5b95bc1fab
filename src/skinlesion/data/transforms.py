"""Train and eval transforms (torchvision v2), kept apart as in torchvision's references.

Inputs are uint8 CHW tensors from the decoder; outputs are normalised float tensors. The mean and
std come from the backbone (see ``skinlesion.models.backbones``), never from the data config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.transforms import v2


@dataclass(frozen=True)
class AugmentParams:
    """Train-time augmentation; every field is a Hydra key under ``data.augment``."""

    scale_min: float = 0.6
    ratio_min: float = 0.75
    hflip: float = 0.5
    vflip: float = 0.5
    rotation: float = 20.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    grayscale: float = 0.0
    blur: float = 0.0


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def train_transforms(
    image_size: int, mean: Sequence[float], std: Sequence[float], augment: AugmentParams
) -> v2.Compose:
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(
            image_size, scale=(augment.scale_min, 1.0), ratio=(augment.ratio_min, 1 / augment.ratio_min)
        )
    ]
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip(augment.hflip))
    if augment.vflip:
        steps.append(v2.RandomVerticalFlip(augment.vflip))
    if augment.rotation:
        steps.append(v2.RandomRotation(augment.rotation))
    if any((augment.brightness, augment.contrast, augment.saturation, augment.hue)):
        steps.append(v2.ColorJitter(augment.brightness, augment.contrast, augment.saturation, augment.hue))
    if augment.grayscale:
        steps.append(v2.RandomGrayscale(augment.grayscale))
    if augment.blur:
        steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=augment.blur))
    return v2.Compose(steps + _finish(mean, std))


def eval_transforms(image_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Resize the shorter side and centre-crop: deterministic, for val, test, predict and serve."""
    return v2.Compose([v2.Resize(image_size), v2.CenterCrop(image_size), *_finish(mean, std)])
