"""The one decoding path for every image that enters the project.

Prepare, the DataModule, predict and serve all call :func:`load_image` / :func:`decode_image`, so
a file is accepted or refused by the same rules everywhere. Every failure becomes an
:class:`~skinlesion.errors.ImageDecodeError` whose message names the file and the problem.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from skinlesion.errors import ImageDecodeError


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds that keep a hostile file from exhausting memory or time."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # ~ 6300 x 6300: far above any photo the model needs
    min_side: int = 8
    max_aspect: float = 25.0
    # Pillow formats tried (None: all of them); predict and serve take common photo formats only,
    # keeping rarely used decoders (and EPS, which calls Ghostscript) away from uploads.
    formats: tuple[str, ...] | None = None


DEFAULT_LIMITS = DecodeLimits()


def read_bytes(path: str | os.PathLike, limits: DecodeLimits = DEFAULT_LIMITS) -> bytes:
    """Read a regular file, refusing directories, loops, special and oversized files."""
    p = Path(path)
    label = os.fsdecode(p)
    try:
        st = p.stat()
    except FileNotFoundError as e:
        raise ImageDecodeError(f"{label}: no such file") from e
    except OSError as e:  # symlink loop, permission, name too long ...
        raise ImageDecodeError(f"{label}: cannot be read ({e.strerror or e})") from e
    if p.is_dir():
        raise ImageDecodeError(f"{label}: is a directory, not an image file")
    if not p.is_file():
        raise ImageDecodeError(f"{label}: is not a regular file")
    if st.st_size > limits.max_bytes:
        raise ImageDecodeError(
            f"{label}: file is {st.st_size / 1e6:.1f} MB, over the {limits.max_bytes / 1e6:.0f} MB limit"
        )
    try:
        with open(p, "rb") as fh:
            return fh.read(limits.max_bytes + 1)
    except OSError as e:
        raise ImageDecodeError(f"{label}: cannot be read ({e.strerror or e})") from e


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; alpha is composited on white, 16-bit is rescaled."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr8 = ((arr - lo) * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def decode_image(data: bytes, name: str = "<upload>", limits: DecodeLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode bytes fully into an RGB image with EXIF orientation applied.

    Raises ImageDecodeError for empty, non-image, truncated, corrupt, oversized (decompression
    bomb), degenerate (tiny or extreme aspect) and otherwise unusable inputs.
    """
    if not data:
        raise ImageDecodeError(f"{name}: file is empty")
    if len(data) > limits.max_bytes:
        raise ImageDecodeError(f"{name}: over the {limits.max_bytes / 1e6:.0f} MB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=limits.formats)
            w, h = im.size
            if w * h > limits.max_pixels:
                raise ImageDecodeError(
                    f"{name}: {w}x{h} pixels is over the {limits.max_pixels:,} pixel limit "
                    "(possible decompression bomb)"
                )
            if min(w, h) < limits.min_side:
                raise ImageDecodeError(f"{name}: {w}x{h} is too small (min side {limits.min_side} px)")
            if max(w, h) / min(w, h) > limits.max_aspect:
                raise ImageDecodeError(
                    f"{name}: {w}x{h} has an aspect ratio over {limits.max_aspect:g}, not a photo"
                )
            im.seek(0)  # first frame of animations and multi-page files
            im.load()  # full decode: truncation and corruption surface here
            im = ImageOps.exif_transpose(im) or im
            rgb = _to_rgb(im)
            rgb.load()
            return rgb
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as e:
        accepted = f" (accepted: {', '.join(limits.formats)})" if limits.formats else ""
        raise ImageDecodeError(f"{name}: not a recognised image format{accepted}") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"{name}: refused as a possible decompression bomb ({e})") from e
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, EOFError, MemoryError) as e:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({e})") from e
    except Exception as e:  # decoder plug-ins raise many types; never let one escape as a crash
        raise ImageDecodeError(f"{name}: could not be decoded ({type(e).__name__}: {e})") from e


def load_image(path: str | os.PathLike, limits: DecodeLimits = DEFAULT_LIMITS) -> Image.Image:
    """Read and fully decode one image file into RGB (see :func:`decode_image`)."""
    return decode_image(read_bytes(path, limits), os.fsdecode(path), limits)
