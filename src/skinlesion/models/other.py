"""The other-rash gate: "not one of the four conditions this model knows".

A classifier of four classes answers every rash as one of them: a cowpox or hand-foot-and-mouth
photo comes back as a confident Monkeypox or Chickenpox, and the out-of-distribution score
(``models.ood``), fitted to catch photos that are no skin lesion at all, lets most of them through.
This gate learns what the four classes are not from photos of other rashes (the ``outside`` folders
of the training sources: Cowpox and HFMD in MSLD v2), a light form of outlier exposure (Hendrycks
et al., 2019) that needs no retraining of the network:

- features: the pooled tapped stages of ``models.ood`` (blocks 4-6 of EfficientNet-Lite0, 624
  numbers), which describe what a photo looks like more generally than the last feature map,
  bent toward the four classes, and are fewer for the photos there are (about 1 000 to fit on);
- score: Fisher's linear discriminant between the in-class training photos (every source's, so
  that it learns the disease and not the collection) and the other-rash photos of the training
  patients, under the within-class covariance of all their classes (Ledoit-Wolf shrinkage):
  ``w = S^-1 (mean_other - mean_inside)``; the score is ``(x - mean_inside) . w + b``, scaled so
  that the median in-class validation photo scores 0 and their spread (IQR) is 1;
- threshold: the ``1 - b`` quantile of the in-class validation scores, so the gate turns away a
  share b of in-class photos. The budget b is the smallest of ``OTHER_BUDGETS`` (at most
  ``other_reject``) at which the gate, cross-fitted over the training patients, catches
  ``other_catch`` of their other rashes (``cross_fitted_catch``, ``operating_point``); the share
  it turns away is measured on patients it never saw.

Stored as classifier buffers (``other_centre``, ``other_weight``, ``other_bias``,
``other_threshold``), computed in
the exported graph, applied by ``inference.decision``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from sklearn.covariance import LedoitWolf
from sklearn.model_selection import GroupKFold

from skinlesion.models.classifier import SkinLesionClassifier


@dataclass(frozen=True)
class OtherRashLoaders:
    """Eval-transform loaders of the photos the gate is fitted on (``inference.other_rash``): other
    rashes of the training patients, and in-class photos of other sources (train, val)."""

    outside_train: object
    inside_train: object = None
    inside_val: object = None


def joined(*outputs: dict) -> dict:
    """Several ``collect_outputs`` results as one."""
    return {
        "logits": torch.cat([o["logits"] for o in outputs]),
        "taps": [torch.cat(parts) for parts in zip(*(o["taps"] for o in outputs), strict=True)],
        "targets": torch.cat([o["targets"] for o in outputs]),
    }


def gate_features(taps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The gate's input: the pooled tapped stages of the out-of-distribution score, side by side."""
    return torch.cat([t.float() for t in taps], dim=1)


