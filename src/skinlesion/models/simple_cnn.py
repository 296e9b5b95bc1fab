"""A small from-scratch CNN: the seed project's baseline, and the fast model for tests."""

from __future__ import annotations

import itertools

from torch import nn


def conv_block(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout2d(dropout) if dropout else nn.Identity(),
    )


class SimpleCNN(nn.Module):
    """Conv blocks (conv-BN-ReLU x2, max-pool, spatial dropout) and global average pooling."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.1) -> None:
        super().__init__()
        chans = (3, *widths)
        self.stages = nn.ModuleList(conv_block(a, b, dropout) for a, b in itertools.pairwise(chans))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = widths[-1]

    def feature_map(self, x):
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x):
        return self.pool(self.feature_map(x))
