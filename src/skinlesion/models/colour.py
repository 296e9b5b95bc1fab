"""Shades of Gray colour constancy (Finlayson & Trezzi, "Shades of Gray and Colour Constancy",
IS&T/SID Color Imaging Conference, 2004) on normalised batches.

Photos from different cameras and lights carry different colour casts; dividing out each image's
estimated illuminant removes much of that shift before the network sees the image. The estimate
is the Minkowski p-norm of each channel (p = 1: Grey World; p -> inf: max-RGB; p = 6 is the usual
choice for dermoscopy and skin photos). Plain tensor ops (pow, mean, clamp), so the step runs inside
the model and is exported with it to ONNX: every backend applies it without code of its own.
"""

from __future__ import annotations

import torch


def shades_of_gray(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, p: float = 6.0, eps: float = 1e-6
) -> torch.Tensor:
    """White-balance a normalised ``(N, 3, H, W)`` batch; returns it normalised as it came.

    Per image and channel the illuminant is ``e_c = mean(x_c ** p) ** (1 / p)`` on the [0, 1]
    image; each channel is scaled by ``mean_c(e) / e_c`` (so brightness stays put) and clamped to
    [0, 1]. ``mean``/``std`` are the backbone's normalisation, shaped ``(3,)``.
    """
    mean = mean.to(x.device, torch.float32).view(1, -1, 1, 1)
    std = std.to(x.device, torch.float32).view(1, -1, 1, 1)
    rgb = (x.float() * std + mean).clamp(0.0, 1.0)  # clamp: resize overshoot, and pow of negatives
    illuminant = rgb.pow(p).mean(dim=(2, 3), keepdim=True).pow(1.0 / p).clamp(min=eps)
    gain = illuminant.mean(dim=1, keepdim=True) / illuminant
    balanced = (rgb * gain).clamp(0.0, 1.0)
    return ((balanced - mean) / std).to(x.dtype)
