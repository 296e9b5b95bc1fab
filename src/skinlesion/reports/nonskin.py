"""Images that are not skin lesions, all available offline, for measuring abstention.

Photos bundled inside installed packages (scikit-image's ``skimage/data``, scikit-learn's and
matplotlib's sample images; read from the package folders, never fetched), plus synthetic images:
blank and flat colours, noise, gradients, patterns and document-like text. Nothing here is used to
fit anything.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Bundled with the scikit-image wheel (``skimage/data``): a portrait, a cat, objects, textures,
# scenes, microscopy and retina images, documents.
SKIMAGE_FILES = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "chessboard_RGB.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "color.png",
    "grass.png",
    "gravel.png",
    "horse.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "logo.png",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "phantom.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
SKLEARN_FILES = ("china.jpg", "flower.jpg")  # sklearn.datasets.load_sample_images
MATPLOTLIB_FILES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")  # torchvision has none


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    return (
        Path(next(iter(spec.submodule_search_locations)))
        if spec and spec.submodule_search_locations
        else None
    )


def _matplotlib_samples() -> Path | None:
    folder = package_dir("matplotlib")
    return folder / "mpl-data" / "sample_data" if folder else None


def sample_photos() -> list[tuple[str, bytes]]:
    """(name, encoded bytes) of the bundled photos of the installed packages."""
    out = []
    sources = (
        ("skimage", package_dir("skimage.data"), SKIMAGE_FILES),
        ("sklearn", package_dir("sklearn.datasets.images"), SKLEARN_FILES),
        ("matplotlib", _matplotlib_samples(), MATPLOTLIB_FILES),
    )
    for label, folder, files in sources:
        for name in files:
            if folder is not None and (folder / name).is_file():
                out.append((f"{label}/{name}", (folder / name).read_bytes()))
    return out


def _text_page(size: tuple[int, int], ink: str, paper: str, rng: np.random.Generator) -> Image.Image:
    im = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=max(10, size[1] // 28))
    words = ["patient", "invoice", "total", "report", "date", "lorem", "ipsum", "dolor", "amet", "2024"]
    y = size[1] // 14
    while y < size[1] - size[1] // 14:
        line = " ".join(rng.choice(words, rng.integers(3, 9)))
        draw.text((size[0] // 12, y), line, fill=ink, font=font)
        y += size[1] // 18
    return im


def _gradient(
    h: int, w: int, start: tuple[int, int, int], end: tuple[int, int, int], axis: int
) -> np.ndarray:
    t = np.linspace(0.0, 1.0, w)[None, :, None] if axis == 1 else np.linspace(0.0, 1.0, h)[:, None, None]
    arr = np.asarray(start, np.float64) * (1 - t) + np.asarray(end, np.float64) * t
    return np.broadcast_to(arr, (h, w, 3)).astype(np.uint8)


def synthetic_images(seed: int = 0) -> list[tuple[str, Image.Image]]:
    """Blank, flat, noise, gradient, pattern and document images (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w]
    radial = np.hypot(yy - h / 2, xx - w / 2) / np.hypot(h / 2, w / 2)
    makers: dict[str, Callable[[], Image.Image | np.ndarray]] = {
        "blank_white": lambda: Image.new("RGB", (w, h), "white"),
        "blank_black": lambda: Image.new("RGB", (w, h), "black"),
        "blank_grey": lambda: Image.new("RGB", (w, h), (128, 128, 128)),
        "flat_red": lambda: Image.new("RGB", (w, h), (200, 30, 30)),
        "flat_blue": lambda: Image.new("RGB", (w, h), (30, 60, 200)),
        "flat_green": lambda: Image.new("RGB", (w, h), (40, 160, 60)),
        "flat_skin_tone": lambda: Image.new("RGB", (w, h), (224, 172, 140)),
        "noise_uniform_rgb": lambda: rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "noise_gaussian_grey": lambda: np.repeat(
            np.clip(rng.normal(128, 40, (h, w, 1)), 0, 255).astype(np.uint8), 3, axis=2
        ),
        "noise_salt_pepper": lambda: (rng.random((h, w, 1)) > 0.5).repeat(3, 2).astype(np.uint8) * 255,
        "gradient_horizontal": lambda: _gradient(h, w, (0, 0, 0), (255, 255, 255), 1),
        "gradient_vertical_colour": lambda: _gradient(h, w, (255, 80, 0), (0, 80, 255), 0),
        "gradient_radial": lambda: np.repeat((255 * (1 - radial))[..., None], 3, 2).astype(np.uint8),
        "checkerboard": lambda: (
            ((((yy // 25) + (xx // 25)) % 2) * 255)[..., None].repeat(3, 2).astype(np.uint8)
        ),
        "stripes": lambda: np.stack(
            [(np.sin(xx / 6.0) > 0) * 220, (np.sin(xx / 6.0) > 0) * 40, np.full_like(xx, 90)], 2
        ).astype(np.uint8),
        "document_text": lambda: _text_page((w, h), "black", "white", rng),
        "document_portrait": lambda: _text_page((300, 420), (20, 20, 60), (250, 248, 240), rng),
        "document_dark_mode": lambda: _text_page((w, h), (230, 230, 230), (30, 30, 35), rng),
        "document_scan_yellowed": lambda: _text_page((w, h), (60, 50, 40), (235, 225, 190), rng),
    }
    out = []
    for name, make in makers.items():
        im = make()
        out.append((f"synthetic/{name}", im if isinstance(im, Image.Image) else Image.fromarray(im)))
    return out


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def nonskin_set(seed: int = 0) -> list[tuple[str, bytes]]:
    """Every non-skin image as (name, encoded bytes), photos first."""
    return sample_photos() + [(name, png(im)) for name, im in synthetic_images(seed)]
