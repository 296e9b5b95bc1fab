"""The one decoding path: good images in every mode come out RGB; bad ones raise ImageDecodeError."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from skinlesion.core.errors import ImageDecodeError
from skinlesion.data.images import DecodeLimits, decode_image, load_image

NOISY = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    "mode",
    ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1"],
)
def test_every_mode_becomes_rgb(mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        im = Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
        assert im.mode == "I;16"
    else:
        im = base.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    out = decode_image(encode(im, fmt))
    assert out.mode == "RGB" and out.size == (30, 20)


def test_sixteen_bit_is_rescaled_not_clipped():
    arr = np.linspace(0, 65535, 20 * 30).astype(np.uint16).reshape(20, 30)
    out = np.asarray(decode_image(encode(Image.fromarray(arr), "TIFF")))
    assert out.min() == 0 and out.max() == 255  # the full 16-bit range maps onto 0..255


def test_alpha_is_composited_on_white():
    im = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    assert np.asarray(decode_image(encode(im)))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = decode_image(encode(im, "JPEG", exif=exif))
    assert out.size == (20, 40)


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty"),
        (b"this is not an image at all" * 10, "not a recognised image"),
        (encode(NOISY)[: len(encode(NOISY)) // 2], "corrupt or truncated"),
        (encode(NOISY, "JPEG")[:-600], "corrupt or truncated"),
        (encode(Image.new("RGB", (4, 4), "red")), "too small"),
        (encode(Image.new("RGB", (2000, 10), "red")), "aspect ratio"),
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "tiny", "strip"],
)
def test_bad_bytes_raise_a_named_error(data, fragment):
    with pytest.raises(ImageDecodeError, match=fragment):
        decode_image(data, "upload.png")


def test_decompression_bomb_is_refused():
    data = encode(Image.new("L", (5000, 5000)))  # tiny file, 25 Mpx
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(data, limits=DecodeLimits(max_pixels=10_000_000))


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageDecodeError, match="is a directory"):
        load_image(tmp_path)
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    with pytest.raises(ImageDecodeError, match=r"loop\.png"):
        load_image(loop)
