"""Abstention thresholds, fitted after training and stored as buffers of the classifier.

Each gate of ``skinlesion.inference.decision`` gets the threshold that turns away a chosen share of
the *validation* images, in-distribution lesion photos the weights never saw (the coverage-targeted
selective classification of Geifman & El-Yaniv, 2017). No out-of-distribution image is used to fit
anything, so the rejection rate on non-skin photos measured by ``python -m
skinlesion.evaluate_abstention`` is a held-out figure.

- ``ood_mean_j``, ``ood_precision_j``: per tapped stage, the class means of the training images'
  pooled features (eval transforms) and the inverse of their shared Ledoit-Wolf covariance;
- ``ood_scale``: per stage, the median validation distance (so the stages weigh alike);
- ``ood_threshold``: the ``1 - ood_reject`` quantile of the validation scores;
- ``confidence_threshold``: the ``confidence_reject`` quantile of the calibrated top-class
  probability over the validation images that pass the first gate (off by default);
- ``set_threshold``, ``set_level``: the per-class thresholds of the prediction sets
  (``models/conformal.py``) at coverage ``set_coverage``, from the calibrated probabilities of all
  validation images (the guarantee is over photos drawn like them, before any gate).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from sklearn.covariance import LedoitWolf

from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.conformal import fit_set_thresholds, set_membership, too_few
from skinlesion.models.ood import mahalanobis, ood_score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AbstainParams:
    """The share of validation images each gate may reject, and the prediction sets' coverage."""

    enabled: bool = True
    ood_reject: float = 0.03
    confidence_reject: float = 0.0  # off: the prediction set says "unsure" with a stated coverage
    set_coverage: float = 0.90  # 0: no prediction sets (the top class alone)
    other_reject: float = 0.05  # the most in-class val share the other-rash gate may turn away; 0: off
    other_catch: float = 0.60  # fit the gate at the smallest budget catching this share (cross-fitted)

    def __post_init__(self) -> None:
        for name in ("ood_reject", "confidence_reject", "other_reject"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise ValueError(f"abstain.{name} must be in [0, 0.5), got {getattr(self, name)}")
        if not 0.0 <= self.other_catch <= 1.0:
            raise ValueError(
                f"abstain.other_catch must be in [0, 1] (0: other_reject as is), got {self.other_catch}"
            )
        if not 0.0 <= self.set_coverage < 1.0:
            raise ValueError(f"abstain.set_coverage must be in [0, 1) (0: off), got {self.set_coverage}")


def class_gaussian(
    features: torch.Tensor, targets: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means and the precision of the shared covariance (Ledoit-Wolf shrinkage), float32."""
    x = features.double()
    present = [c for c in range(n_classes) if (targets == c).any()]
    means = torch.stack([x[targets == c].mean(0) for c in present])
    centred = x - means[torch.tensor([present.index(int(t)) for t in targets])]
    precision = LedoitWolf(assume_centered=True).fit(centred.numpy()).precision_
    return means.float(), torch.from_numpy(precision).float()


def _quantile(values: torch.Tensor, q: float) -> float:
    return float(torch.quantile(values.double(), q)) if len(values) else 0.0


def fit_abstention(
    model: SkinLesionClassifier, val: dict, train: dict, params: AbstainParams
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Fit on ``collect_outputs`` of train and val; sets the model's buffers, returns (buffers, summary).

    ``model.temperature`` must already be fitted: the confidence gate reads calibrated probabilities.
    """
    buffers: dict[str, torch.Tensor] = {}
    scales = []
    for j, (train_f, val_f) in enumerate(zip(train["taps"], val["taps"], strict=True)):
        mean, precision = class_gaussian(train_f, train["targets"], len(model.class_names))
        buffers |= {f"ood_mean_{j}": mean, f"ood_precision_{j}": precision}
        scales.append(float(mahalanobis(val_f, mean, precision).median()))
    buffers["ood_scale"] = torch.tensor(scales).clamp_min(1e-6)
    for name, value in buffers.items():
        setattr(model, name, value.to(model.temperature.device))
    score = ood_score(model, [t.to(model.temperature.device) for t in val["taps"]]).cpu()
    probs = model.probabilities(val["logits"])
    confidence = probs.max(1).values
    ood_t = _quantile(score, 1.0 - params.ood_reject) if params.ood_reject else float("inf")
    passes = score <= ood_t
    conf_t = _quantile(confidence[passes], params.confidence_reject) if params.confidence_reject else 0.0
    buffers |= {"ood_threshold": torch.tensor(ood_t), "confidence_threshold": torch.tensor(conf_t)}
    model.ood_threshold.fill_(ood_t)
    model.confidence_threshold.fill_(conf_t)
    accepted = passes & (confidence >= conf_t)
    correct = (probs.argmax(1) == val["targets"]).float()
    summary = {
        "abstain/ood_threshold": ood_t,
        "abstain/confidence_threshold": conf_t,
        "abstain/stages": len(scales),
        "abstain/val_rejected": float((~accepted).float().mean()),
        "abstain/val_acc_all": float(correct.mean()),
        "abstain/val_acc_accepted": float(correct[accepted].mean()) if accepted.any() else float("nan"),
    }
    return buffers, summary


def fit_prediction_sets(
    model: SkinLesionClassifier,
    probs: torch.Tensor,
    targets: torch.Tensor,
    level: float,
    val_probs: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Set thresholds from calibrated probabilities of held-out photos (val, unless out-of-fold
    scores are given: then ``val_probs`` are val's, for its mean set size); sets the model's buffers."""
    names = model.class_names
    p, y = probs.double().cpu().numpy(), targets.cpu().numpy()
    thresholds = fit_set_thresholds(p, y, len(names), level)
    short = [names[c] for c in too_few(y, len(names), level)]
    if short:
        log.warning(
            "too few calibration photos of %s for %.0f %% sets: %s will be in every set",
            ", ".join(short),
            100 * level,
            "they" if len(short) > 1 else "it",
        )
    buffers = {
        "set_threshold": torch.from_numpy(thresholds).float(),
        "set_level": torch.tensor(float(level)),
    }
    device = model.temperature.device
    model.set_threshold = buffers["set_threshold"].to(device)
    model.set_level = buffers["set_level"].to(device)
    on_val = p if val_probs is None else val_probs.double().cpu().numpy()
    sizes = set_membership(on_val, model.set_threshold.double().cpu().numpy()).sum(1)
    summary = {
        "sets/level": level,
        "sets/calibration_photos": len(y),
        "sets/val_mean_size": float(sizes.mean()) if len(sizes) else float("nan"),
        "sets/classes_in_every_set": short,
    }
    summary |= {f"sets/threshold/{n}": float(t) for n, t in zip(names, thresholds, strict=True)}
    return buffers, summary
