"""Hostile image inputs, shared by the test suite and the fuzzer (``make fuzz``), and their tally.

:func:`attempt` is the one way the tests feed a hostile input to the decoder: it checks the
contract (an RGB image within the limits, or an ImageDecodeError with a message; nothing else) and
counts the input, so that ``make test`` can report how many hostile inputs it tried.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections import Counter
from collections.abc import Callable

import numpy as np
from PIL import Image

from skinlesion.core.errors import ImageDecodeError
from skinlesion.data.images import DEFAULT_LIMITS, DecodeLimits, decode_image

TALLY: Counter[str] = Counter()  # "inputs", "refused", "decoded"


def attempt(
    source, name: str = "hostile", limits: DecodeLimits = DEFAULT_LIMITS, decode: Callable = decode_image
) -> Image.Image | ImageDecodeError:
    """``decode(source, name, limits)``: the image or the ImageDecodeError; anything else fails."""
    TALLY["inputs"] += 1
    try:
        image = decode(source, name, limits)
    except ImageDecodeError as e:
        assert str(e).strip(), "an ImageDecodeError without a message"
        str(e).encode("utf-8")  # printable and loggable, whatever the name was
        TALLY["refused"] += 1
        return e
    assert image.mode == "RGB"
    w, h = image.size
    assert w * h <= limits.max_pixels and min(w, h) >= limits.min_side
    TALLY["decoded"] += 1
    return image


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def noisy(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(width: int, height: int, extra: bytes = b"", idat: bytes = b"") -> bytes:
    """A PNG assembled by hand, so that its header can claim anything."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", zlib.compress(idat))
        + png_chunk(b"IEND", b"")
    )


def flip(data: bytes, start: int, length: int) -> bytes:
    return data[:start] + bytes(b ^ 0xA5 for b in data[start : start + length]) + data[start + length :]


