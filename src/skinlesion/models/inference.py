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

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from skinlesion.data.transforms import eval_transforms
from skinlesion.errors import CheckpointError
from skinlesion.evaluate import load_classifier
from skinlesion.inference.decision import Thresholds
from skinlesion.inference.runtime import OUTPUTS, ModelInfo
from skinlesion.models.classifier import SkinLesionClassifier


@contextlib.contextmanager
def captured(modules: Sequence[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Collect the outputs of ``modules`` (in call order) during a forward pass."""
    outputs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in modules]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def mahalanobis(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance of each row to the nearest of the class ``means``."""
    diff = features[:, None, :] - means[None]  # (N, C, D)
    return torch.einsum("ncd,de,nce->nc", diff, precision, diff).min(dim=1).values


def ood_statistics(model: SkinLesionClassifier) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (getattr(model, f"ood_mean_{j}"), getattr(model, f"ood_precision_{j}"))
        for j in range(len(model.ood_taps))
    ]


def ood_score(model: SkinLesionClassifier, taps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over tapped stages of the val-median-scaled Mahalanobis distance; 0 when not fitted."""
    if model.ood_scale.numel() == 0:
        return torch.zeros(taps[0].shape[0], device=taps[0].device)
    scores = [
        mahalanobis(t.float(), mean, precision) / model.ood_scale[j]
        for j, (t, (mean, precision)) in enumerate(zip(taps, ood_statistics(model), strict=True))
    ]
    return torch.stack(scores, dim=1).mean(dim=1)


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
