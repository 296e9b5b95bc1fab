"""The checkpoint backend: a Lightning checkpoint run in PyTorch eager mode behind the same
``Predictor`` as the ONNX model, and the abstention gates and prediction sets of a checkpoint
applied to a split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from skinlesion.data.transforms import eval_transforms
from skinlesion.inference.decision import Thresholds
from skinlesion.inference.loading import load_classifier
from skinlesion.inference.runtime import OUTPUTS, ModelInfo
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.conformal import set_membership
from skinlesion.models.graph import InferenceGraph, collect_outputs
from skinlesion.models.ood import ood_score
from skinlesion.models.other import other_score


def thresholds_of(model: SkinLesionClassifier) -> Thresholds:
    return Thresholds.from_values(
        float(model.confidence_threshold),
        float(model.ood_threshold),
        round(float(model.set_level), 6),  # a float32 buffer: 0.9 is stored as 0.89999998
        model.set_threshold.tolist(),
        float(model.other_threshold),
    )


class TorchBackend:
    """A Lightning checkpoint run in PyTorch eager mode, with the training code's eval transforms."""

    def __init__(self, model: SkinLesionClassifier) -> None:
        self.graph = InferenceGraph(model).eval()
        pre = model.preprocessing
        self.transform = eval_transforms(pre["image_size"], pre["mean"], pre["std"])
        self.info = ModelInfo(
            class_names=list(model.class_names),
            image_size=int(pre["image_size"]),
            mean=list(pre["mean"]),
            std=list(pre["std"]),
            thresholds=thresholds_of(model),
        )

    @classmethod
    def load(cls, path: str | Path) -> TorchBackend:
        return cls(load_classifier(path))

    def prepare(self, image: Image.Image) -> np.ndarray:
        return self.transform(TF.pil_to_tensor(image)).unsqueeze(0).numpy()

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.graph(torch.from_numpy(np.ascontiguousarray(batch)))
        return {k: v.float().numpy() for k, v in zip(OUTPUTS, values, strict=True)}


def abstention_mask(model: SkinLesionClassifier, probs: np.ndarray, loader=None) -> np.ndarray | None:
    """Which images the model declines to answer, by the gates fitted into the checkpoint.

    The same rule as ``inference.decision.decide``: out-of-distribution or other-rash score above
    its threshold (computed from ``loader``, the images behind ``probs`` in order), or top
    probability below the confidence threshold. None when the checkpoint has no fitted gate (no
    abstention figures).
    """

    gates = thresholds_of(model)
    if gates.confidence is None and gates.ood_score is None and gates.other_score is None:
        return None
    abstained = np.zeros(len(probs), dtype=bool)
    if gates.ood_score is not None or gates.other_score is not None:
        if loader is None:
            raise ValueError("the out-of-distribution and other-rash gates need the images (loader=...)")
        scores = gate_scores(model, collect_outputs(model, loader))
        if gates.ood_score is not None:
            abstained |= scores["ood_score"] > gates.ood_score
        if gates.other_score is not None:
            abstained |= scores["other_score"] > gates.other_score
    if gates.confidence is not None:
        abstained |= np.asarray(probs).max(1) < gates.confidence
    return abstained


def gate_scores(model: SkinLesionClassifier, outputs: dict) -> dict[str, np.ndarray]:
    """The out-of-distribution and other-rash scores of ``collect_outputs``' photos."""
    device = model.temperature.device
    taps = [t.to(device) for t in outputs["taps"]]
    return {
        "ood_score": ood_score(model, taps).cpu().numpy(),
        "other_score": other_score(model, taps).cpu().numpy(),
    }


def prediction_sets(model: SkinLesionClassifier, probs: np.ndarray) -> dict:
    """``write_evaluation``'s set arguments: the (N, C) membership of the checkpoint's prediction
    sets (the rule of ``decide``, before any gate) and their level; nothing without set thresholds."""
    gates = thresholds_of(model)
    if gates.set_thresholds is None:
        return {}
    return {"prediction_sets": set_membership(probs, gates.set_thresholds), "set_level": gates.set_level}