def bmp_header(width: int, height: int) -> bytes:
    return (
        b"BM"
        + struct.pack("<IHHI", 54, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    )


def tiff_header(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    entries += [(273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, width * height)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00"


def text_bomb(kind: bytes) -> bytes:
    """A 16x16 PNG with a metadata chunk that inflates to 50 MB."""
    return raw_png(16, 16, png_chunk(kind, b"k\x00\x00" + zlib.compress(bytes(50_000_000))), bytes(16 * 49))


def array_image(values: np.ndarray, fmt: str = "PNG") -> bytes:
    return encode(Image.fromarray(values), fmt)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n"


def hostile_corpus() -> list[tuple[str, bytes, str]]:
    """(id, bytes, fragment of the expected message): every one must be refused."""
    rng = np.random.default_rng(6)
    png, jpeg, webp = encode(noisy()), encode(noisy(), "JPEG"), encode(noisy(), "WEBP")
    corpus = [("empty", b"", "empty")]
    corpus += [(f"random-{n}", rng.bytes(n), "not a recognised") for n in (1, 16, 512, 65536)]
    corpus += [(f"png-magic-then-random-{n}", png[:8] + rng.bytes(n), "") for n in (8, 600)]
    for fmt, data in (("png", png), ("jpeg", jpeg), ("webp", webp)):
        for cut in (0.1, 0.5, 0.9):
            corpus.append((f"truncated-{fmt}-{cut:.0%}", data[: int(len(data) * cut)], ""))
    # the end of the pixel data (a PNG without its IEND chunk still holds every pixel)
    corpus += [("truncated-png-end", png[:-100], ""), ("truncated-jpeg-end", jpeg[:-200], "")]
    corpus += [("truncated-webp-last-byte", webp[:-1], "")]
    corpus += [
        ("corrupt-png-crc", flip(png, 60, 10), "corrupt or truncated"),
        ("corrupt-png-ihdr", flip(png, 16, 8), ""),
        ("corrupt-jpeg-sof", flip(jpeg, 150, 24), ""),
        ("corrupt-webp-riff", flip(webp, 4, 8), ""),
        ("corrupt-webp-vp8-header", flip(webp, 12, 20), ""),
        ("png-0x0", raw_png(0, 0), ""),
        ("png-1x1", encode(Image.new("RGB", (1, 1))), "too small"),
        ("jpeg-1x1", encode(Image.new("RGB", (1, 1)), "JPEG"), "too small"),
        ("png-50000x10", encode(Image.new("RGB", (50_000, 10))), "aspect ratio"),
        ("png-10x50000", encode(Image.new("L", (10, 50_000))), "aspect ratio"),
        ("bomb-png-header-100k", raw_png(100_000, 100_000), "decompression bomb"),
        ("bomb-png-7000x7000", encode(Image.new("L", (7000, 7000))), "decompression bomb"),
        ("bomb-bmp-header", bmp_header(60_000, 60_000), "decompression bomb"),
        ("bomb-tiff-header", tiff_header(60_000, 60_000), "decompression bomb"),
        ("bomb-gif-screen", b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00;", ""),
        ("bomb-png-ztxt", text_bomb(b"zTXt"), ""),
        ("bomb-png-iccp", text_bomb(b"iCCP"), ""),
        ("eps-ghostscript", EPS, "not a recognised"),
        ("ico", encode(noisy(), "ICO"), "not a recognised"),
        ("psd-magic", b"8BPS" + bytes(100), "not a recognised"),
        ("oversized-file", png + bytes(DEFAULT_LIMITS.max_bytes), "limit"),
    ]
    # the first named cases of the decoder's tests, each with the message it must give
    square, text = noisy(64, 64, seed=1), b"this is not an image at all" * 10
    corpus += [
        ("text", text, "not a recognised image"),
        ("truncated-png-half", encode(square)[: len(encode(square)) // 2], "corrupt or truncated"),
        ("truncated-jpeg-600", encode(square, "JPEG")[:-600], "corrupt or truncated"),
        ("png-4x4", encode(Image.new("RGB", (4, 4), "red")), "too small"),
        ("png-2000x10", encode(Image.new("RGB", (2000, 10), "red")), "aspect ratio"),
    ]
    return corpus


def exif_jpeg(orientation: int | str, size: tuple[int, int] = (40, 20)) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.new("RGB", size, (10, 20, 30)), "JPEG", exif=exif)


def unusual_but_valid() -> list[tuple[str, bytes, tuple[int, int]]]:
    """(id, bytes, expected RGB size): modes and encodings a photo can legitimately come in."""
    base = noisy(30, 20)
    gif = io.BytesIO()
    frames = [Image.new("P", (30, 20), i) for i in range(50)]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    return [
        ("rgb-png", encode(base), (30, 20)),
        ("grey-png", encode(base.convert("L")), (30, 20)),
        ("cmyk-jpeg", encode(base.convert("CMYK"), "JPEG"), (30, 20)),
        ("palette-png", encode(base.convert("P")), (30, 20)),
        ("palette-transparency-png", encode(base.convert("P"), transparency=3), (30, 20)),
        ("rgba-png", encode(base.convert("RGBA")), (30, 20)),
        ("la-png", encode(base.convert("LA")), (30, 20)),
        ("1bit-png", encode(base.convert("1")), (30, 20)),
        ("16bit-png", array_image(np.arange(600, dtype=np.uint16).reshape(20, 30) * 99), (30, 20)),
        ("16bit-tiff", array_image(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100, "TIFF"), (30, 20)),
        ("int32-tiff", array_image(np.arange(600, dtype=np.int32).reshape(20, 30), "TIFF"), (30, 20)),
        ("float-nan-tiff", array_image(np.full((20, 30), np.nan, np.float32), "TIFF"), (30, 20)),
        ("webp", encode(base, "WEBP"), (30, 20)),
        ("bmp", encode(base, "BMP"), (30, 20)),
        ("animated-gif-50-frames", gif.getvalue(), (30, 20)),
        ("exif-orientation-invalid", exif_jpeg(99), (40, 20)),
        *[(f"exif-orientation-{o}", exif_jpeg(o), (20, 40) if o >= 5 else (40, 20)) for o in range(1, 9)],
    ]
