"""Deploy tests (export, predict, serve, page, load) share a tiny model, trained and exported once.

``deployed`` trains ``simple_cnn`` on synthetic colour fields (runs everywhere); ``real_deployed``
trains it on the real-data slice (skipped without the data), for the browser test. Both go through
the real ``train`` and ``export`` tasks, so they carry fitted abstention thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import compose_task, make_class_folders

TINY = [
    "model=simple_cnn",
    "data.image_size=64",
    "data.batch_size=16",
    "trainer.max_epochs=3",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


@dataclass(frozen=True)
class Deployed:
    data: Path  # the class-per-folder data root it was trained on
    ckpt: Path  # best.ckpt with temperature and abstention buffers
    onnx: Path  # model.onnx, with model.json beside it


def train_and_export(base: Path, data: Path) -> Deployed:
    from skinlesion.export import export
    from skinlesion.training.fit import train

    run = base / "run"
    train(compose_task("train", [f"data.root={data}", f"paths.output_root={base}", *TINY], run))
    ckpt = run / "checkpoints" / "best.ckpt"
    export(compose_task("export", [f"ckpt_path={ckpt}", f"paths.output_root={base}"]))
    return Deployed(data, ckpt, run / "export" / "model.onnx")


@pytest.fixture(scope="session")
def deployed(tmp_path_factory) -> Deployed:
    base = tmp_path_factory.mktemp("deployed")
    return train_and_export(base, make_class_folders(base / "data", per_class=16, size=72))


@pytest.fixture(scope="session")
def real_deployed(tmp_path_factory, real_slice) -> Deployed:
    return train_and_export(tmp_path_factory.mktemp("real_deployed"), real_slice)
