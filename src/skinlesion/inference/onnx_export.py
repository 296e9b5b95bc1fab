"""ONNX export of the inference graph and its parity check against PyTorch, shared by export and bench."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import torch

from skinlesion.core.errors import DataError, ImageDecodeError
from skinlesion.data.images import load_image
from skinlesion.inference.runtime import INPUT, OUTPUTS, OnnxBackend
from skinlesion.inference.torch_backend import TorchBackend
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.conformal import set_membership
from skinlesion.models.graph import InferenceGraph

log = logging.getLogger(__name__)


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


def check_parity(model: SkinLesionClassifier, onnx_path: Path, files: list[Path]) -> dict:
    """Max absolute differences between PyTorch and ONNX Runtime on the same images.

    ``max_abs_prob_diff`` feeds both the same tensors (the export itself); ``end_to_end_prob_diff``
    lets each use its own preprocessing (eval_transforms vs the NumPy port used by serve). The
    ``same_prediction_set`` counts are the images whose sets (the model's thresholds) agree.
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
    sets = reference.info.thresholds.set_thresholds
    same_set = (
        (lambda a, b: int((set_membership(a, sets) == set_membership(b, sets)).all(1).sum()))
        if sets is not None
        else (lambda a, b: int((a.argmax(1) == b.argmax(1)).sum()))  # no sets: the top class is the set
    )
    return {
        "images": len(images),
        "max_abs_prob_diff": float(np.abs(want["probs"] - got["probs"]).max()),
        "max_rel_ood_score_diff": float(np.abs(want["ood_score"] - got["ood_score"]).max())
        / max(float(np.abs(want["ood_score"]).max()), 1e-6),
        "max_rel_cam_diff": float(np.abs(want["cam"] - got["cam"]).max()) / cam_scale,
        "max_abs_other_score_diff": float(np.abs(want["other_score"] - got["other_score"]).max()),
        "end_to_end_prob_diff": float(np.abs(want["probs"] - own["probs"]).max()),
        "same_top_class": int((want["probs"].argmax(1) == own["probs"].argmax(1)).sum()),
        "same_prediction_set": same_set(want["probs"], got["probs"]),
        "same_prediction_set_end_to_end": same_set(want["probs"], own["probs"]),
    }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
