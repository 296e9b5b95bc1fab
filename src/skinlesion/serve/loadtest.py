"""A mixed load for the running service: valid photos and hostile uploads from concurrent clients.

Used by ``make bench-serve`` (1 000 requests) and by a short test. Each request knows the status it
should get, so the summary counts 5xx answers and any other surprise, and gives the latency
percentiles and the throughput.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
from PIL import Image

from skinlesion.serve.process import Server


@dataclass(frozen=True)
class Upload:
    kind: str
    name: str
    data: bytes
    expected: int


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


@functools.cache
def bomb_png(side: int = 12_000) -> bytes:
    """A real decompression bomb: a side x side greyscale PNG of zeros, about 150 kB compressed."""
    packer = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    body = b"".join(packer.compress(row * 500) for _ in range(side // 500)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def corrupt_png(png: bytes) -> bytes:
    """The same PNG with pixel data flipped inside its first IDAT chunk (the CRC no longer matches)."""
    data = bytearray(png)
    at = data.index(b"IDAT") + 8
    data[at : at + 16] = bytes(b ^ 0x5A for b in data[at : at + 16])
    return bytes(data)


def encoded(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def hostile_uploads(max_bytes: int, seed: int = 0) -> list[Upload]:
    """One upload of each bad kind, with the status the service must answer."""
    rng = np.random.default_rng(seed)
    photo = encoded(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    return [
        Upload("random_bytes", "noise.bin", rng.bytes(4096), 415),
        Upload("text", "notes.txt", b"this is not an image\n" * 50, 415),
        Upload("empty", "empty.png", b"", 400),
        Upload("truncated_jpeg", "cut.jpg", photo[: len(photo) // 2], 400),
        Upload("corrupt_png", "garbage.png", corrupt_png(encoded(Image.open(io.BytesIO(photo)))), 400),
        Upload("bomb", "bomb.png", bomb_png(), 400),
        Upload("too_large", "huge.jpg", photo[:100] + b"\0" * (max_bytes + 1024), 413),
    ]


def workload(
    valid: Sequence[tuple[str, bytes]], n: int, max_bytes: int, valid_share: float = 0.7, seed: int = 0
) -> list[Upload]:
    """``n`` uploads in random order: ``valid_share`` valid photos, the rest hostile, every kind present."""
    rnd = random.Random(seed)
    bad = hostile_uploads(max_bytes, seed)
    n_valid = round(n * valid_share)
    uploads = [Upload("valid", name, data, 200) for name, data in (rnd.choice(valid) for _ in range(n_valid))]
    uploads += [bad[i % len(bad)] for i in range(n - n_valid)]
    rnd.shuffle(uploads)
    return uploads


@dataclass(frozen=True)
class Result:
    kind: str
    expected: int
    status: int  # 0: no HTTP answer at all (connection error)
    seconds: float


def send_all(url: str, uploads: Sequence[Upload], clients: int = 8, timeout: float = 120.0) -> list[Result]:
    """Send every upload from ``clients`` concurrent clients (one connection each), in order."""
    per_client = [uploads[i::clients] for i in range(clients)]

    def client(batch: Sequence[Upload]) -> list[Result]:
        out = []
        with httpx.Client(base_url=url, timeout=timeout) as http:
            for up in batch:
                start = time.perf_counter()
                try:
                    r = http.post(
                        "/api/predict",
                        params={"explain": "false"},
                        files={"file": (up.name, up.data, "application/octet-stream")},
                    )
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0
                out.append(Result(up.kind, up.expected, status, time.perf_counter() - start))
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [r for rs in pool.map(client, per_client) for r in rs]


def summarise(results: Sequence[Result], seconds: float) -> dict:
    """Status counts, 5xx and unexpected answers, latency p50/p99 (all and valid-only), throughput."""

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q) * 1000) if values else float("nan")

    all_s = [r.seconds for r in results]
    valid_s = [r.seconds for r in results if r.kind == "valid"]
    return {
        "requests": len(results),
        "status_counts": dict(sorted(Counter(r.status for r in results).items())),
        "server_errors_5xx": sum(500 <= r.status < 600 for r in results),
        "connection_errors": sum(r.status == 0 for r in results),
        "unexpected": sum(r.status != r.expected for r in results),
        "unexpected_by_kind": dict(Counter(r.kind for r in results if r.status != r.expected)),
        "p50_ms": pct(all_s, 50),
        "p99_ms": pct(all_s, 99),
        "valid_p50_ms": pct(valid_s, 50),
        "valid_p99_ms": pct(valid_s, 99),
        "seconds": seconds,
        "throughput_rps": len(results) / seconds if seconds > 0 else float("nan"),
    }


def run_load(
    server: Server,
    valid: Sequence[tuple[str, bytes]],
    requests: int,
    max_bytes: int,
    clients: int,
    warmup: int,
    valid_share: float = 0.7,
) -> dict:
    """Warm the server up, then send the mixed load; the summary adds its resident-memory growth."""
    send_all(server.url, workload(valid, warmup, max_bytes, valid_share, seed=1), clients)
    before = server.rss()
    start = time.perf_counter()
    results = send_all(server.url, workload(valid, requests, max_bytes, valid_share), clients)
    summary = summarise(results, time.perf_counter() - start)
    after = server.rss()
    return summary | {
        "clients": clients,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "rss_growth_mb": (after - before) / 2**20,
    }
