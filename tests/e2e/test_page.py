"""The upload page in headless Chromium (Debian's, driven by Playwright from PyPI): what a person
reads for a clear photo (one class), an unsure one (a set, never a bold class), another rash (not
one of the four) and a photo of no skin, with the notice to see a doctor on every answer."""

import json
import shutil
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from skinlesion.core.paths import default_data_root
from skinlesion.data.datamodule import ImageListDataset
from skinlesion.data.transforms import eval_transforms
from skinlesion.export import export
from skinlesion.inference.decision import NOT_ENOUGH, NOT_KNOWN
from skinlesion.inference.inputs import expand_inputs
from skinlesion.inference.loading import load_classifier
from skinlesion.inference.runtime import OnnxBackend, Predictor
from skinlesion.models.graph import collect_outputs
from skinlesion.models.other import fit_other_gate
from skinlesion.models.temperature import update_checkpoint_buffers
from skinlesion.reports.nonskin import sample_photos
from skinlesion.serve.process import running_server
from tests.helpers import CLASSES, compose_task

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DOCTOR = "See a doctor about any skin change that worries you"
OTHER_RASHES, RASHES = default_data_root().parent / "msld_v2", ("Cowpox", "HFMD")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]

# Every visible element of the answer whose own text names a class in bold (font-weight >= 600).
BOLD_CLASSES = """(names) => [...document.querySelectorAll('#result *')].filter((el) => {
  const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('');
  return el.offsetParent !== null && parseInt(getComputedStyle(el).fontWeight) >= 600
    && names.some((name) => own.includes(name));
}).map((el) => el.id || el.tagName)"""


def with_other_rash_gate(deployed, out: Path) -> Path:
    """A copy of the run with the other-rash gate fitted on real photos of other rashes (and the
    slice's lesion photos as the in-class ones), exported; the tiny model's data has no other rashes."""
    run = out / "run"
    shutil.copytree(deployed.ckpt.parent.parent, run, ignore=shutil.ignore_patterns("export"))
    ckpt = run / "checkpoints" / "best.ckpt"
    model = load_classifier(ckpt)
    pre = model.preprocessing
    transform = eval_transforms(pre["image_size"], pre["mean"], pre["std"])

    def outputs(items: list[tuple[Path, int]]) -> dict:
        dataset = ImageListDataset(Path("/"), [(str(p.absolute()), y) for p, y in items], transform)
        return collect_outputs(model, DataLoader(dataset, batch_size=32))

    inside = outputs([(p, CLASSES.index(p.parent.name)) for p in expand_inputs([str(deployed.data)])])
    rashes = [(p, k) for k, name in enumerate(RASHES) for p in sorted((OTHER_RASHES / name).iterdir())[:10]]
    buffers, _ = fit_other_gate(model, inside, outputs(rashes), inside, reject=0.05)
    update_checkpoint_buffers(ckpt, buffers)
    export(compose_task("export", [f"ckpt_path={ckpt}", f"paths.output_root={out}"]))
    return run / "export" / "model.onnx"


def four_cases(model: Path, photos: Path, out: Path) -> tuple[Path, Path, Path, Path, bytes]:
    """A copy of the exported model whose sets hold every class at probability >= tau, and real
    photos for the four answers: one class, a set of two or more, another rash, no skin.

    tau is chosen on the real lesion photos so that one gets one class and another two or more:
    the tiny test model has two or three validation photos per class, too few for a fitted 90 %
    set (it lists all four classes for every photo). The page is what is tested here.
    """
    predictor = Predictor(OnnxBackend(model))
    answered = []
    for path in expand_inputs([str(photos)]):
        pred = predictor.predict_file(path)
        if not pred.abstained:
            answered.append((path, sorted(pred.probabilities.values(), reverse=True)))
    unsure, ranked = max(answered, key=lambda item: item[1][1])
    tau = ranked[1]  # the largest second probability: that photo's set holds two classes or more
    clear = next(p for p, (first, second, *_) in answered if first >= tau > second)
    rash = next(
        p
        for name in RASHES
        for p in sorted((OTHER_RASHES / name).iterdir())[:30]
        if predictor.predict_file(p).reason == "other_condition"
    )
    away = next(
        data
        for name, data in sample_photos()
        if predictor.predict_bytes(data, name).reason == "out_of_distribution"
    )
    out.mkdir()
    shutil.copyfile(model, out / "model.onnx")
    info = json.loads(model.with_suffix(".json").read_text())
    info["thresholds"]["set_thresholds"] = [tau] * len(info["class_names"])
    (out / "model.json").write_text(json.dumps(info))
    return out / "model.onnx", clear, unsure, rash, away


