"""``make bench-serve``: 1 000 mixed requests from 8 concurrent clients to the running service.

Starts ``python -m skinlesion.serve`` on a free port with the exported model, warms it up, sends
the load (valid photos and hostile uploads, ``skinlesion.serve.loadtest``), and reports the status
counts (no 5xx allowed), latency p50/p99, throughput and the server's resident-memory growth. The
server is stopped afterwards. Writes ``<output_root>/bench/serve.json``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import DataError
from skinlesion.core.paths import default_data_root
from skinlesion.core.task import command
from skinlesion.inference.inputs import expand_inputs
from skinlesion.serve.loadtest import run_load
from skinlesion.serve.process import running_server

log = logging.getLogger(__name__)


def valid_photos(folder: Path, n: int) -> list[tuple[str, bytes]]:
    files = [f for f in expand_inputs([str(folder)]) if f.suffix.lower() in (".png", ".jpg", ".jpeg")]
    if not files:
        raise DataError(f"no photos under {folder} for the valid part of the load (set images=...)")
    step = max(1, len(files) // n)
    return [(f.name, f.read_bytes()) for f in files[::step][:n]]


def bench_serve(cfg: DictConfig) -> dict:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    model = Path(cfg.model_path)
    photos = valid_photos(Path(cfg.images) if cfg.images else default_data_root(), int(cfg.distinct_images))
    max_bytes = int(cfg.max_upload_mb * 1024 * 1024)
    overrides = [
        f"max_upload_mb={cfg.max_upload_mb}",
        f"threads={cfg.threads}",
        f"concurrency={cfg.concurrency}",
    ]
    load = os.getloadavg()
    with running_server(model, overrides) as server:
        summary = run_load(
            server, photos, int(cfg.requests), max_bytes, int(cfg.clients), int(cfg.warmup), cfg.valid_share
        )
    summary |= {
        "load_average_before": load,
        "load_average_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "model": str(model),
    }
    write_json(Path(cfg.output), summary)
    print(
        f"{summary['requests']} requests from {summary['clients']} clients in {summary['seconds']:.1f} s: "
        f"{summary['throughput_rps']:.1f} req/s; status {summary['status_counts']}; "
        f"5xx {summary['server_errors_5xx']}, unexpected {summary['unexpected']}\n"
        f"latency p50 {summary['p50_ms']:.0f} ms, p99 {summary['p99_ms']:.0f} ms "
        f"(valid photos: p50 {summary['valid_p50_ms']:.0f} ms, p99 {summary['valid_p99_ms']:.0f} ms)\n"
        f"server RSS {summary['rss_before_mb']:.0f} -> {summary['rss_after_mb']:.0f} MB "
        f"(growth {summary['rss_growth_mb']:+.1f} MB); load average before {load[0]:.2f} on "
        f"{summary['cpu_count']} CPUs"
    )
    return summary


main = command(bench_serve, "bench_serve")


if __name__ == "__main__":
    main()
