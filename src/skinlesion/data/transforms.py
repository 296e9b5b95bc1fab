"""Train and eval transforms (torchvision v2), kept apart as in torchvision's references.

Inputs are uint8 CHW tensors from the decoder; outputs are normalised float tensors. The mean and
std come from the backbone (see ``skinlesion.models.backbones``), never from the data config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision import tv_tensors
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
    channel_gain: float = 0.0  # > 0: each channel times U(1 - g, 1 + g), a simulated colour cast


def _plain_tensor(x: Any) -> bool:
    return type(x) is torch.Tensor


class ChannelGain(v2.Transform):
    """Multiply each colour channel by its own factor drawn from U(1 - strength, 1 + strength).

    ColorJitter moves brightness, saturation and hue but never tints an image the way another
    camera's white balance or another lamp does; independent channel gains do. Float images are
    clamped to [0, 1], uint8 ones rounded into [0, 255]; draws from torch's generator, so the
    per-sample seeding of the data module makes it reproducible.
    """

    _transformed_types = (tv_tensors.Image, _plain_tensor)  # images only, never boxes or masks

    def __init__(self, strength: float) -> None:
        super().__init__()
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"channel_gain must be in [0, 1), got {strength}")
        self.strength = strength

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        channels = flat_inputs[0].shape[-3] if flat_inputs else 3
        return {"gain": 1.0 + self.strength * (2.0 * torch.rand(channels) - 1.0)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        gain = params["gain"].view(-1, 1, 1)
        if inpt.is_floating_point():
            out = (inpt * gain.to(inpt.dtype)).clamp(0.0, 1.0)
        else:
            out = (inpt.float() * gain).round().clamp(0, 255).to(inpt.dtype)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out


def _finish(mean: Sequence[float], std: Sequence[float], channel_gain: float = 0.0) -> list[v2.Transform]:
    gain = [ChannelGain(channel_gain)] if channel_gain else []  # on the [0, 1] image, before Normalize
    return [v2.ToDtype(torch.float32, scale=True), *gain, v2.Normalize(mean=list(mean), std=list(std))]


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
    return v2.Compose(steps + _finish(mean, std, augment.channel_gain))


def eval_transforms(image_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Resize the shorter side and centre-crop: deterministic, for val, test, predict and serve."""
    return v2.Compose([v2.Resize(image_size), v2.CenterCrop(image_size), *_finish(mean, std)])
