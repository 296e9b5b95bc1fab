"""Randomness from (seed, epoch) only; a CSV history that survives a resume; resume refuses new data."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch

from skinlesion.core.checkpoints import save_checkpoint
from skinlesion.core.determinism import EpochSampler, derive_seed
from skinlesion.core.errors import CheckpointError
from skinlesion.core.resume import ResumableCSVLogger, inspect_checkpoint
from skinlesion.data.datamodule import SkinLesionDataModule
from tests.helpers import CLASSES


def drawn(sampler: EpochSampler, epoch: int | None = None) -> list[tuple[int, int]]:
    if epoch is not None:
        sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_order_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    drawn(b, 5)  # b has lived through other epochs: irrelevant
    assert drawn(a, 2) == drawn(b, 2)
    assert sorted(i for i, _ in drawn(a, 2)) == list(range(50))  # a permutation
    assert drawn(a, 2) != drawn(a, 3) and drawn(a, 2) != drawn(EpochSampler(50, seed=4), 2)
    fresh = EpochSampler(50, seed=3)
    assert drawn(fresh) == drawn(a, 0) and drawn(fresh) == drawn(a, 1)  # no set_epoch: next epoch


def test_weighted_sampler_draws_with_replacement_by_weight():
    weights = [1.0] * 10 + [0.0] * 10
    draws = [i for e in range(5) for i, _ in drawn(EpochSampler(20, seed=0, weights=weights), e)]
    assert len(draws) == 100 and set(draws) <= set(range(10)) and len(set(draws)) > 5


def test_derived_seeds_differ_by_key_and_fit_in_63_bits():
    seeds = {derive_seed(42, epoch, rank) for epoch in range(100) for rank in range(4)}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)


def datamodule(root, tmp_path, **kw) -> SkinLesionDataModule:
    dm = SkinLesionDataModule(
        root=str(root), prepared_dir=str(tmp_path / "p"), class_names=CLASSES, image_size=32, **kw
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_sample_seed_fixes_the_augmentation_without_touching_the_global_generator(tmp_path, synthetic_root):
    ds = datamodule(synthetic_root, tmp_path).datasets["train"]
    state = torch.get_rng_state()
    first, again, other = ds[0, 11][0], ds[0, 11][0], ds[0, 12][0]
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.get_rng_state(), state)


def epoch_batches(dm: SkinLesionDataModule, epoch: int) -> list[torch.Tensor]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    torch.manual_seed(epoch + 100)  # whatever the global generator holds, it must not matter
    return [x for x, _ in loader]


def test_training_batches_do_not_depend_on_workers_or_history(tmp_path, synthetic_root):
    """The same epoch gives the same augmented batches in the main process and in 2 worker processes."""
    in_process = datamodule(synthetic_root, tmp_path, batch_size=8)
    epoch_batches(in_process, 0)  # a history of earlier epochs changes nothing
    expected = epoch_batches(in_process, 3)
    workers = epoch_batches(datamodule(synthetic_root, tmp_path, batch_size=8, num_workers=2), 3)
    assert len(expected) == len(workers) and all(map(torch.equal, expected, workers))
    assert not torch.equal(expected[0], epoch_batches(in_process, 4)[0])


def test_a_resumed_loader_starts_at_the_epoch_lightning_will_set(tmp_path, synthetic_root):
    """On resume Lightning builds (and workers prefetch from) the loader before it calls set_epoch."""
    dm = datamodule(synthetic_root, tmp_path)
    progress = SimpleNamespace(current=SimpleNamespace(processed=5))  # trainer.current_epoch is still 4
    dm.trainer = SimpleNamespace(fit_loop=SimpleNamespace(epoch_progress=progress))
    assert dm.train_dataloader().sampler.epoch == 5


def write_log(path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["epoch", "step", "val/loss"])
        w.writeheader()
        w.writerows(rows)


def read_log(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_history_survives_a_resume_and_drops_the_interrupted_epoch(tmp_path):
    log_file = tmp_path / "csv/metrics.csv"
    write_log(log_file, [{"epoch": e, "step": 5 * e + 4, "val/loss": 1.0 / (e + 1)} for e in range(3)])
    logger = ResumableCSVLogger(tmp_path, name="csv", version="")
    logger.resume_from(10)  # the checkpoint was taken after epoch 1 (steps 0..9)
    logger.log_metrics({"val/loss": 0.25, "train/loss": 0.5}, step=14)  # a new column, too
    logger.save()
    rows = read_log(log_file)
    assert [r["step"] for r in rows] == ["4", "9", "14"]
    assert rows[0]["val/loss"] == "1.0" and rows[2]["train/loss"] == "0.5"


def test_csv_history_starts_afresh_when_not_resuming(tmp_path):
    log_file = tmp_path / "csv/metrics.csv"
    write_log(log_file, [{"epoch": 0, "step": 4, "val/loss": 1.0}])
    logger = ResumableCSVLogger(tmp_path, name="csv", version="")
    logger.log_metrics({"val/loss": 0.5}, step=4)
    logger.save()
    assert [r["val/loss"] for r in read_log(log_file)] == ["0.5"]


def test_resume_refuses_a_checkpoint_trained_on_other_data(tmp_path):
    ckpt = {
        "state_dict": {},
        "loops": {"fit_loop": {"epoch_loop.state_dict": {"_batches_that_stepped": 7}}},
        "epoch": 1,
        "hyper_parameters": {"data_manifest_sha256": "a" * 64},
    }
    save_checkpoint(ckpt, tmp_path / "last.ckpt")
    point = inspect_checkpoint(str(tmp_path / "last.ckpt"), "a" * 64)
    assert (point.epoch, point.step) == (1, 7)
    with pytest.raises(CheckpointError, match="resuming would mix two datasets"):
        inspect_checkpoint(str(tmp_path / "last.ckpt"), "b" * 64)
    save_checkpoint({"state_dict": {}}, tmp_path / "weights.ckpt")
    with pytest.raises(CheckpointError, match="not a full training checkpoint"):
        inspect_checkpoint(str(tmp_path / "weights.ckpt"), None)
