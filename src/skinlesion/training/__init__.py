"""Training: everything ``python -m skinlesion.train`` and the commands built on it (cv, sweeps) run."""
