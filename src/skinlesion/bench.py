"""``make bench``: per-image latency through ONNX Runtime and PyTorch eager, in the same run.

Both run the same inference graph (probabilities, abstention score, class activation maps) on the
same preprocessed images, one image per call, with the same thread count. The two alternate in short
blocks (ABBA...), the first call after each switch not counted, so that load from other processes
on a shared CPU falls on both alike and neither runtime's idle threads disturb the other. Reports the median
and p90 of the model call and of the whole request path (decode, preprocess, model, decision),
their ratio, and the load average before and after. Without a checkpoint it times the default
architecture with its ImageNet weights (latency does not depend on the weights).

Idle threads sleep in both runtimes: ONNX Runtime without spinning (``inference/runtime.py``) and
PyTorch's OpenMP with ``OMP_WAIT_POLICY=PASSIVE``, which ``make bench`` sets (it must be set before
torch is imported). With the default active waiting, PyTorch on a CPU shared with other busy
processes stalls for up to a second per call (measured here), which would flatter ONNX Runtime.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from skinlesion.core.artifacts import write_json
from skinlesion.core.paths import default_data_root
from skinlesion.core.task import command
from skinlesion.data.images import decode_image
from skinlesion.inference.inputs import expand_inputs
from skinlesion.inference.loading import load_classifier
from skinlesion.inference.onnx_export import export_onnx
from skinlesion.inference.runtime import OnnxBackend, Predictor
from skinlesion.inference.torch_backend import TorchBackend
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.reports.nonskin import png, synthetic_images

log = logging.getLogger(__name__)
CLASSES = ["Chickenpox", "Measles", "Monkeypox", "Normal"]
FLOOR_MS = 30.0


def bench_model(cfg: DictConfig) -> tuple[SkinLesionClassifier, str]:
    latest = Path(cfg.paths.output_root) / "latest/checkpoints/best.ckpt"
    ckpt = Path(cfg.ckpt_path) if cfg.ckpt_path else latest if latest.is_file() else None
    if ckpt is not None:
        return load_classifier(ckpt), str(ckpt)
    model = SkinLesionClassifier(CLASSES, backbone=cfg.model, image_size=int(cfg.image_size)).eval()
    return model, f"{cfg.model} (ImageNet weights, untrained head)"


def photos(n: int) -> list[bytes]:
    root = default_data_root()
    files = expand_inputs([str(root)]) if root.is_dir() else []
    if files:
        return [f.read_bytes() for f in files[:: max(1, len(files) // n)][:n]]
    return [png(im) for _, im in synthetic_images()[:n]]


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1000


def stats(ms: list[float]) -> dict:
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(np.mean(ms)),
    }


def bench(cfg: DictConfig) -> dict:
    threads = int(cfg.threads)
    torch.set_num_threads(threads)
    model, source = bench_model(cfg)
    eager = TorchBackend(model)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        onnx = OnnxBackend(export_onnx(model, Path(tmp) / "model.onnx"), threads, info=eager.info)
        backends = {"onnxruntime": onnx, "torch_eager": eager}
        predictors = {name: Predictor(b) for name, b in backends.items()}
        data = photos(int(cfg.images))
        inputs = [eager.prepare(decode_image(d)) for d in data]
        times: dict[str, dict[str, list[float]]] = {n: {"model": [], "end_to_end": []} for n in backends}
        block = int(cfg.block)
        for rnd in range(int(cfg.warmup_rounds) + int(cfg.rounds)):
            for name in list(backends) if rnd % 2 == 0 else list(reversed(backends)):
                for i in range(block + 1):  # the first call after switching runtimes is not counted
                    k = (rnd * block + i) % len(data)
                    model_ms = timed(backends[name].run, inputs[k])
                    e2e_ms = timed(predictors[name].predict_bytes, data[k])
                    if i > 0 and rnd >= int(cfg.warmup_rounds):
                        times[name]["model"].append(model_ms)
                        times[name]["end_to_end"].append(e2e_ms)
    result = {name: {part: stats(ms) for part, ms in parts.items()} for name, parts in times.items()}
    ratio = result["torch_eager"]["model"]["median_ms"] / result["onnxruntime"]["model"]["median_ms"]
    summary = {
        "model": source,
        "image_size": eager.info.image_size,
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (active)"),
        "calls_per_runtime": int(cfg.rounds) * int(cfg.block),
        "latency": result,
        "eager_over_onnx": ratio,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    write_json(Path(cfg.output), summary)
    for name, parts in result.items():
        m, e = parts["model"], parts["end_to_end"]
        print(
            f"{name:>12}: model {m['median_ms']:6.1f} ms (p90 {m['p90_ms']:6.1f})   "
            f"decode+preprocess+model+decision {e['median_ms']:6.1f} ms (p90 {e['p90_ms']:6.1f})"
        )
    onnx_ms = result["onnxruntime"]["model"]["median_ms"]
    print(
        f"eager / onnxruntime = {ratio:.2f}x; onnxruntime {onnx_ms:.1f} ms per image "
        f"({'<=' if onnx_ms <= FLOOR_MS else '>'} {FLOOR_MS:.0f} ms floor) at {eager.info.image_size} px, "
        f"{threads} threads, OMP_WAIT_POLICY={summary['omp_wait_policy']}, {source}; "
        f"load average {load_before[0]:.2f} before, "
        f"{summary['load_average_after'][0]:.2f} after, {os.cpu_count()} CPUs"
    )
    return summary


main = command(bench, "bench")


if __name__ == "__main__":
    main()
