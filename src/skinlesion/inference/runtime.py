"""The predictor behind ``predict`` and ``serve``: decode, preprocess, run a backend, decide, explain.

A backend turns one image into the model's outputs (``OUTPUTS``): the ONNX Runtime backend here,
or the checkpoint backend in ``skinlesion.inference.torch_backend``. Everything after the forward pass is
shared NumPy, so the two backends answer the same (``tests`` compare them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from skinlesion.core.errors import CheckpointError
from skinlesion.data.images import DecodeLimits, decode_image, load_image
from skinlesion.inference.cam import overlay
from skinlesion.inference.decision import TURNED_AWAY, Thresholds, decide
from skinlesion.inference.preprocess import model_view, normalise

# Model outputs, in the order the ONNX graph returns them (other_score: models exported since the
# other-rash gate; an older model.onnx lacks it and its gate is off).
OUTPUTS = ("probs", "ood_score", "cam", "other_score")
INPUT = "image"
MODEL_FORMAT = "skinlesion-onnx/1"
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers MPO (multi-picture)
UPLOAD_LIMITS = DecodeLimits(max_bytes=10 * 1024 * 1024, formats=PHOTO_FORMATS)


@dataclass(frozen=True)
class ModelInfo:
    """What travels with a model: classes, preprocessing, abstention and prediction-set thresholds."""

    class_names: list[str]
    image_size: int
    mean: list[float]
    std: list[float]
    thresholds: Thresholds = field(default_factory=Thresholds)
    extra: dict = field(default_factory=dict)  # the rest of model.json (metrics, versions, ...)

    @classmethod
    def from_json(cls, data: dict) -> ModelInfo:
        pre = data["preprocessing"]
        return cls(
            class_names=list(data["class_names"]),
            image_size=int(pre["image_size"]),
            mean=[float(v) for v in pre["mean"]],
            std=[float(v) for v in pre["std"]],
            thresholds=Thresholds.from_json(data.get("thresholds")),
            extra=data,
        )


def read_model_info(path: Path) -> ModelInfo:
    if not path.is_file():
        raise CheckpointError(f"{path} not found: an exported model.onnx needs its model.json beside it")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != MODEL_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {MODEL_FORMAT!r}")
        return ModelInfo.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} is not a skinlesion model description: {e}") from e


class Backend(Protocol):
    info: ModelInfo

    def prepare(self, image: Image.Image) -> np.ndarray:
        """RGB image -> normalised float32 batch of one, (1, 3, size, size)."""

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Batch -> ``OUTPUTS`` as NumPy arrays, batch first."""


class OnnxBackend:
    """An exported ``model.onnx`` with its ``model.json``, run by ONNX Runtime (no torch)."""

    def __init__(self, path: str | os.PathLike, threads: int = 0, info: ModelInfo | None = None) -> None:
        """``info`` defaults to the ``model.json`` beside ``model.onnx``."""
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"{path} not found; export a model first (python -m skinlesion.export ckpt_path=...)"
            )
        self.info = info or read_model_info(path.with_suffix(".json"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: on a shared CPU, spinning threads take the
        # cores from every other process (make bench measured it).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            # ONNX is a protobuf of tensors and operators: loading it runs no pickled code.
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for bad files
            raise CheckpointError(f"{path} is not a usable ONNX model: {e}") from e
        self.path = path
        self.outputs = [o.name for o in self.session.get_outputs() if o.name in OUTPUTS]

    def prepare(self, image: Image.Image) -> np.ndarray:
        i = self.info
        return normalise(model_view(image, i.image_size), i.mean, i.std)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, {INPUT: np.ascontiguousarray(batch, dtype=np.float32)})
        return dict(zip(self.outputs, values, strict=True))


@dataclass
class Prediction:
    """One image's answer. ``prediction`` is the class only when the prediction set holds exactly
    one; it is None for a set of two or more and when the model abstains. ``top_class`` never is."""

    file: str
    prediction: str | None
    prediction_set: list[str]  # most probable first; empty when the model abstains
    set_level: float | None  # the sets' stated coverage; None: no sets fitted (top class alone)
    top_class: str
    confidence: float
    probabilities: dict[str, float]
    abstained: bool
    reason: str | None
    message: str
    ood_score: float
    other_score: float
    heatmap: Image.Image | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "heatmap"}


class Predictor:
    """Decodes with the project's one decoder, runs a backend, applies abstention and explains."""

    def __init__(self, backend: Backend, limits: DecodeLimits = UPLOAD_LIMITS) -> None:
        self.backend = backend
        self.info = backend.info
        self.limits = limits

    def predict_image(self, image: Image.Image, name: str, explain: bool = False) -> Prediction:
        outputs = self.backend.run(self.backend.prepare(image))
        return self.answer(outputs, 0, image, name, explain)

    def answer(
        self, outputs: dict[str, np.ndarray], i: int, image: Image.Image, name: str, explain: bool
    ) -> Prediction:
        """Row ``i`` of a backend's outputs -> a Prediction (with its heatmap when ``explain``)."""
        names = self.info.class_names
        probs = [float(p) for p in outputs["probs"][i]]
        ood = float(outputs["ood_score"][i])
        other = float(outputs["other_score"][i]) if "other_score" in outputs else 0.0
        decision = decide(probs, names, ood, self.info.thresholds, other)
        top = int(np.argmax(probs))
        heatmap = None
        if explain and decision.reason not in TURNED_AWAY:  # no map of a class it is not
            heatmap = overlay(model_view(image, self.info.image_size), outputs["cam"][i][top])
        return Prediction(
            file=name,
            prediction=decision.answer,
            prediction_set=list(decision.prediction_set),
            set_level=self.info.thresholds.set_level,
            top_class=names[top],
            confidence=probs[top],
            probabilities=dict(zip(names, probs, strict=True)),
            abstained=decision.abstained,
            reason=decision.reason,
            message=decision.message,
            ood_score=ood,
            other_score=other,
            heatmap=heatmap,
        )

    def predict_bytes(self, data: bytes, name: str = "<upload>", explain: bool = False) -> Prediction:
        return self.predict_image(decode_image(data, name, self.limits), name, explain)

    def predict_file(self, path: str | os.PathLike, explain: bool = False) -> Prediction:
        return self.predict_image(load_image(path, self.limits), os.fsdecode(path), explain)
