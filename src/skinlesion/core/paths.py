"""Where the project's files live, resolved once.

Hydra does not change the working directory (``hydra.job.chdir=false``), so relative paths on the
command line are relative to where the user runs the command; defaults are anchored at the project
root (the folder that holds ``conf/``).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The checkout that holds ``conf/`` (editable install), or ``$SKINLESION_HOME``."""
    if env := os.environ.get("SKINLESION_HOME"):
        return Path(env).resolve()
    candidate = PACKAGE_DIR.parents[2]
    if (candidate / "conf").is_dir():
        return candidate
    return Path.cwd()


CONF_DIR = project_root() / "conf"


def default_data_root() -> Path:
    """``$SKINLESION_DATA``, else ``../shared/data/msid`` beside the checkout, else ``data/msid``."""
    if env := os.environ.get("SKINLESION_DATA"):
        return Path(env)
    shared = project_root().parent / "shared" / "data" / "msid"
    return shared if shared.is_dir() else project_root() / "data" / "msid"
