"""Class activation maps as heatmap overlays, in NumPy.

The head is global average pooling, dropout and one linear layer, so the logit of class c is the
spatial mean of ``CAM_c = sum_k w_ck A_k`` plus a bias, where ``A`` is the last feature map. That map
is exact, needs no gradients, and equals Grad-CAM on that layer up to a positive factor (Grad-CAM's
weights are the spatial means of the gradients, ``w_ck / (h w)``). The graph returns ``CAM`` for every
class; this module turns one class's map into a picture.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def normalised_map(cam: np.ndarray) -> np.ndarray:
    """ReLU, then scale to [0, 1] (Grad-CAM's convention); an all-negative map becomes zeros."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    peak = float(cam.max())
    return cam / peak if peak > 0 else cam


def jet(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 RGB with the classic jet colour map (blue = low, red = high)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def overlay(view: Image.Image, cam: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The model's crop with the map upsampled (bilinear) and blended on top, weighted by the map."""
    heat = normalised_map(cam)
    up = np.asarray(Image.fromarray(heat, mode="F").resize(view.size, Image.BILINEAR), dtype=np.float32)
    up = np.clip(up, 0.0, 1.0)
    weight = (alpha * (0.3 + 0.7 * up))[..., None]
    base = np.asarray(view.convert("RGB"), dtype=np.float32)
    mixed = base * (1 - weight) + jet(up).astype(np.float32) * weight
    return Image.fromarray(mixed.round().astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
