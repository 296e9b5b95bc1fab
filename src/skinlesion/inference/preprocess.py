"""Eval preprocessing in NumPy/Pillow, equal to ``skinlesion.data.transforms.eval_transforms``.

torchvision's ``Resize`` on uint8 images is Pillow's antialiased bilinear filter, and its output size
and centre-crop offsets follow the rules copied below, so the ONNX path sees the pixels the model was
evaluated on (``tests/unit/test_preprocess.py`` measures the difference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, longer side truncated as torchvision does (``int(size * long / short)``)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return image
    new_long = int(size * long / short)
    new = (size, new_long) if w <= h else (new_long, size)
    return image.resize(new, Image.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Centre crop with torchvision's rounding of the offsets."""
    w, h = image.size
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def model_view(image: Image.Image, size: int) -> Image.Image:
    """The RGB crop the model sees (also the background of the heatmap overlay)."""
    return center_crop(resize_shorter(image, size), size)


def normalise(view: Image.Image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 HWC crop -> float32 (1, 3, H, W), scaled to [0, 1] and normalised per channel."""
    arr = np.asarray(view, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])
