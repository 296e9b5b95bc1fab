"""``python -m skinlesion.predict ckpt_path=... inputs=[a.png,some_dir/] [explain=true]``.

Prints one JSON line per file: the file, the prediction set (the classes it could be, with the
stated coverage ``set_level``), the prediction (the class only when the set holds one, else null),
the top class, the probability of each class, whether it abstained and why. Works from a Lightning checkpoint
(PyTorch, eval transforms) and from an exported ``model.onnx`` (ONNX Runtime, no torch imported).
``explain=true`` (or ``--explain``) also writes each image's Grad-CAM overlay to ``explain_dir`` and
puts its path in the line. A file that cannot be decoded gets a line with its error, not a crash.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from skinlesion.core.errors import ConfigError, ImageDecodeError
from skinlesion.core.task import command
from skinlesion.inference.cam import png_bytes
from skinlesion.inference.inputs import expand_inputs
from skinlesion.inference.runtime import Backend, OnnxBackend, Predictor

log = logging.getLogger(__name__)


def open_backend(path: Path, threads: int) -> Backend:
    """ONNX Runtime for ``.onnx`` (torch never imported), PyTorch for a Lightning checkpoint."""
    if path.suffix == ".onnx":
        return OnnxBackend(path, threads)
    from skinlesion.inference.torch_backend import TorchBackend

    return TorchBackend.load(path)


def predict(cfg: DictConfig) -> list[dict]:
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path=... is required: a Lightning .ckpt or an exported model.onnx")
    if not cfg.inputs:
        raise ConfigError("inputs=[...] is required: image files and/or folders")
    predictor = Predictor(open_backend(Path(cfg.ckpt_path), int(cfg.threads)))
    explain_dir = Path(cfg.explain_dir) if cfg.explain else None
    if explain_dir is not None:
        explain_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for k, path in enumerate(expand_inputs(list(cfg.inputs))):
        try:
            pred = predictor.predict_file(path, explain=bool(cfg.explain))
            line = pred.to_json()
            if explain_dir is not None and pred.heatmap is not None:
                target = explain_dir / f"{k:05d}_{path.stem}.cam.png"
                target.write_bytes(png_bytes(pred.heatmap))
                line["heatmap"] = str(target)
        except ImageDecodeError as e:
            line = {"file": str(path), "error": str(e)}
        print(json.dumps(line), flush=True)
        results.append(line)
    return results


main = command(predict, "predict")


if __name__ == "__main__":
    sys.argv = ["explain=true" if a == "--explain" else a for a in sys.argv]
    main()
