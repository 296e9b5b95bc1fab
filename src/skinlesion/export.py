"""``python -m skinlesion.export``: the calibrated classifier with its abstention, as ONNX + JSON.

Writes ``model.onnx`` (the ``InferenceGraph``: probabilities after temperature scaling, the
out-of-distribution score, the class activation maps and the other-rash score; dynamic batch) and
``model.json`` (class names, preprocessing, abstention and prediction-set thresholds, metrics,
versions, provenance, parity). It runs the exported graph in ONNX Runtime and PyTorch on the same
real images and refuses to write the files when any probability differs by more than
``parity.tolerance``; it warns when a prediction set differs (a probability within that tolerance
of a set threshold).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig

from skinlesion.core.artifacts import git_commit, package_versions, run_name, write_json
from skinlesion.core.errors import CheckpointError, DataError
from skinlesion.core.task import command
from skinlesion.inference.inputs import expand_inputs
from skinlesion.inference.loading import (
    checkpoint_datamodule,
    default_checkpoint,
    load_classifier,
    run_dir_of,
    split_files,
)
from skinlesion.inference.onnx_export import check_parity, export_onnx, sha256_file
from skinlesion.inference.runtime import INPUT, MODEL_FORMAT, OUTPUTS
from skinlesion.inference.torch_backend import TorchBackend
from skinlesion.models.classifier import SkinLesionClassifier

log = logging.getLogger(__name__)
EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


def parity_files(cfg: DictConfig, ckpt: Path, model: SkinLesionClassifier) -> list[Path]:
    if cfg.parity.folder:
        files = expand_inputs([cfg.parity.folder])
    else:
        files = split_files(checkpoint_datamodule(ckpt, model, cfg.data.root), "test")
    if not files:
        raise DataError("the parity check needs real images: none found (set parity.folder=...)")
    return files[: int(cfg.parity.images)]


def model_description(model: SkinLesionClassifier, ckpt: Path, parity: dict, opset: int) -> dict:
    """Everything ``model.json`` says: what the model needs, how it decides, where it came from."""
    reference = TorchBackend(model)
    size = int(model.preprocessing["image_size"])
    run_metrics_path = run_dir_of(ckpt) / "metrics.json"
    run_metrics = json.loads(run_metrics_path.read_text()) if run_metrics_path.is_file() else {}
    metric_prefixes = ("test/", "val/", "calibration/", "abstain/", "sets/", "other/")
    out_of_fold = run_metrics.get("sets/calibration") == "out of fold"
    sets_fitted_on = "out-of-fold cross-validation scores" if out_of_fold else "val"
    versions = package_versions()
    for name in EXPORT_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "format": MODEL_FORMAT,
        "class_names": list(model.class_names),
        "preprocessing": model.preprocessing,
        "temperature": float(model.temperature),
        "thresholds": reference.info.thresholds.to_json(),
        "abstention": {
            "ood_stages": len(model.ood_taps),
            "ood_scale": model.ood_scale.tolist(),
            "method": "multi-layer Mahalanobis (Lee et al. 2018) + calibrated confidence, fitted on val",
            "other_rash": "Fisher discriminant of other-rash vs in-class photos on the pooled OOD "
            "stages (models/other.py); threshold: a quantile of the in-class val scores",
            "other_rash_fitted": model.other_weight.numel() > 0,
        },
        "prediction_sets": {
            "method": "class-conditional (Mondrian) split conformal, score 1 - p_class, fitted on "
            f"{sets_fitted_on}: class c is in the set when its calibrated probability >= "
            "thresholds.set_thresholds[c]; "
            "never empty (the top class alone when none reaches its threshold)",
            "level": reference.info.thresholds.set_level,
        },
        "input": {"name": INPUT, "shape": ["batch", 3, size, size], "dtype": "float32"},
        "outputs": list(OUTPUTS),
        "opset": opset,
        "metrics": {k: v for k, v in run_metrics.items() if k.startswith(metric_prefixes)},
        "parity": parity,
        "versions": versions,
        "source": {
            "run": run_name(str(ckpt.resolve())),  # a name, never this machine's path
            "checkpoint": ckpt.resolve().relative_to(run_dir_of(ckpt).resolve()).as_posix(),
            "checkpoint_sha256": sha256_file(ckpt),
            "backbone": model.hparams.backbone,
            "data_manifest_sha256": model.hparams.get("data_manifest_sha256"),
            "git_commit": git_commit(),
        },
    }


def export(cfg: DictConfig) -> dict:
    ckpt = default_checkpoint(cfg)
    model = load_classifier(ckpt)
    out_dir = Path(cfg.output_dir) if cfg.output_dir else run_dir_of(ckpt) / "export"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    except OSError as e:
        raise CheckpointError(f"cannot write the export to {out_dir}: {e.strerror or e}") from e
    try:
        onnx_path = export_onnx(model, work / "model.onnx", int(cfg.opset))
        parity = check_parity(model, onnx_path, parity_files(cfg, ckpt, model))
        parity["tolerance"] = float(cfg.parity.tolerance)
        if parity["same_prediction_set"] < parity["images"]:
            log.warning(
                "ONNX and PyTorch prediction sets differ on %d of %d parity images (a probability "
                "within %.1e of a set threshold)",
                parity["images"] - parity["same_prediction_set"],
                parity["images"],
                parity["max_abs_prob_diff"],
            )
        if parity["max_abs_prob_diff"] > cfg.parity.tolerance:
            raise CheckpointError(
                f"ONNX parity failed: probabilities differ by up to {parity['max_abs_prob_diff']:.2e} "
                f"from PyTorch on {parity['images']} images (tolerance {cfg.parity.tolerance:g}); "
                "nothing written"
            )
        write_json(work / "model.json", model_description(model, ckpt, parity, int(cfg.opset)))
        os.replace(onnx_path, out_dir / "model.onnx")
        os.replace(work / "model.json", out_dir / "model.json")
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    log.info("exported %s to %s", ckpt, out_dir)
    print(
        f"{out_dir / 'model.onnx'}  parity: max |p_onnx - p_torch| = {parity['max_abs_prob_diff']:.2e} "
        f"on {parity['images']} images (end to end {parity['end_to_end_prob_diff']:.2e}); "
        f"same prediction set on {parity['same_prediction_set']}/{parity['images']}"
    )
    return parity


main = command(export, "export")


if __name__ == "__main__":
    main()
