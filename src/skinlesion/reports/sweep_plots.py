"""The sweep report's plots: Optuna's own matplotlib ones, written headless to PNG files."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
from optuna.importance import BaseImportanceEvaluator
from optuna.visualization import matplotlib as vis

log = logging.getLogger(__name__)


def plots(
    study: optuna.Study, evaluator: BaseImportanceEvaluator
) -> dict[str, tuple[str, Callable[[], object]]]:
    """File name -> (title, how to draw it); per-epoch values only from sweeps that report them."""
    found = {
        "optimization_history.png": ("optimization history", lambda: vis.plot_optimization_history(study)),
        "param_importances.png": (
            "parameter importances",
            lambda: vis.plot_param_importances(study, evaluator=evaluator),
        ),
        "score_by_optimizer_regularizer.png": (
            "score by optimizer and by regularizer",
            lambda: vis.plot_slice(study, params=["optimizer", "regularizer"]),
        ),
        "parallel_coordinates.png": ("parallel coordinates", lambda: vis.plot_parallel_coordinate(study)),
    }
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        found["intermediate_values.png"] = (
            "val macro-F1 per epoch",
            lambda: vis.plot_intermediate_values(study),
        )
    return found


def write_plots(study: optuna.Study, out: Path, evaluator: BaseImportanceEvaluator) -> dict[str, str]:
    """Draw every plot the study has data for; file name -> title of those written."""
    written = {}
    for name, (title, draw) in plots(study, evaluator).items():
        # Optuna's plots switch pyplot to ggplot for good; the context puts the rc back after each.
        with warnings.catch_warnings(), plt.style.context("ggplot"):
            warnings.simplefilter("ignore")  # experimental, and "too few trials" notes
            try:
                axes = np.ravel(draw())
            except (ValueError, RuntimeError) as e:  # e.g. a parameter no trial has
                log.info("no %s plot: %s", title, e)
                continue
            fig = axes[0].figure
            if any(ax.has_data() for ax in axes):
                fig.savefig(out / name, dpi=120, bbox_inches="tight")
                written[name] = title
            plt.close(fig)
    return written
