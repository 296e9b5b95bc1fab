"""The explicit penalty changes the loss by exactly l1*sum|w| + l2*sum w^2 over the chosen weights."""

import pytest
import torch

from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.regularizers import WeightPenalty

CLASSES = ["a", "b", "c", "d"]


def classifier(l1: float, l2: float, scope: str = "all") -> SkinLesionClassifier:
    torch.manual_seed(0)
    reg = {"_target_": "skinlesion.models.regularizers.WeightPenalty", "l1": l1, "l2": l2, "scope": scope}
    return SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False, regularizer=reg).eval()


def weights(model, scope="all"):
    return [
        p for n, p in model.named_parameters() if p.ndim > 1 and (scope == "all" or n.startswith(scope + "."))
    ]


@pytest.mark.parametrize("l1,l2", [(1e-4, 0.0), (0.0, 1e-3), (1e-4, 1e-3)])
def test_penalty_changes_the_loss_by_exactly_the_expected_amount(l1, l2, monkeypatch):
    batch = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    plain, penalised = classifier(0.0, 0.0), classifier(l1, l2)
    penalised.load_state_dict(plain.state_dict())
    logged = {}
    for m in (plain, penalised):
        monkeypatch.setattr(m, "log", lambda name, value, **_: logged.__setitem__(name, value))
    base = plain.training_step(batch, 0)
    total = penalised.training_step(batch, 0)
    expected = l1 * sum(w.abs().sum() for w in weights(plain)) + l2 * sum(
        w.pow(2).sum() for w in weights(plain)
    )
    assert (total - base).item() == pytest.approx(expected.item(), rel=1e-5)
    assert logged["train/penalty"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert logged["train/data_loss"].item() == pytest.approx(base.item(), rel=1e-6)


def test_scope_and_frozen_weights():
    model = classifier(0.0, 1.0, scope="head")
    chosen = model.penalty.parameters(model.named_parameters())
    assert [p.shape for p in chosen] == [model.head[1].weight.shape]  # no bias, no backbone
    model.freeze(2)
    penalty = WeightPenalty(l2=1.0)
    frozen = {id(p) for s in model.backbone.stages[:2] for p in s.parameters()}
    assert not frozen & {id(p) for p in penalty.parameters(model.named_parameters())}


def test_negative_strength_is_refused():
    with pytest.raises(ValueError, match=">= 0"):
        WeightPenalty(l1=-1.0)
