"""``python -m skinlesion.calibrate``: refit the post-fit step of an existing checkpoint.

``train`` fits the temperature, the abstention thresholds and the prediction sets on the
validation split right after training; this runs the same step again on a saved checkpoint (new
``abstain.*`` settings, or a checkpoint from before they existed) and merges the figures into the
run's ``metrics.json``. It also fits the other-rash gate (``models/other.py``) on the photos of
other rashes of the checkpoint's own data, or of ``other_data`` (``data=multisource`` by default)
for a checkpoint trained without them. With ``set_scores=<cv dir>``, the prediction sets are fitted on
that cross-validation's out-of-fold scores of the model's own train + val photos
(``reports.oof_scores``) instead of on val.
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
from skinlesion.inference.other_rash import other_rash_loaders
from skinlesion.models.abstention import AbstainParams
from skinlesion.models.temperature import calibrate_checkpoint
from skinlesion.reports.oof_scores import out_of_fold_scores

log = logging.getLogger(__name__)


def calibrate(cfg: DictConfig) -> dict:
    ckpt = default_checkpoint(cfg)
    model = load_classifier(ckpt)
    dm = checkpoint_datamodule(ckpt, model, cfg.data.root)
    params = AbstainParams(**OmegaConf.to_container(cfg.abstain, resolve=True))
    other = other_rash_loaders(cfg.get("other_data"), dm, model) if params.other_reject else None
    if params.other_reject and other is None:
        log.warning("no photos of other rashes: the other-rash gate is not fitted")
    oof = out_of_fold_scores(cfg.set_scores, model.class_names, dm) if cfg.get("set_scores") else None
    summary = calibrate_checkpoint(
        model, dm.eval_loader("val"), ckpt, dm.eval_loader("train"), params, other, set_scores=oof
    )
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
