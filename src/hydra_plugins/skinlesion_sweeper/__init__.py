"""Hydra discovers plugins in packages under ``hydra_plugins`` (a namespace package)."""
