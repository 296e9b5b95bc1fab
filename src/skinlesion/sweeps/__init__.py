"""Hyper-parameter sweeps: resumable Optuna studies, conditional search spaces, GPU placement, pruning.

``study`` and ``space`` import neither torch nor Lightning, so the Hydra sweeper plugin that uses
them stays cheap to discover.
"""
