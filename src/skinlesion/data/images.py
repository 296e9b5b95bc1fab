"""The one decoding path for every image that enters the project.

Prepare, the DataModule, predict and serve all call :func:`load_image` / :func:`decode_image`, so
a file is accepted or refused by the same rules everywhere. Every failure becomes an
:class:`~skinlesion.core.errors.ImageDecodeError` whose message names the file and the problem.

Hostile input is bounded before any pixel is decoded: the file size, the pixel count read from
the header (decompression bombs), the side lengths and aspect ratio, and the formats Pillow may
try (no EPS, which runs Ghostscript, nor the dozens of rarely used plug-ins). Decoding a
maximal image takes about a second; a tighter budget (serve) passes its own :class:`DecodeLimits`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from skinlesion.core.errors import ImageDecodeError

# Photo formats, as Pillow names its openers (JPEG also opens the MPO files of phone cameras).
PHOTO_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds that keep a hostile file from exhausting memory or time."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # ~ 6300 x 6300: far above any photo the model needs
    min_side: int = 8
    max_aspect: float = 25.0
    formats: tuple[str, ...] = PHOTO_FORMATS


DEFAULT_LIMITS = DecodeLimits()


def printable(path: str | os.PathLike) -> str:
    """A path as text that can always be printed and written as UTF-8 (bad bytes become ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_bytes(path: str | os.PathLike, limits: DecodeLimits = DEFAULT_LIMITS) -> bytes:
    """Read a regular file, refusing directories, loops, special and oversized files."""
    p = Path(os.fsdecode(path))
    label = printable(p)
    try:
        st = p.stat()
    except FileNotFoundError as e:
        raise ImageDecodeError(f"{label}: no such file") from e
    except OSError as e:  # symlink loop, permission, name too long ...
        raise ImageDecodeError(f"{label}: cannot be read ({e.strerror or e})") from e
    if p.is_dir():
        raise ImageDecodeError(f"{label}: is a directory, not an image file")
    if not p.is_file():  # a FIFO would block for ever, a device never ends
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


def check_size(width: int, height: int, name: str, limits: DecodeLimits) -> None:
    """Refuse, from the header alone, sizes no photo has (before any pixel is decoded)."""
    if width * height > limits.max_pixels:
        raise ImageDecodeError(
            f"{name}: {width}x{height} pixels is over the {limits.max_pixels:,} pixel limit "
            "(possible decompression bomb)"
        )
    if min(width, height) < limits.min_side:
        raise ImageDecodeError(f"{name}: {width}x{height} is too small (min side {limits.min_side} px)")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise ImageDecodeError(
            f"{name}: {width}x{height} has an aspect ratio over {limits.max_aspect:g}, not a photo"
        )


def _rescale_to_uint8(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float images: map the finite value range onto 0..255 (float32, in place)."""
    arr = np.array(im, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        arr[~finite] = arr[finite].min() if finite.any() else 0.0
    lo, hi = float(arr.min()), float(arr.max())
    arr -= lo
    arr *= 255.0 / (hi - lo) if hi > lo else 0.0
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8)).convert("RGB")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; alpha is composited on white, 16-bit is rescaled."""
    if im.mode == "RGB":
        return im
    if im.mode in HIGH_DEPTH_MODES:
        return _rescale_to_uint8(im)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ALPHA_MODES:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; unreadable EXIF leaves the pixels as stored rather than refusing."""
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:  # corrupt EXIF raises many types; the pixels themselves decoded fine
        return im


def decode_image(data: bytes, name: str = "<upload>", limits: DecodeLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode bytes fully into an RGB image with EXIF orientation applied.

    Raises ImageDecodeError for empty, non-image, unsupported, truncated, corrupt, oversized
    (decompression bomb), degenerate (tiny or extreme aspect) and otherwise unusable inputs.
    """
    name = printable(name)
    if not data:
        raise ImageDecodeError(f"{name}: file is empty")
    if len(data) > limits.max_bytes:
        raise ImageDecodeError(f"{name}: over the {limits.max_bytes / 1e6:.0f} MB limit")
    try:
        im = Image.open(io.BytesIO(data), formats=limits.formats)
        check_size(*im.size, name, limits)
        im.seek(0)  # first frame of animations and multi-page files
        im.load()  # full decode: truncation and corruption surface here
        rgb = _to_rgb(_upright(im))
        rgb.load()
        return rgb
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as e:
        raise ImageDecodeError(
            f"{name}: not a recognised image format (accepted: {', '.join(limits.formats)})"
        ) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"{name}: refused as a possible decompression bomb ({e})") from e
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, EOFError, MemoryError) as e:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({e})") from e
    except Exception as e:  # decoder plug-ins raise many types; never let one escape as a crash
        raise ImageDecodeError(f"{name}: could not be decoded ({type(e).__name__}: {e})") from e


def load_image(path: str | os.PathLike, limits: DecodeLimits = DEFAULT_LIMITS) -> Image.Image:
    """Read and fully decode one image file into RGB (see :func:`decode_image`)."""
    return decode_image(read_bytes(path, limits), printable(path), limits)
