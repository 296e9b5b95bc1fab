"""The upload page in headless Chromium (Debian's, driven by Playwright from PyPI)."""

import shutil
from pathlib import Path

import httpx
import pytest

from skinlesion.inference.loading import checkpoint_datamodule, load_classifier, split_files
from skinlesion.serve.process import running_server
from tests.conftest import CLASSES

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]


def answered_test_image(url: str, ckpt: Path) -> tuple[Path, dict]:
    """A real test-split image the model answers (the page shows a class and a heatmap for it)."""
    model = load_classifier(ckpt)
    for path in split_files(checkpoint_datamodule(ckpt, model), "test"):
        body = httpx.post(
            f"{url}/api/predict", files={"file": (path.name, path.read_bytes())}, timeout=60
        ).json()
        if not body["abstained"]:
            return path, body
    pytest.fail("the model abstained on every real test image")


def test_upload_shows_the_class_the_bars_and_the_heatmap(real_deployed, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    with running_server(real_deployed.onnx) as server, playwright.sync_playwright() as p:
        image, expected = answered_test_image(server.url, real_deployed.ckpt)
        upload = tmp_path / image.name  # a real file for the picker, not a symlink into the data
        shutil.copyfile(image, upload)
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(server.url)
            assert "research tool, not a medical device" in page.inner_text("#notice").lower()
            page.set_input_files("#file", str(upload))
            page.wait_for_selector("#heatmap-figure:not([hidden])", timeout=30_000)
            assert page.inner_text("#prediction") == expected["prediction"] in CLASSES
            assert page.locator("#abstain").is_hidden()
            assert page.locator(".bar").count() == len(CLASSES)
            top = page.locator(".bar.top")
            assert top.get_attribute("data-class") == expected["prediction"]
            assert page.eval_on_selector("#heatmap", "img => img.src.startsWith('data:image/png')")
            assert page.eval_on_selector("#heatmap", "img => img.complete && img.naturalWidth") == 64
            assert page.eval_on_selector("#preview", "img => img.complete && img.naturalWidth") > 0
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            notes = tmp_path / "notes.txt"
            notes.write_text("not an image")
            page.set_input_files("#file", str(notes))
            page.wait_for_selector("#error:not([hidden])", timeout=30_000)
            assert "not a recognised image format" in page.inner_text("#error")
            page.screenshot(path=str(tmp_path / "page_error.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000