def sentence_of(text: str) -> str:
    return text[0].upper() + text[1:]


def copied(source: Path, folder: Path) -> Path:
    """A real file for the picker, not a symlink into the data."""
    target = folder / source.name
    shutil.copyfile(source, target)
    return target


def test_one_class_a_set_or_no_answer_said_plainly(real_deployed, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not OTHER_RASHES.is_dir():
        pytest.skip(f"photos of other rashes not found at {OTHER_RASHES}")
    gated = with_other_rash_gate(real_deployed, tmp_path / "gated")
    model, clear, unsure, rash, away = four_cases(gated, real_deployed.data, tmp_path / "model")
    nonskin = tmp_path / "model" / "nonskin.png"
    nonskin.write_bytes(away)  # a real photo of no skin (scikit-image's and others' samples)
    with running_server(model) as server, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(server.url)
            assert "research tool, not a medical device" in page.inner_text("#notice").lower()

            def upload(path: Path) -> None:
                page.set_input_files("#file", str(copied(path, tmp_path)))
                page.wait_for_selector("#answer-block:not([hidden])", timeout=30_000)
                assert DOCTOR in page.inner_text("#doctor") and page.locator("#doctor").is_visible()
                assert page.locator(".bar").count() == len(CLASSES)

            upload(clear)  # one class: the only bold class name on the page
            page.wait_for_selector("#heatmap-figure:not([hidden])", timeout=30_000)
            shown = page.inner_text("#prediction")
            assert shown in CLASSES and page.locator("#set").is_hidden()
            assert page.locator("#abstain").is_hidden()
            assert page.evaluate(BOLD_CLASSES, CLASSES) == ["prediction"]
            assert page.locator(".bar.in-set").count() == 1
            assert page.locator(".bar.in-set").get_attribute("data-class") == shown
            assert page.eval_on_selector("#heatmap", "img => img.complete && img.naturalWidth") == 64
            assert "90% prediction set" in page.inner_text("#answer")
            page.screenshot(path=str(tmp_path / "page_one.png"), full_page=True)

            upload(unsure)  # two or more: said in words, no bold class anywhere
            page.wait_for_selector("#set:not([hidden])", timeout=30_000)
            said = page.inner_text("#set")
            assert said.startswith("Could be ") and said.endswith(f"; {NOT_ENOUGH}.") and " or " in said
            named = [c for c in CLASSES if c in said]
            assert len(named) >= 2 and page.locator(".bar.in-set").count() == len(named)
            assert page.locator("#prediction").is_hidden() and page.evaluate(BOLD_CLASSES, CLASSES) == []
            page.screenshot(path=str(tmp_path / "page_set.png"), full_page=True)

            upload(rash)  # another rash: not one of the four, no class, no heatmap
            page.wait_for_selector("#abstain:not([hidden])", timeout=30_000)
            assert page.inner_text("#abstain").startswith(sentence_of(NOT_KNOWN))
            assert page.locator("#prediction").is_hidden() and page.locator("#set").is_hidden()
            assert page.locator(".bar.in-set").count() == 0 and page.locator("#heatmap-figure").is_hidden()
            assert page.evaluate(BOLD_CLASSES, CLASSES) == []
            page.screenshot(path=str(tmp_path / "page_other.png"), full_page=True)

            upload(nonskin)  # turned away: no class, no heatmap
            page.wait_for_selector("#abstain:not([hidden])", timeout=30_000)
            assert page.inner_text("#abstain").startswith("Not a recognisable skin lesion")
            assert page.locator("#prediction").is_hidden() and page.locator("#set").is_hidden()
            assert page.evaluate(BOLD_CLASSES, CLASSES) == [] and page.locator(".bar.in-set").count() == 0
            assert page.locator("#heatmap-figure").is_hidden()
            page.screenshot(path=str(tmp_path / "page_away.png"), full_page=True)

            notes = tmp_path / "notes.txt"
            notes.write_text("not an image")
            page.set_input_files("#file", str(notes))
            page.wait_for_selector("#error:not([hidden])", timeout=30_000)
            assert "not a recognised image format" in page.inner_text("#error")
        finally:
            browser.close()
    assert min((tmp_path / f"page_{k}.png").stat().st_size for k in ("one", "set", "other", "away")) > 10_000
