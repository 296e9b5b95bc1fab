"""Explicit L1/L2 weight penalties added to the loss (distinct from the optimizer's weight decay).

``regularizer=none|l1|l2|elastic`` composes one of these; the classifier logs the penalty apart from
the data loss so that a researcher sees what each term contributes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

SCOPES = ("all", "backbone", "head")


class WeightPenalty:
    """``l1 * sum|w| + l2 * sum w^2`` over the trainable weight matrices and kernels in ``scope``.

    Biases and normalisation parameters (1-d tensors) are left out unless ``include_1d``: shrinking
    a batch-norm scale toward zero is not the regularisation anyone means by L1/L2.
    """

    def __init__(
        self, l1: float = 0.0, l2: float = 0.0, scope: str = "all", include_1d: bool = False
    ) -> None:
        if l1 < 0 or l2 < 0:
            raise ValueError(f"penalty strengths must be >= 0, got l1={l1}, l2={l2}")
        if scope not in SCOPES:
            raise ValueError(f"regularizer.scope must be one of {SCOPES}, got {scope!r}")
        self.l1, self.l2, self.scope, self.include_1d = float(l1), float(l2), scope, include_1d

    @property
    def active(self) -> bool:
        return self.l1 > 0 or self.l2 > 0

    def parameters(self, named: Iterable[tuple[str, nn.Parameter]]) -> list[nn.Parameter]:
        """The parameters this penalty covers, from ``model.named_parameters()``."""
        chosen = []
        for name, p in named:
            part = "head" if name.startswith("head.") else "backbone"
            if not p.requires_grad or (self.scope != "all" and part != self.scope):
                continue
            if p.ndim > 1 or self.include_1d:
                chosen.append(p)
        return chosen

    def __call__(self, params: list[torch.Tensor]) -> torch.Tensor:
        if not self.active or not params:
            return torch.zeros((), device=params[0].device if params else None)
        total = torch.zeros((), device=params[0].device)
        if self.l1:
            total = total + self.l1 * sum(p.abs().sum() for p in params)
        if self.l2:
            total = total + self.l2 * sum(p.pow(2).sum() for p in params)
        return total
