"""``python -m skinlesion.train``: fit, calibrate and test the configured experiment.

Everything is instantiated from ``_target_`` in ``conf/``; the return value (best val macro-F1) is
the objective that ``--multirun hparams_search=...`` maximises. The work is
:func:`skinlesion.training.fit.train`, which ``cv`` and the sweeps call too.
"""

from skinlesion.core.task import command
from skinlesion.training.fit import train

main = command(train, "train")

if __name__ == "__main__":
    main()
