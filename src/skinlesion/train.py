"""``python -m skinlesion.train``: fit, calibrate and test the configured experiment.

Everything is instantiated from ``_target_`` in ``conf/``; the return value (best val macro-F1) is
the objective that ``--multirun hparams_search=...`` maximises. The work is
:func:`skinlesion.training.fit.train`, which ``cv`` and the sweeps call too; only a run of this
command (not a multirun trial) moves ``outputs/latest``.
"""

from omegaconf import DictConfig

from skinlesion.core.task import command
from skinlesion.training.fit import train


def train_main_path(cfg: DictConfig) -> float:
    """Fit, calibrate and test the configured experiment; point ``outputs/latest`` at the run."""
    return train(cfg, main_path=True)


main = command(train_main_path, "train")

if __name__ == "__main__":
    main()
