"""Run the web service as a subprocess on a free port: for the tests and ``make bench-serve``.

The server is always stopped when the ``with`` block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for process {pid}")


@dataclass(frozen=True)
class Server:
    url: str
    pid: int
    log: Path  # the server's stdout and stderr, removed when it stops

    def rss(self) -> int:
        return rss_bytes(self.pid)


@contextlib.contextmanager
def running_server(
    model_path: str | os.PathLike,
    overrides: Sequence[str] = (),
    cwd: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
) -> Iterator[Server]:
    """Start ``python -m skinlesion.serve`` on 127.0.0.1, wait for /health, stop it afterwards."""
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="skinlesion-serve-log-"))
    log = log_dir / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "skinlesion.serve",
        f"model_path={Path(model_path).resolve()}",
        f"port={port}",
        "log_level=warning",
        "access_log=false",
        *overrides,
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not answer /health in {timeout:.0f} s")
            time.sleep(0.2)
        yield Server(url, proc.pid, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(log_dir, ignore_errors=True)
