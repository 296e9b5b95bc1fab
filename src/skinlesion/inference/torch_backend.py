"""The deployed forward pass as one module: what ``export`` traces and ``predict`` runs from a checkpoint.

From one normalised batch it returns ``skinlesion.inference.runtime.OUTPUTS``: calibrated
probabilities, the out-of-distribution score that abstention checks, and the class activation map
of every class (see ``skinlesion.inference.cam`` for why it is exact).

The out-of-distribution score is the Mahalanobis distance of Lee et al. (2018) on several layers:
for each tapped stage (``SkinLesionClassifier.ood_taps``), the squared distance of the pooled
features to the nearest class mean under the training set's shared (Ledoit-Wolf) covariance,
divided by its median on the validation split; the score is the mean over the stages. Mid-level
features describe what a photo looks like (skin texture, lighting) more generally than the last
layer, which fine-tuning bends toward the four classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from skinlesion.core.errors import CheckpointError
from skinlesion.data.transforms import eval_transforms
from skinlesion.inference.decision import Thresholds
from skinlesion.inference.loading import load_classifier
from skinlesion.inference.runtime import OUTPUTS, ModelInfo
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.ood import captured, ood_score


def thresholds_of(model: SkinLesionClassifier) -> Thresholds:
    return Thresholds.from_values(float(model.confidence_threshold), float(model.ood_threshold))


class InferenceGraph(nn.Module):
    """Classifier + out-of-distribution score + class activation maps, for one normalised batch."""

    def __init__(self, model: SkinLesionClassifier) -> None:
        super().__init__()
        if not isinstance(model.head[-1], nn.Linear):
            raise CheckpointError("class activation maps need a linear last layer in the head")
        self.model = model.eval()

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(last feature map, pooled outputs of the tapped stages, logits); logits equal ``model(x)``."""
        if self.model.hparams.channels_last:  # as in the classifier's forward: the weights' layout
            x = x.contiguous(memory_format=torch.channels_last)
        with captured(self.model.ood_taps) as taps:
            fmap = self.model.backbone.feature_map(x)
        return fmap, [t.mean(dim=(2, 3)) for t in taps], self.model.head(fmap.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor):
        m = self.model
        fmap, taps, logits = self.features(x)
        cam = torch.einsum("ck,nkhw->nchw", m.head[-1].weight.float(), fmap.float())
        return m.probabilities(logits), ood_score(m, taps), cam


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


@torch.no_grad()
def collect_outputs(model: SkinLesionClassifier, loader) -> dict:
    """Logits, pooled tapped-stage features and targets over a loader, in eval mode, on the CPU."""
    was_training = model.training
    graph = InferenceGraph(model)
    device = next(model.parameters()).device
    logits, taps, targets = [], [], []
    for x, y in loader:
        _, tapped, out = graph.features(x.to(device))
        logits.append(out.float().cpu())
        taps.append([t.float().cpu() for t in tapped])
        targets.append(y)
    model.train(was_training)
    return {
        "logits": torch.cat(logits),
        "taps": [torch.cat(parts) for parts in zip(*taps, strict=True)],
        "targets": torch.cat(targets),
    }


def abstention_mask(model: SkinLesionClassifier, probs: np.ndarray, loader=None) -> np.ndarray | None:
    """Which images the model declines to answer, by the gates fitted into the checkpoint.

    The same rule as ``inference.decision.decide``: out-of-distribution score above its threshold
    (computed from ``loader``, the images behind ``probs`` in order), or top probability below the
    confidence threshold. None when the checkpoint has no fitted gate (no abstention figures).
    """
    from skinlesion.inference.torch_backend import collect_outputs, thresholds_of
    from skinlesion.models.ood import ood_score

    gates = thresholds_of(model)
    if gates.confidence is None and gates.ood_score is None:
        return None
    abstained = np.zeros(len(probs), dtype=bool)
    if gates.ood_score is not None:
        if loader is None:
            raise ValueError("the out-of-distribution gate needs the images (loader=...)")
        device = model.temperature.device
        taps = [t.to(device) for t in collect_outputs(model, loader)["taps"]]
        abstained |= ood_score(model, taps).cpu().numpy() > gates.ood_score
    if gates.confidence is not None:
        abstained |= np.asarray(probs).max(1) < gates.confidence
    return abstained
