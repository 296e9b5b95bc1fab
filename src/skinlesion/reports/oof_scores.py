"""A cross-validation's out-of-fold scores as the calibration photos of a served model's sets.

A 10 % validation split holds 9–16 photos of the rarer classes, and a 90 % class-conditional
threshold is then the class's least-confident photo: one hard photo opens every set. A
cross-validation of the same recipe over the model's own train + val photos (``python -m
skinlesion.cv``) scores each of them with a fold model that never trained on it, so fitting the
thresholds on those scores (``calibrate set_scores=<cv dir>``) uses about eight times as many
photos (1 011 against 124 for the multi-source recipe, 677 against 85 for MSID's). The price is
the guarantee: the fold models are not the served one (they trained on fewer photos), so the
served model's coverage is measured on its test split, not promised.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skinlesion.core.errors import ConfigError, DataError
from skinlesion.data.datamodule import SkinLesionDataModule
from skinlesion.reports.heldout import read_predictions


def out_of_fold_scores(
    cv_dir: str | Path, class_names: Sequence[str], dm: SkinLesionDataModule
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, targets) of ``<cv_dir>/oof/predictions.csv``, refused unless they score this
    model's own train + val photos: a photo of its test split among them would leak into the test
    figures, a photo from elsewhere would calibrate it on other data."""
    predictions = Path(cv_dir) / "oof" / "predictions.csv"
    if not predictions.is_file():
        raise ConfigError(
            f"set_scores={cv_dir} is not a cross-validation run: no {predictions} "
            "(run python -m skinlesion.cv with this model's data and split)"
        )
    with open(predictions, newline="") as fh:  # the header first: read_predictions needs its classes
        header = next(csv.reader(fh), [])
    names = [k.removeprefix("p_") for k in header if k.startswith("p_")]
    if names != list(class_names):
        raise ConfigError(
            f"set_scores={cv_dir} scores the classes {names}, this model has {list(class_names)}"
        )
    scored = read_predictions(predictions)
    own = {p for split in ("train", "val") for p, _ in dm.datasets[split].items}
    test = {p for p, _ in dm.datasets["test"].items}
    for bad, where in (
        (set(scored.paths) & test, "in this model's test split"),
        (set(scored.paths) - own - test, "not among this model's train + val photos"),
    ):
        if bad:
            raise DataError(
                f"{len(bad)} of the {len(scored.paths)} photos of {predictions} are {where} "
                f"(e.g. {sorted(bad)[0]}): that cross-validation ran on other data or another split"
            )
    return scored.probs, scored.targets
