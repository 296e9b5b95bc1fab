"""DataModule: manifest-driven splits, separate train/eval transforms, class balancing."""

from collections import Counter

import pytest
import torch

from skinlesion.core.errors import DataError
from skinlesion.data.datamodule import SkinLesionDataModule
from tests.helpers import CLASSES, datamodule


def test_splits_follow_the_manifest(tmp_path, synthetic_root):
    dm = datamodule(synthetic_root, tmp_path)
    sizes = {s: len(dm.datasets[s]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 48 and sizes["train"] > sizes["val"] > 0
    assert dm.class_names == CLASSES
    manifest_paths = {r["path"] for r in dm.split_rows("val")}
    assert {p for p, _ in dm.datasets["val"].items} == manifest_paths


def test_train_is_augmented_eval_is_deterministic_and_normalised(tmp_path, synthetic_root):
    dm = datamodule(synthetic_root, tmp_path, mean=[0.5] * 3, std=[0.5] * 3)
    x1, _ = dm.datasets["val"][0]
    x2, _ = dm.datasets["val"][0]
    assert x1.shape == (3, 32, 32) and x1.dtype == torch.float32
    assert torch.equal(x1, x2)
    assert x1.min() >= -1.0 and x1.max() <= 1.0
    torch.manual_seed(0)
    t1, _ = dm.datasets["train"][0]
    t2, _ = dm.datasets["train"][0]
    assert not torch.equal(t1, t2)


def test_loss_weights_are_inverse_frequency(tmp_path, synthetic_root):
    for f in sorted((synthetic_root / "Measles").iterdir())[4:]:
        f.unlink()  # 4 Measles vs 12 of the others
    dm = datamodule(synthetic_root, tmp_path)
    counts = dm.class_counts("train")
    w = dm.loss_weights
    assert w[1] > w[0] and w[1] * counts[1] == pytest.approx(w[0] * counts[0], rel=1e-3)
    assert datamodule(synthetic_root, tmp_path, balance="none").loss_weights is None


def test_sampler_balances_classes(tmp_path, synthetic_root):
    for f in sorted((synthetic_root / "Measles").iterdir())[3:]:
        f.unlink()
    dm = datamodule(synthetic_root, tmp_path, balance="sampler", batch_size=64)
    seen = Counter()
    for _ in range(30):
        for _, y in dm.train_dataloader():
            seen.update(y.tolist())
    share = seen[1] / sum(seen.values())
    assert 0.18 < share < 0.32  # ~1/4, though Measles is ~7% of the training images
    assert dm.loss_weights is None


def test_unknown_balance_mode_is_named(tmp_path, synthetic_root):
    with pytest.raises(DataError, match=r"data\.balance"):
        SkinLesionDataModule(root=str(synthetic_root), balance="magic")
