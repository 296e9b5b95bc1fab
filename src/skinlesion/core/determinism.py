"""Randomness as a pure function of (seed, epoch), so that a resumed run replays the lost epochs exactly.

Lightning restores weights, optimizer, scheduler, loop counters and callback state from
``last.ckpt``, but not the random number generators: after a resume, a shuffled DataLoader, the
augmentations and dropout would draw different numbers than the run that died. Here every epoch
starts from generators derived from (seed, epoch) alone:

- :class:`EpochSampler` draws the training order from (seed, epoch) and gives every sample its own
  augmentation seed, which the dataset applies in whichever process decodes it (any ``num_workers``);
- :class:`EpochSeeding` reseeds the global generators (dropout) when a training epoch starts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler


def derive_seed(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed from a base seed and keys (epoch, rank, ...), stable across platforms."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0] >> 1)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)``: a permutation (or, with ``weights``, a draw with replacement).

    Both depend only on (seed, epoch). Lightning calls :meth:`set_epoch` before every epoch (also
    through its distributed wrapper); iterating again without it moves on to the next epoch.
    """

    def __init__(self, n: int, seed: int | None, weights: Sequence[float] | None = None) -> None:
        self.n = n
        self.seed = int(torch.empty((), dtype=torch.int64).random_()) if seed is None else int(seed)
        self.weights = torch.as_tensor(weights, dtype=torch.float64) if weights is not None else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        self.epoch += 1
        if self.n == 0:
            return
        if self.weights is None:
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=gen)
        seeds = torch.randint(0, 2**62, (self.n,), generator=gen)
        yield from zip(order.tolist(), seeds.tolist(), strict=True)


class EpochSeeding(L.Callback):
    """Reseed torch, NumPy and ``random`` from (seed, epoch, rank) when each training epoch starts."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.seed is None:
            return
        seed = derive_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
