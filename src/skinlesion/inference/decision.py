"""Abstention: when the answer is "I don't know" rather than a class.

Two gates, fitted on the validation split after training (``skinlesion.models.abstention``) and
checked in this order:

1. ``out_of_distribution``: the photo's multi-layer Mahalanobis score (``skinlesion.models.ood``)
   is higher than on all but a small share of the validation photos: "not a recognisable skin lesion";
2. ``low_confidence``: the calibrated probability of the top class is below the confidence
   threshold: "unsure".

A threshold of ``None`` switches its gate off (a model from before abstention was fitted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

NOT_A_LESION = "not a recognisable skin lesion"


@dataclass(frozen=True)
class Thresholds:
    """The fitted thresholds; a photo is answered when it passes both."""

    confidence: float | None = None  # abstain when the top probability < confidence
    ood_score: float | None = None  # abstain when the out-of-distribution score > ood_score

    @classmethod
    def from_values(cls, confidence: float, ood_score: float) -> Thresholds:
        """From buffer values, where 0 and +inf mean "off"."""
        return cls(
            confidence=float(confidence) if confidence > 0 else None,
            ood_score=float(ood_score) if math.isfinite(ood_score) else None,
        )

    @classmethod
    def from_json(cls, data: Mapping | None) -> Thresholds:
        data = data or {}
        return cls(confidence=data.get("confidence"), ood_score=data.get("ood_score"))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    abstained: bool
    reason: str | None
    message: str


def decide(
    probs: Sequence[float], class_names: Sequence[str], ood_score: float, thresholds: Thresholds
) -> Decision:
    """Apply the gates to one image's outputs."""
    t = thresholds
    if t.ood_score is not None and ood_score > t.ood_score:
        return Decision(
            True,
            "out_of_distribution",
            f"{NOT_A_LESION}: the photo is unlike the lesion photos the model was trained on "
            f"(out-of-distribution score {ood_score:.2f} > {t.ood_score:.2f})",
        )
    top = max(range(len(probs)), key=lambda i: probs[i])
    if t.confidence is not None and probs[top] < t.confidence:
        return Decision(
            True,
            "low_confidence",
            f"unsure: the most likely class, {class_names[top]}, has probability {probs[top]:.3f}, "
            f"below the confidence threshold {t.confidence:.3f}",
        )
    return Decision(False, None, f"{class_names[top]} (probability {probs[top]:.2f})")
