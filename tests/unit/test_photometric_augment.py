"""Photometric augmentation: the per-channel gain tints images, is off by default, and
``data/augment=photometric`` is the default geometry with strong colour."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torchvision import tv_tensors
from torchvision.transforms import v2

from skinlesion.data.transforms import AugmentParams, ChannelGain, train_transforms
from tests.helpers import compose_task

GEOMETRY = ("scale_min", "ratio_min", "hflip", "vflip", "rotation")


def augment_of(*overrides: str) -> AugmentParams:
    cfg = compose_task("train", list(overrides))
    return AugmentParams(**OmegaConf.to_container(cfg.data.augment, resolve=True))


def test_channel_gain_changes_channel_ratios_within_its_range():
    grey = torch.full((3, 16, 16), 0.5)
    torch.manual_seed(0)
    tinted = [ChannelGain(0.2)(grey) for _ in range(20)]
    means = torch.stack([t.mean(dim=(1, 2)) for t in tinted])  # (20, 3)
    assert ((means >= 0.4 - 1e-6) & (means <= 0.6 + 1e-6)).all()
    red_over_blue = means[:, 0] / means[:, 2]
    assert red_over_blue.std() > 0.05 and (red_over_blue - 1).abs().max() > 0.1  # a cast, varying
    assert all(torch.allclose(t, t[:, :1, :1].expand_as(t)) for t in tinted)  # one gain per channel
    torch.manual_seed(0)
    assert torch.equal(ChannelGain(0.2)(grey), tinted[0])  # from torch's generator: reproducible


def test_channel_gain_clamps_and_keeps_types():
    bright = torch.ones(3, 8, 8)
    torch.manual_seed(1)
    assert ChannelGain(0.3)(bright).max() <= 1.0
    image = tv_tensors.Image(torch.full((3, 8, 8), 200, dtype=torch.uint8))
    out = ChannelGain(0.3)(image)
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="channel_gain"):
        ChannelGain(1.5)


def test_off_by_default_and_on_in_photometric():
    assert AugmentParams().channel_gain == 0.0
    default = augment_of()
    assert default.channel_gain == 0.0
    plain = train_transforms(32, [0.5] * 3, [0.5] * 3, default)
    assert not any(isinstance(t, ChannelGain) for t in plain.transforms)

    photometric = augment_of("data/augment=photometric")
    assert [getattr(photometric, k) for k in GEOMETRY] == [getattr(default, k) for k in GEOMETRY]
    assert (photometric.brightness, photometric.contrast, photometric.saturation) == (0.4, 0.4, 0.4)
    assert (photometric.hue, photometric.grayscale, photometric.blur) == (0.08, 0.1, 0.2)
    assert photometric.channel_gain == 0.2
    steps = train_transforms(32, [0.5] * 3, [0.5] * 3, photometric).transforms
    kinds = [type(t) for t in steps]
    at = kinds.index(ChannelGain)  # on the [0, 1] float image, before normalisation
    assert kinds[at - 1] is v2.ToDtype and kinds[at + 1] is v2.Normalize


def test_the_photometric_pipeline_runs_on_decoded_images():
    steps = train_transforms(32, [0.5] * 3, [0.5] * 3, augment_of("data/augment=photometric"))
    torch.manual_seed(0)
    x = steps(torch.randint(0, 256, (3, 48, 40), dtype=torch.uint8))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
