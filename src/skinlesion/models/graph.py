"""The deployed forward pass as one module: what ``export`` traces and every backend runs.

From one normalised batch it returns ``skinlesion.inference.runtime.OUTPUTS``: calibrated
probabilities, the out-of-distribution score that abstention checks (``models.ood``), the class
activation map of every class (see ``skinlesion.inference.cam`` for why it is exact) and the
other-rash score (``models.other``).
"""

from __future__ import annotations

import torch
from torch import nn

from skinlesion.core.errors import CheckpointError
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.ood import captured, ood_score
from skinlesion.models.other import other_score


class InferenceGraph(nn.Module):
    """Classifier + out-of-distribution score + class activation maps, for one normalised batch."""

    def __init__(self, model: SkinLesionClassifier) -> None:
        super().__init__()
        if not isinstance(model.head[-1], nn.Linear):
            raise CheckpointError("class activation maps need a linear last layer in the head")
        self.model = model.eval()

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(last feature map, pooled outputs of the tapped stages, logits); logits equal ``model(x)``."""
        x = self.model.color_correct(x)  # the classifier's own first step (models/colour.py)
        if self.model.hparams.channels_last:  # as in the classifier's forward: the weights' layout
            x = x.contiguous(memory_format=torch.channels_last)
        with captured(self.model.ood_taps) as taps:
            fmap = self.model.backbone.feature_map(x)
        return fmap, [t.mean(dim=(2, 3)) for t in taps], self.model.head(fmap.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor):
        m = self.model
        fmap, taps, logits = self.features(x)
        cam = torch.einsum("ck,nkhw->nchw", m.head[-1].weight.float(), fmap.float())
        other = other_score(m, taps)
        return m.probabilities(logits), ood_score(m, taps), cam, other


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
