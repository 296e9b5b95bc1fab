"""Out-of-distribution statistics: the multi-layer Mahalanobis score that abstention fits
and inference checks.

The score is the Mahalanobis distance of Lee et al. (2018) on several layers: for each tapped stage
(``SkinLesionClassifier.ood_taps``), the squared distance of the pooled features to the nearest class
mean under the training set's shared (Ledoit-Wolf) covariance, divided by its median on the
validation split; the score is the mean over the stages. Mid-level features describe what a photo
looks like (skin texture, lighting) more generally than the last layer, which fine-tuning bends
toward the four classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

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
