"""What the model answers for one photo: one class, a set of classes, or "I don't know".

Gates, fitted on the validation split after training (``skinlesion.models.abstention``) and checked
in this order; the first that fires turns the photo away (``abstained``, an empty set):

1. ``out_of_distribution``: the photo's multi-layer Mahalanobis score (``skinlesion.models.ood``)
   is higher than on all but a small share of the validation photos: "not a recognisable skin lesion";
2. ``other_condition``: the other-rash score (``skinlesion.models.other``, fitted on photos of other
   rashes) is higher than on all but a small share of the in-class validation photos: "not one of
   the four conditions this model knows";
3. ``low_confidence`` (off by default since prediction sets exist): the calibrated probability of
   the top class is below the confidence threshold: "unsure".

A photo that passes gets its prediction set (``skinlesion.models.conformal``): every class whose
calibrated probability reaches that class's threshold, fitted so that the set holds the true class
with the stated coverage. A set of one class is the answer; a set of two or more is said as such,
never as a diagnosis. A threshold of ``None`` switches its gate off, and a model without set
thresholds answers with its top class alone (a model from before they were fitted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from skinlesion.models.conformal import ordered_set

NOT_A_LESION = "not a recognisable skin lesion"
NOT_ENOUGH = "this photo is not enough to tell"
NOT_KNOWN = "not one of the four conditions this model knows"
# Reasons that turn a photo away before any class is named (no heatmap of a class either).
TURNED_AWAY = ("out_of_distribution", "other_condition")


@dataclass(frozen=True)
class Thresholds:
    """The fitted thresholds; a photo is answered when it passes the gates."""

    confidence: float | None = None  # abstain when the top probability < confidence
    ood_score: float | None = None  # abstain when the out-of-distribution score > ood_score
    set_level: float | None = None  # the stated coverage of the prediction sets
    set_thresholds: tuple[float, ...] | None = None  # class c is in the set when p_c >= its threshold
    other_score: float | None = None  # abstain when the other-rash score > other_score

    @classmethod
    def from_values(
        cls,
        confidence: float,
        ood_score: float,
        set_level: float = 0.0,
        set_thresholds: Sequence[float] = (),
        other_score: float = math.inf,
    ) -> Thresholds:
        """From buffer values, where 0, +inf and empty mean "off"."""
        sets = len(set_thresholds) > 0 and set_level > 0
        return cls(
            confidence=float(confidence) if confidence > 0 else None,
            ood_score=float(ood_score) if math.isfinite(ood_score) else None,
            set_level=float(set_level) if sets else None,
            set_thresholds=tuple(float(t) for t in set_thresholds) if sets else None,
            other_score=float(other_score) if math.isfinite(other_score) else None,
        )

    @classmethod
    def from_json(cls, data: Mapping | None) -> Thresholds:
        data = data or {}
        sets = data.get("set_thresholds")
        return cls(
            confidence=data.get("confidence"),
            ood_score=data.get("ood_score"),
            set_level=data.get("set_level"),
            set_thresholds=tuple(float(t) for t in sets) if sets else None,
            other_score=data.get("other_score"),
        )

    def to_json(self) -> dict:
        out = asdict(self)
        out["set_thresholds"] = list(self.set_thresholds) if self.set_thresholds else None
        return out


@dataclass(frozen=True)
class Decision:
    abstained: bool  # turned away by a gate: no class at all
    reason: str | None
    message: str
    prediction_set: tuple[str, ...] = ()  # most probable first; empty when abstained

    @property
    def answer(self) -> str | None:
        """The single class, only when the set holds exactly one."""
        return self.prediction_set[0] if len(self.prediction_set) == 1 else None


def in_words(names: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def decide(
    probs: Sequence[float],
    class_names: Sequence[str],
    ood_score: float,
    thresholds: Thresholds,
    other_score: float = 0.0,
) -> Decision:
    """Apply the gates to one image's outputs, then form its prediction set."""
    t = thresholds
    gates = (  # (reason, score, its threshold, what the photo is, the score's name)
        (
            "out_of_distribution",
            ood_score,
            t.ood_score,
            f"{NOT_A_LESION}: the photo is unlike the lesion photos the model was trained on",
            "out-of-distribution score",
        ),
        (
            "other_condition",
            other_score,
            t.other_score,
            f"{NOT_KNOWN} ({in_words(class_names)}): the photo looks more like another rash",
            "other-rash score",
        ),
    )
    for reason, score, limit, what, name in gates:
        if limit is not None and score > limit:
            return Decision(True, reason, f"{what} ({name} {score:.2f} > {limit:.2f})")
    top = max(range(len(probs)), key=lambda i: probs[i])
    if t.confidence is not None and probs[top] < t.confidence:
        return Decision(
            True,
            "low_confidence",
            f"unsure: the most likely class, {class_names[top]}, has probability {probs[top]:.3f}, "
            f"below the confidence threshold {t.confidence:.3f}",
        )
    members = [top] if t.set_thresholds is None else ordered_set(probs, t.set_thresholds)
    names = tuple(class_names[c] for c in members)
    if len(names) > 1:
        return Decision(False, None, f"could be {in_words(names)}; {NOT_ENOUGH}", names)
    return Decision(False, None, f"{names[0]} (probability {probs[members[0]]:.2f})", names)
