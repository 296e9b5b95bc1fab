"""``python -m skinlesion.calibrate``: refit the post-fit step of an existing checkpoint.

``train`` fits the temperature and the abstention thresholds on the validation split right after
training; this runs the same step again on a saved checkpoint (new ``abstain.*`` settings, or a
checkpoint from before abstention existed) and merges the figures into the run's ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from skinlesion.core.artifacts import write_json
from skinlesion.core.task import command
from skinlesion.inference.loading import (
    checkpoint_datamodule,
    default_checkpoint,
    load_classifier,
    run_dir_of,
)
from skinlesion.models.abstention import AbstainParams
from skinlesion.models.temperature import calibrate_checkpoint

log = logging.getLogger(__name__)


def calibrate(cfg: DictConfig) -> dict:
    ckpt = default_checkpoint(cfg)
    model = load_classifier(ckpt)
    dm = checkpoint_datamodule(ckpt, model, cfg.data.root)
    params = AbstainParams(**OmegaConf.to_container(cfg.abstain, resolve=True))
    summary = calibrate_checkpoint(model, dm.eval_loader("val"), ckpt, dm.eval_loader("train"), params)
    metrics_path = run_dir_of(ckpt) / "metrics.json"
    if metrics_path.is_file():
        write_json(metrics_path, json.loads(metrics_path.read_text()) | summary)
    for key, value in summary.items():
        print(f"{key} = {value:.4g}" if isinstance(value, float) else f"{key} = {value}")
    log.info("updated %s", Path(ckpt))
    return summary


main = command(calibrate, "calibrate")


if __name__ == "__main__":
    main()
