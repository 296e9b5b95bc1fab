"""Export (files, description, parity), the predict CLI on both backends, and torch-free serving."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skinlesion.core.errors import CheckpointError
from skinlesion.data.images import load_image
from skinlesion.export import export
from skinlesion.inference.inputs import expand_inputs
from skinlesion.inference.onnx_export import check_parity, export_onnx, sha256_file
from skinlesion.inference.torch_backend import TorchBackend
from skinlesion.models.abstention import AbstainParams, fit_abstention, fit_prediction_sets
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.graph import collect_outputs
from tests.helpers import CLASSES, compose_task, synthetic_image

TOLERANCE = 1e-4


def run_module(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_export_writes_the_model_and_its_description(deployed):
    info = json.loads(deployed.onnx.with_suffix(".json").read_text())
    assert info["format"] == "skinlesion-onnx/1" and info["class_names"] == CLASSES
    assert info["preprocessing"]["image_size"] == 64 and info["preprocessing"]["mean"] == [0.5] * 3
    assert info["thresholds"]["ood_score"] > 0 and info["thresholds"]["confidence"] is None  # fitted on val
    assert info["thresholds"]["set_level"] == 0.9 and len(info["thresholds"]["set_thresholds"]) == 4
    assert info["prediction_sets"]["level"] == 0.9 and info["metrics"]["sets/level"] == 0.9
    assert info["temperature"] > 0 and info["metrics"]["test/n"] > 0
    assert info["parity"]["images"] > 0 and info["parity"]["max_abs_prob_diff"] <= TOLERANCE
    assert info["parity"]["same_prediction_set"] == info["parity"]["images"]
    assert {"torch", "onnx", "onnxruntime"} <= set(info["versions"])
    assert info["source"]["checkpoint_sha256"] == sha256_file(deployed.ckpt)
    # the export folder travels to servers: it names its run and checkpoint, never this machine's paths
    assert info["source"]["run"] == deployed.ckpt.parent.parent.name
    assert info["source"]["checkpoint"] == "checkpoints/" + deployed.ckpt.name
    assert str(deployed.ckpt.parent) not in json.dumps(info)
    assert not list(deployed.onnx.parent.glob(".export-*"))  # the work folder is gone


@pytest.mark.integration
def test_default_architecture_matches_pytorch_on_real_images(tmp_path, real_slice):
    """efficientnet_lite0 at 224 px with fitted abstention and sets: ONNX Runtime vs PyTorch within
    1e-4, the same prediction sets."""
    torch.manual_seed(0)
    model = SkinLesionClassifier(CLASSES, backbone="efficientnet_lite0", image_size=224).eval()
    files = expand_inputs([str(real_slice)])[::4]
    backend = TorchBackend(model)
    x = torch.from_numpy(np.concatenate([backend.prepare(load_image(f)) for f in files]))
    y = torch.arange(len(files)) % 4
    outputs = collect_outputs(model, [(x, y)])
    fit_abstention(model, outputs, outputs, AbstainParams())
    fit_prediction_sets(model, model.probabilities(outputs["logits"]), y, 0.5)
    others = expand_inputs([str(real_slice)])[2::4]  # not the photos the set thresholds sit on
    parity = check_parity(model, export_onnx(model, tmp_path / "model.onnx"), others)
    assert parity["images"] == len(others) == parity["same_prediction_set"]
    assert parity["same_prediction_set_end_to_end"] == len(others)
    assert parity["max_abs_prob_diff"] <= TOLERANCE and parity["end_to_end_prob_diff"] <= TOLERANCE
    assert parity["max_rel_ood_score_diff"] <= 1e-4 and parity["max_rel_cam_diff"] <= 1e-4


def lines(result: subprocess.CompletedProcess) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr[-3000:]
    return {Path(r["file"]).name: r for r in map(json.loads, result.stdout.splitlines())}


def test_predict_from_checkpoint_and_onnx_agree(deployed, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k, colour in enumerate([(200, 60, 60), (60, 160, 60), (250, 250, 250)]):
        synthetic_image(colour, seed=99 + k, size=64).save(folder / f"img{k}.png")  # model size: no resize
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    extra = tmp_path / "single.jpg"
    synthetic_image((60, 60, 200), seed=7, size=64).save(extra, quality=95)
    inputs = f"inputs=[{folder},{extra}]"
    from_ckpt = lines(run_module("-m", "skinlesion.predict", f"ckpt_path={deployed.ckpt}", inputs))
    from_onnx = lines(
        run_module(
            "-m",
            "skinlesion.predict",
            f"ckpt_path={deployed.onnx}",
            inputs,
            "--explain",
            f"explain_dir={tmp_path / 'cam'}",
        )
    )
    assert (
        set(from_ckpt) == set(from_onnx) == {"img0.png", "img1.png", "img2.png", "broken.png", "single.jpg"}
    )
    assert "not a recognised image format" in from_onnx["broken.png"]["error"]
    for name in ("img0.png", "img1.png", "img2.png", "single.jpg"):
        a, b = from_ckpt[name], from_onnx[name]
        assert set(a["probabilities"]) == set(CLASSES) and sum(a["probabilities"].values()) == pytest.approx(
            1
        )
        diff = max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in CLASSES)
        assert diff <= TOLERANCE
        assert (a["abstained"], a["reason"], a["top_class"]) == (b["abstained"], b["reason"], b["top_class"])
        assert a["prediction_set"] == b["prediction_set"] and a["set_level"] == b["set_level"] == 0.9
        assert a["prediction"] == (a["prediction_set"][0] if len(a["prediction_set"]) == 1 else None)
        if b["reason"] != "out_of_distribution":
            assert Image.open(b["heatmap"]).size == (64, 64)
        assert "heatmap" not in a  # only with --explain


TORCH_FREE = """
import sys, runpy
onnx, image, cams = sys.argv[1:4]
sys.argv = ["predict", "ckpt_path=" + onnx, "inputs=[" + image + "]", "explain=true", "explain_dir=" + cams]
try:
    runpy.run_module("skinlesion.predict", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
from fastapi.testclient import TestClient
from skinlesion.inference.runtime import OnnxBackend, Predictor
from skinlesion.serve.app import create_app
client = TestClient(create_app(Predictor(OnnxBackend(onnx))))
r = client.post("/api/predict", files={"file": ("a.png", open(image, "rb").read(), "image/png")})
assert r.status_code == 200, r.text
print("TORCH_LOADED", "torch" in sys.modules)
"""


def test_serving_and_predicting_through_onnx_never_import_torch(deployed, tmp_path):
    image = tmp_path / "a.png"
    synthetic_image((200, 60, 60), seed=5, size=90).save(image)
    r = run_module("-c", TORCH_FREE, str(deployed.onnx), str(image), str(tmp_path / "cam"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "TORCH_LOADED False" in r.stdout


def test_export_refuses_a_broken_parity(deployed, tmp_path):
    """A tolerance no difference can meet (even 0): nothing is written, the error names the figure."""
    cfg = compose_task(
        "export",
        [
            f"ckpt_path={deployed.ckpt}",
            f"output_dir={tmp_path / 'out'}",
            "parity.tolerance=-1",
            f"parity.folder={deployed.data}",
            "parity.images=8",
        ],
    )
    with pytest.raises(
        CheckpointError, match=r"ONNX parity failed: probabilities differ by up to .* on 8 images"
    ):
        export(cfg)
    assert not (tmp_path / "out/model.onnx").exists() and not list((tmp_path / "out").glob(".export-*"))


def test_predict_requires_a_model(tmp_path):
    r = run_module("-m", "skinlesion.predict", "inputs=[x.png]")
    assert r.returncode == 2 and "ckpt_path=... is required" in r.stderr
    r = run_module("-m", "skinlesion.predict", f"ckpt_path={tmp_path / 'none.onnx'}", "inputs=[x.png]")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
