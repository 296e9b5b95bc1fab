"""Hostile inputs to the one decoding path: every one is an ImageDecodeError with a message, or RGB.

Named cases cover the issue's list; hypothesis generates more (random bytes, mutated images of every
format and mode, arbitrary file names). ``make test`` prints how many were tried (tests/hostile.py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from skinlesion.core.errors import ImageDecodeError
from skinlesion.data.images import DEFAULT_LIMITS, DecodeLimits, load_image, printable
from skinlesion.data.manifest import PrepareParams, prepare, read_manifest
from tests.helpers import CLASSES, as_nobody, make_class_folders
from tests.hostile import attempt, encode, hostile_corpus, noisy, unusual_but_valid

HOSTILE = hostile_corpus()
VALID = unusual_but_valid()


def examples(n: int) -> settings:
    """Reproducible runs of ``n`` examples each: the suite's count is the same on every machine."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def from_path(path, _name, limits):
    return load_image(path, limits)


@pytest.mark.parametrize("data, fragment", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_bytes_are_refused_with_a_message(data, fragment):
    result = attempt(data, "upload.png")
    assert isinstance(result, ImageDecodeError) and fragment in str(result)
    assert str(result).startswith("upload.png: ")


@pytest.mark.parametrize("data, size", [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_unusual_valid_images_become_upright_rgb(data, size):
    result = attempt(data)
    assert isinstance(result, Image.Image) and result.size == size


@pytest.fixture
def hostile_files(tmp_path) -> dict[str, Path]:
    """Paths that are not image files, or are named in bytes that are not UTF-8."""
    d = tmp_path / "files"
    d.mkdir()
    files = {"directory.png": d / "directory.png", "loop.png": d / "loop.png", "fifo.png": d / "fifo.png"}
    files["directory.png"].mkdir()
    os.symlink(files["loop.png"], files["loop.png"])
    os.mkfifo(files["fifo.png"])  # reading it would block for ever
    files["dangling.png"] = d / "dangling.png"
    os.symlink(d / "nowhere.png", files["dangling.png"])
    files["device.png"] = d / "device.png"
    os.symlink("/dev/zero", files["device.png"])  # endless
    files["sparse.png"] = d / "sparse.png"
    with open(files["sparse.png"], "wb") as fh:
        fh.truncate(DEFAULT_LIMITS.max_bytes + 1)
    files["not-utf8-broken"] = Path(os.fsdecode(os.fsencode(d) + b"/broken\xff\xfe.png"))
    files["not-utf8-broken"].write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return files


@pytest.mark.timeout(60)
def test_hostile_paths_are_refused_with_a_message_that_names_them(hostile_files, tmp_path):
    hostile_files["missing.png"] = tmp_path / "missing.png"
    expected = {
        "missing.png": "no such file",
        "directory.png": "is a directory",
        "loop.png": "cannot be read",
        "fifo.png": "not a regular file",
        "dangling.png": "no such file",
        "device.png": "not a regular file",
        "sparse.png": "over the 21 MB limit",
        "not-utf8-broken": r"broken\xff\xfe.png: not a recognised image",
    }
    for key, path in hostile_files.items():
        result = attempt(path, decode=from_path)
        assert isinstance(result, ImageDecodeError) and expected[key] in str(result), key
        assert printable(path.name) in str(result), key


def test_a_good_image_under_a_non_utf8_name_decodes(tmp_path):
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/ok\xe9.png"))
    noisy(20, 20).save(path, "PNG")
    assert attempt(path, decode=from_path).size == (20, 20)
    assert printable(path).endswith(r"ok\xe9.png")


def test_unreadable_file_is_refused(shared_tmp):
    """As an unprivileged user: root (CI) reads files whatever their permissions."""
    readable, secret = shared_tmp / "readable.png", shared_tmp / "secret.png"
    noisy().save(readable)
    noisy().save(secret)
    secret.chmod(0)

    def outcomes() -> list:
        results = [attempt(p, decode=from_path) for p in (readable, secret)]
        return [r.size if isinstance(r, Image.Image) else str(r) for r in results]

    seen = as_nobody(outcomes)
    assert seen[0] == (64, 48)  # nobody reaches the folder ...
    assert "secret.png: cannot be read" in seen[1]  # ... and is refused the file


def test_prepare_leaves_out_every_hostile_file_and_writes_its_report(tmp_path, hostile_files):
    root = make_class_folders(tmp_path / "data", per_class=3, classes=CLASSES)
    for path in hostile_files.values():
        os.rename(path, os.fsencode(root / "Normal") + b"/" + os.fsencode(path.name))
    (root / "Normal/random.png").write_bytes(np.random.default_rng(0).bytes(999))
    report = prepare(root, tmp_path / "out", PrepareParams.from_config(CLASSES, None, None, "train"))
    reasons = {e["path"]: e["reason"] for e in report["excluded"]}
    assert {"Normal/random.png", "Normal/fifo.png", "Normal/loop.png", "Normal/sparse.png"} <= set(reasons)
    assert "not valid UTF-8" in reasons[r"Normal/broken\xff\xfe.png"]
    assert len(read_manifest(tmp_path / "out/manifest.csv")) == 12
    assert r"broken\xff\xfe.png" in (tmp_path / "out/report.md").read_text()


# -- what decoding does to a valid image ---------------------------------------------------------


def test_sixteen_bit_is_rescaled_not_clipped():
    arr = np.linspace(0, 65535, 20 * 30).astype(np.uint16).reshape(20, 30)
    out = np.asarray(attempt(encode(Image.fromarray(arr), "TIFF")))
    assert out.min() == 0 and out.max() == 255  # the full 16-bit range maps onto 0..255


def test_alpha_is_composited_on_white():
    transparent_red = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert np.asarray(attempt(encode(transparent_red)))[0, 0].tolist() == [255, 255, 255]


def test_more_pixels_than_the_limit_is_a_decompression_bomb():
    result = attempt(encode(Image.new("L", (5000, 5000))), limits=DecodeLimits(max_pixels=10_000_000))
    assert isinstance(result, ImageDecodeError) and "decompression bomb" in str(result)


# -- properties --------------------------------------------------------------------------------

FORMATS = ["PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF"]
MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16", "F"]


@st.composite
def encoded_images(draw, max_side: int = 64) -> tuple[bytes, tuple[int, int], str]:
    """A valid image of any size, mode and format Pillow can write; (bytes, size, format)."""
    w, h = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))
    arr = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 255, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    im = im.convert("L").point(lambda v: v * 200).convert("I;16") if mode == "I;16" else im.convert(mode)
    try:
        return encode(im, fmt), (w, h), fmt
    except (OSError, KeyError, ValueError, TypeError):
        assume(False)  # Pillow cannot write this mode in this format
        raise


@examples(1000)
@given(st.binary(max_size=4096))
def test_any_bytes_are_an_image_or_a_decode_error(data):
    attempt(data)


@examples(300)
@given(encoded_images())
def test_valid_images_are_accepted_exactly_when_their_size_is_usable(case):
    data, (w, h), _ = case
    result = attempt(data)
    usable = min(w, h) >= DEFAULT_LIMITS.min_side and max(w, h) / min(w, h) <= DEFAULT_LIMITS.max_aspect
    assert isinstance(result, Image.Image) == usable, result
    if usable:
        assert result.size == (w, h)


@examples(1000)
@given(
    encoded_images(),
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)), max_size=4),
    st.floats(0.05, 1),
)
def test_corrupted_and_truncated_images_never_crash(case, patches, keep):
    data = bytearray(case[0])
    for where, junk in patches:
        at = int(where * len(data))
        data[at : at + len(junk)] = junk
    attempt(bytes(data[: max(1, int(len(data) * keep))]))


@examples(50)
@given(encoded_images(max_side=300).filter(lambda c: c[2] in ("PNG", "GIF")))
def test_tight_limits_are_enforced(case):
    data, (w, h), _ = case
    limits = DecodeLimits(max_pixels=10_000, max_aspect=4.0)
    result = attempt(data, limits=limits)
    if w * h > limits.max_pixels or max(w, h) / min(w, h) > limits.max_aspect:
        assert isinstance(result, ImageDecodeError)


FILE_NAME = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b)


@examples(200)
@given(FILE_NAME, st.booleans())
def test_any_file_name_decodes_or_gives_a_printable_error(name, valid):
    name = name if name not in (b".", b"..") else b"x" + name
    with tempfile.TemporaryDirectory() as tmp:
        path = os.fsencode(tmp) + b"/" + name
        with open(path, "wb") as fh:
            fh.write(encode(noisy(16, 16)) if valid else b"not an image")
        result = attempt(path, decode=from_path)
    assert isinstance(result, Image.Image) == valid
    if not valid:
        assert printable(name) in str(result)
