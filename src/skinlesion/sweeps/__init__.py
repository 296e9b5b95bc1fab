"""Hyper-parameter sweeps: Optuna studies with a study-wide budget that resume, conditional spaces.

``study``, ``space`` and ``loop`` import neither torch nor Lightning, so the Hydra sweeper plugin that
uses them stays cheap to discover.
"""
