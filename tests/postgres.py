"""A throwaway PostgreSQL server for the sweep tests: Debian's postgresql (``.ci/run`` installs
it), a cluster made with ``initdb`` in a temporary folder, reached only through a Unix socket there.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user that the
Debian package creates. Without the binaries or the driver the tests that need it are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from glob import glob
from pathlib import Path

import pytest


def postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, or Debian's versioned one."""
    found = shutil.which("initdb") or max(glob("/usr/lib/postgresql/*/bin/initdb"), default=None)
    return Path(found).resolve().parent if found else None


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A SQLAlchemy URL of a fresh, empty server, stopped and removed on exit; skips the test
    when PostgreSQL or its driver is missing."""
    pytest.importorskip("psycopg2", reason="no psycopg2: pip install -c constraints.txt -e '.[dev]'")
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql): its study test is skipped")
    as_owner: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses root: run it as the user Debian's package made
        if not shutil.which("runuser") or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a postgres user to start PostgreSQL as")
        as_owner = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="skinlesion-pg-"))
    if as_owner:
        shutil.chown(root, "postgres")

    def run(*args: str) -> None:
        subprocess.run([*as_owner, *args], check=True, capture_output=True, timeout=120)

    data, started = root / "data", False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "sweeper", "--no-sync")
        options = f"-k {root} -c listen_addresses='' -c fsync=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start")
        started = True
        yield f"postgresql+psycopg2://sweeper@/postgres?host={root}"
    finally:
        if started:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