def other_score(model: SkinLesionClassifier, taps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The other-rash score of each photo; 0 when the gate is not fitted."""
    if model.other_weight.numel() == 0:
        return torch.zeros(taps[0].shape[0], device=taps[0].device)
    return (gate_features(taps) - model.other_centre) @ model.other_weight + model.other_bias


def _within_precision(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    centred = x.clone()
    for label in labels.unique():
        centred[labels == label] -= x[labels == label].mean(0)
    return torch.from_numpy(LedoitWolf(assume_centered=True).fit(centred.numpy()).precision_)


def _centred(inside: dict, *others: dict) -> tuple[torch.Tensor, ...]:
    """The gate features of ``inside`` and ``others`` in float64, less the in-class mean (returned
    first): centred, the float32 scores of the exported graph stay exact."""
    centre = gate_features(inside["taps"]).double().mean(0)
    return centre, *(gate_features(o["taps"]).double() - centre for o in (inside, *others))


def _direction(
    x_in: torch.Tensor, y_in: torch.Tensor, x_out: torch.Tensor, y_out: torch.Tensor
) -> torch.Tensor:
    """Fisher's direction from in-class to other-rash photos (centred features; labels distinct)."""
    precision = _within_precision(torch.cat([x_in, x_out]), torch.cat([y_in, y_out]))
    return precision @ (x_out.mean(0) - x_in.mean(0))


def fit_other_gate(
    model: SkinLesionClassifier,
    inside: dict,
    outside: dict,
    val_inside: dict,
    reject: float,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Fit on ``collect_outputs`` of in-class train photos (``inside``, labels = classes), other-rash
    train photos (``outside``, labels = their own folders, numbered after the classes) and in-class
    validation photos; sets the model's buffers, returns (buffers, summary)."""
    centre, x_in, x_out, x_val = _centred(inside, outside, val_inside)
    n = len(model.class_names)
    weight = _direction(x_in, inside["targets"], x_out, outside["targets"] + n)
    val = x_val @ weight
    q1, median, q3 = torch.quantile(val, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    scale = float(q3 - q1) or 1.0
    weight, bias = weight / scale, -median / scale
    threshold = float(torch.quantile(val / scale + bias, 1.0 - reject)) if reject else float("inf")
    buffers = {
        "other_centre": centre.float(),
        "other_weight": weight.float(),
        "other_bias": bias.float(),
        "other_threshold": torch.tensor(threshold),
    }
    device = model.temperature.device
    for name, value in buffers.items():
        setattr(model, name, value.to(device))
    train_out = (x_out @ weight + bias).float()
    summary = {
        "other/threshold": threshold,
        "other/val_inside_rejected": float((val / scale + bias > threshold).double().mean()),
        "other/train_outside_rejected": float((train_out > threshold).float().mean()),  # in-sample
        "other/n_train_inside": len(x_in),
        "other/n_train_outside": len(x_out),
        "other/dims": int(weight.numel()),
    }
    return buffers, summary


OTHER_BUDGETS = (0.02, 0.03, 0.05, 0.075, 0.10)  # in-class val shares the operating point is chosen among


def cross_fitted_catch(
    inside: dict,
    outside: dict,
    val_inside: dict,
    groups: Sequence[str],
    n_classes: int,
    budgets: Sequence[float] = OTHER_BUDGETS,
    folds: int = 5,
) -> dict[float, float]:
    """The share of other rashes the gate turns away at each in-class budget, estimated on the
    training patients alone: the other-rash photos are split into ``folds`` by patient (group), and
    each fold is scored by a gate fitted without it, thresholded on the in-class val photos.

    Why: the operating point (``abstain.other_reject``) is a choice, and choosing it on the held-out
    patients that measure the gate would make that measurement optimistic. This curve costs only
    the photos the gate is fitted on anyway. Empty with fewer than two patients.
    """
    _, x_in, x_out, x_val = _centred(inside, outside, val_inside)
    y_out = outside["targets"] + n_classes
    groups = list(groups)
    k = min(folds, len(set(groups)))
    if k < 2:
        return {}
    budgets = sorted(set(budgets))
    caught = dict.fromkeys(budgets, 0)
    for fit, held in GroupKFold(k).split(x_out.numpy(), groups=groups):
        fit, held = torch.from_numpy(fit), torch.from_numpy(held)
        weight = _direction(x_in, inside["targets"], x_out[fit], y_out[fit])
        val, scored = x_val @ weight, x_out[held] @ weight
        for b in budgets:
            caught[b] += int((scored > torch.quantile(val, 1.0 - b)).sum())
    return {b: caught[b] / len(x_out) for b in budgets}


def operating_point(catch: dict[float, float], cap: float, target: float) -> float:
    """The in-class budget the gate is fitted at: the smallest one, at most ``cap``, whose
    cross-fitted catch reaches ``target``; ``cap`` when none does, or when ``target`` is 0.

    Why: a model whose gate separates other rashes well should not turn away more in-class photos
    than it needs to (the MSID model reaches 72 % at 2 %), and one that separates them less well
    may spend up to ``cap`` (the multi-source model needs more than 2 %).
    """
    if target <= 0:
        return cap
    reaching = [b for b, caught in sorted(catch.items()) if b <= cap and caught >= target]
    return reaching[0] if reaching else cap


def catch_summary(catch: dict[float, float], chosen: float, target: float) -> dict:
    """``metrics.json`` keys: the cross-fitted catch per budget, the budget the gate was fitted at and
    the target it was chosen for."""
    curve = {f"other/cv_caught_at_{b * 100:g}pct": v for b, v in catch.items()}
    return curve | {"other/reject": chosen, "other/catch_target": target}
