"""``python -m skinlesion.export``: the calibrated classifier with its abstention, as ONNX + JSON.

Writes ``model.onnx`` (the ``InferenceGraph``: probabilities after temperature scaling, the k-NN
feature distance, the skin fraction and the class activation maps; dynamic batch) and
``model.json`` (class names, preprocessing, thresholds, metrics, versions, provenance, parity). It
runs the exported graph in ONNX Runtime and PyTorch on the same real images and refuses to write
the files when any probability differs by more than ``parity.tolerance``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from skinlesion.cli import run_task
from skinlesion.data.images import load_image
from skinlesion.errors import CheckpointError, DataError, ImageDecodeError
from skinlesion.evaluate import (
    checkpoint_datamodule,
    default_checkpoint,
    load_classifier,
    run_dir_of,
    split_files,
)
from skinlesion.inference.runtime import INPUT, MODEL_FORMAT, OUTPUTS, OnnxBackend
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.inference import InferenceGraph, TorchBackend
from skinlesion.paths import CONF_DIR
from skinlesion.predict import expand_inputs
from skinlesion.runs import git_commit, package_versions, write_json

log = logging.getLogger(__name__)
EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


def export_onnx(model: SkinLesionClassifier, path: Path, opset: int = 18) -> Path:
    """Trace the inference graph with torch.export (dynamic batch) and save it as ONNX."""
    size = int(model.preprocessing["image_size"])
    graph = InferenceGraph(model).eval()
    example = torch.zeros(2, 3, size, size)
    for name in ("onnx_ir", "onnxscript"):  # their graph passes log every rewrite at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    chatter = io.StringIO()  # the exporter prints progress lines; keep stdout for results
    with contextlib.redirect_stdout(chatter), torch.no_grad():
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            opset_version=opset,
            dynamo=True,
            external_data=False,  # one self-contained file (the model is far below 2 GB)
        )
    log.debug(chatter.getvalue())
    return path


def parity_files(cfg: DictConfig, ckpt: Path, model: SkinLesionClassifier) -> list[Path]:
    if cfg.parity.folder:
        files = expand_inputs([cfg.parity.folder])
    else:
        files = split_files(checkpoint_datamodule(ckpt, model, cfg.data.root), "test")
    if not files:
        raise DataError("the parity check needs real images: none found (set parity.folder=...)")
    return files[: int(cfg.parity.images)]


def check_parity(model: SkinLesionClassifier, onnx_path: Path, files: list[Path]) -> dict:
    """Max absolute differences between PyTorch and ONNX Runtime on the same images.

    ``max_abs_prob_diff`` feeds both the same tensors (the export itself); ``end_to_end_prob_diff``
    lets each use its own preprocessing (eval_transforms vs the NumPy port used by serve).
    """
    reference = TorchBackend(model)
    onnx = OnnxBackend(onnx_path, info=reference.info)
    images = []
    for f in files:
        with contextlib.suppress(ImageDecodeError):
            images.append(load_image(f))
    if not images:
        raise DataError(f"none of the {len(files)} parity images could be decoded")
    batch = np.concatenate([reference.prepare(im) for im in images])
    want, got = reference.run(batch), onnx.run(batch)
    own = onnx.run(np.concatenate([onnx.prepare(im) for im in images]))
    cam_scale = float(np.abs(want["cam"]).max()) or 1.0
    return {
        "images": len(images),
        "max_abs_prob_diff": float(np.abs(want["probs"] - got["probs"]).max()),
        "max_rel_ood_score_diff": float(np.abs(want["ood_score"] - got["ood_score"]).max())
        / max(float(np.abs(want["ood_score"]).max()), 1e-6),
        "max_rel_cam_diff": float(np.abs(want["cam"] - got["cam"]).max()) / cam_scale,
        "end_to_end_prob_diff": float(np.abs(want["probs"] - own["probs"]).max()),
        "same_top_class": int((want["probs"].argmax(1) == own["probs"].argmax(1)).sum()),
    }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_description(model: SkinLesionClassifier, ckpt: Path, parity: dict, opset: int) -> dict:
    """Everything ``model.json`` says: what the model needs, how it decides, where it came from."""
    reference = TorchBackend(model)
    size = int(model.preprocessing["image_size"])
    run_metrics_path = run_dir_of(ckpt) / "metrics.json"
    run_metrics = json.loads(run_metrics_path.read_text()) if run_metrics_path.is_file() else {}
    metric_prefixes = ("test/", "val/", "calibration/", "abstain/")
    versions = package_versions()
    for name in EXPORT_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "format": MODEL_FORMAT,
        "class_names": list(model.class_names),
        "preprocessing": model.preprocessing,
        "temperature": float(model.temperature),
        "thresholds": reference.info.thresholds.to_json(),
        "abstention": {
            "ood_stages": len(model.ood_taps),
            "ood_scale": model.ood_scale.tolist(),
            "method": "multi-layer Mahalanobis (Lee et al. 2018) + calibrated confidence, fitted on val",
        },
        "input": {"name": INPUT, "shape": ["batch", 3, size, size], "dtype": "float32"},
        "outputs": list(OUTPUTS),
        "opset": opset,
        "metrics": {k: v for k, v in run_metrics.items() if k.startswith(metric_prefixes)},
        "parity": parity,
        "versions": versions,
        "source": {
            "checkpoint": str(ckpt.resolve()),
            "checkpoint_sha256": sha256_file(ckpt),
            "backbone": model.hparams.backbone,
            "data_manifest_sha256": model.hparams.get("data_manifest_sha256"),
            "git_commit": git_commit(),
        },
    }


def export(cfg: DictConfig) -> dict:
    ckpt = default_checkpoint(cfg)
    model = load_classifier(ckpt)
    out_dir = Path(cfg.output_dir) if cfg.output_dir else run_dir_of(ckpt) / "export"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    except OSError as e:
        raise CheckpointError(f"cannot write the export to {out_dir}: {e.strerror or e}") from e
    try:
        onnx_path = export_onnx(model, work / "model.onnx", int(cfg.opset))
        parity = check_parity(model, onnx_path, parity_files(cfg, ckpt, model))
        parity["tolerance"] = float(cfg.parity.tolerance)
        if parity["max_abs_prob_diff"] > cfg.parity.tolerance:
            raise CheckpointError(
                f"ONNX parity failed: probabilities differ by up to {parity['max_abs_prob_diff']:.2e} "
                f"from PyTorch on {parity['images']} images (tolerance {cfg.parity.tolerance:g}); "
                "nothing written"
            )
        write_json(work / "model.json", model_description(model, ckpt, parity, int(cfg.opset)))
        os.replace(onnx_path, out_dir / "model.onnx")
        os.replace(work / "model.json", out_dir / "model.json")
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    log.info("exported %s to %s", ckpt, out_dir)
    print(
        f"{out_dir / 'model.onnx'}  parity: max |p_onnx - p_torch| = {parity['max_abs_prob_diff']:.2e} "
        f"on {parity['images']} images (end to end {parity['end_to_end_prob_diff']:.2e})"
    )
    return parity


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    run_task(export, cfg)


if __name__ == "__main__":
    main()
