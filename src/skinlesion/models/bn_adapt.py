"""Test-time batch-norm adaptation (AdaBN: Li et al., "Revisiting Batch Normalization for
Practical Domain Adaptation", 2016; Schneider et al., NeurIPS 2020).

Photos from another source shift the activations' statistics; the batch-norm layers normalise with
the training source's. Re-estimating every layer's running mean and variance on the images being
scored (the target domain, labels unused) realigns them without touching a learned weight. The
estimate is the cumulative average over the batches of one pass (``momentum=None``; a short last
batch weighs as much as a full one), with every other layer in eval mode (dropout off), through the
model's own ``forward`` so that preprocessing inside the model (colour constancy) applies too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

log = logging.getLogger(__name__)

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batch_norms(model: nn.Module) -> list[nn.Module]:
    """The batch-norm layers that keep running statistics (timm's BatchNormAct2d included)."""
    return [m for m in model.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, loader: Iterable, device: torch.device | str | None = None) -> int:
    """Re-estimate every batch-norm layer's running statistics on ``loader``'s images, in place.

    ``loader`` yields ``(images, labels)`` or images (labels are ignored). The model is left in the
    mode and on the device it came in; its momenta are restored. On an empty loader or an error the
    old statistics are put back. Returns the number of images seen.
    """
    norms = batch_norms(model)
    if not norms:
        return 0
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    seen = 0
    model.to(device).eval()  # dropout off; then batch norm alone in training mode
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts the same
            m.train()
        for batch in loader:
            x = batch[0] if isinstance(batch, list | tuple) else batch
            model(x.to(device))
            seen += len(x)
        if seen == 0:
            raise ValueError("batch-norm adaptation needs at least one image")
    except BaseException:
        for m, state in zip(norms, saved, strict=True):
            m.load_state_dict(state)
        raise
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
        model.to(home)
    log.info("batch-norm statistics of %d layers re-estimated on %d images", len(norms), seen)
    return seen
