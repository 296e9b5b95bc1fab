"""Post-fit calibration on the validation split, stored inside the checkpoint.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T fitted to minimise the
validation NLL: accuracy is unchanged, probabilities become honest. T lives in the classifier's
``temperature`` buffer, so the checkpoint, the ONNX export, predict and serve all carry it. The
abstention thresholds and the prediction sets' thresholds (``models/abstention.py``,
``models/conformal.py``) are fitted in the same step, on calibrated probabilities, and stored the
same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from skinlesion.core.checkpoints import load_checkpoint, save_checkpoint
from skinlesion.models.abstention import AbstainParams, fit_abstention, fit_prediction_sets
from skinlesion.models.graph import collect_outputs
from skinlesion.models.other import (
    OtherRashLoaders,
    catch_summary,
    cross_fitted_catch,
    fit_other_gate,
    joined,
    operating_point,
)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 200) -> float:
    """The T > 0 that minimises NLL(softmax(logits / T), targets); 1.0 when there is nothing to fit."""
    if len(targets) == 0:
        return 1.0
    logits, targets = logits.detach().double(), targets.detach().long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def update_checkpoint_buffers(path: Path, buffers: dict[str, torch.Tensor]) -> None:
    """Write new buffer values into a saved checkpoint atomically (never a half-written file)."""
    ckpt = load_checkpoint(path)
    for name, value in buffers.items():
        ckpt["state_dict"][name] = value.detach().cpu()
    save_checkpoint(ckpt, path)


def load_weights(model: torch.nn.Module, ckpt_path: Path) -> None:
    """Load a checkpoint's ``state_dict`` (the averaged weights when EMA was on) into ``model``."""
    model.load_state_dict(load_checkpoint(ckpt_path)["state_dict"])


def calibrate_checkpoint(
    model,
    val_loader,
    ckpt_path: Path,
    train_loader=None,
    abstain: AbstainParams | None = None,
    other: OtherRashLoaders | None = None,
    set_scores: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Fit the temperature of ``model`` (holding the checkpoint's weights) on val; store it back.

    With a ``train_loader`` (eval transforms) and ``abstain`` enabled, also fit the abstention
    thresholds and the out-of-distribution statistics; with ``abstain.set_coverage``, the prediction
    sets' thresholds; with ``other`` (photos of other rashes) and ``abstain.other_reject``, the
    other-rash gate: all stored in the same checkpoint. ``set_scores`` (calibrated probabilities
    and targets of other held-out photos: ``reports.oof_scores``) fit the sets instead of val.
    """
    val = collect_outputs(model, val_loader)
    logits, targets = val["logits"], val["targets"]
    temperature = fit_temperature(logits, targets)
    model.temperature.fill_(temperature)
    buffers = {"temperature": model.temperature}
    summary = {
        "calibration/temperature": temperature,
        "calibration/val_nll_before": float(F.cross_entropy(logits, targets)),
        "calibration/val_nll_after": float(F.cross_entropy(logits / temperature, targets)),
    }
    gates = train_loader is not None and abstain is not None and abstain.enabled and len(targets)
    train = collect_outputs(model, train_loader) if gates else None
    if gates:
        fitted, abstain_summary = fit_abstention(model, val, train, abstain)
        buffers |= fitted
        summary |= abstain_summary
    if gates and abstain.other_reject and other is not None:
        inside = joined(train, *outputs_of(model, other.inside_train))
        outside = joined(*outputs_of(model, other.outside_train))
        val_inside = joined(val, *outputs_of(model, other.inside_val))
        groups = getattr(other.outside_train.dataset, "groups", None) or range(len(outside["targets"]))
        n_classes = len(model.class_names)
        catch = cross_fitted_catch(inside, outside, val_inside, list(map(str, groups)), n_classes)
        reject = operating_point(catch, abstain.other_reject, abstain.other_catch)
        fitted, other_summary = fit_other_gate(model, inside, outside, val_inside, reject)
        buffers |= fitted
        summary |= other_summary | catch_summary(catch, reject, abstain.other_catch)
    if abstain is not None and abstain.set_coverage and len(targets):
        val_probs = model.probabilities(logits)
        cal = (val_probs, targets) if set_scores is None else tuple(map(torch.as_tensor, set_scores))
        fitted, set_summary = fit_prediction_sets(model, *cal, abstain.set_coverage, val_probs)
        set_summary["sets/calibration"] = "val" if set_scores is None else "out of fold"
        buffers |= fitted
        summary |= set_summary
    update_checkpoint_buffers(ckpt_path, buffers)
    return summary


def outputs_of(model, loader) -> list[dict]:
    """``collect_outputs`` of a loader, as a list of none or one (an empty loader has no outputs)."""
    return [collect_outputs(model, loader)] if loader is not None and len(loader.dataset) else []
