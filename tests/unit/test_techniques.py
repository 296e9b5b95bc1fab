"""Training techniques behave as documented: TTA, MixUp/CutMix, progressive unfreezing, ablation table."""

from types import SimpleNamespace

import pytest
import torch

from skinlesion.ablation import table
from skinlesion.models.classifier import SkinLesionClassifier, batch_mixing
from skinlesion.models.finetuning import ProgressiveUnfreezing

CLASSES = ["a", "b", "c", "d"]


def model(**kw) -> SkinLesionClassifier:
    torch.manual_seed(0)
    return SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False, **kw)


def test_tta_is_the_mean_of_image_and_mirror_in_eval_only():
    m = model(tta=True).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = m.head(m.backbone(x))
        mirrored = m.head(m.backbone(x.flip(-1)))
        assert torch.allclose(m(x), (plain + mirrored) / 2, atol=1e-6)
    calls = []
    m.backbone.register_forward_hook(lambda *_: calls.append(1))
    m.train()(x)
    assert len(calls) == 1  # training sees the image once


def test_batch_mixing_gives_soft_targets_and_a_finite_loss(monkeypatch):
    mix = batch_mixing(4, mixup_alpha=0.4, cutmix_alpha=1.0)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    torch.manual_seed(1)
    _, soft = mix(x, y)
    assert soft.shape == (8, 4) and torch.allclose(soft.sum(1), torch.ones(8))
    assert (soft.max(1).values < 1).any()  # really mixed
    assert batch_mixing(4, 0.0, 0.0) is None
    m = model(mixup_alpha=0.4, cutmix_alpha=1.0)
    monkeypatch.setattr(m, "log", lambda *a, **k: None)
    assert torch.isfinite(m.training_step((x, y), 0))


def test_progressive_unfreezing_follows_the_schedule():
    m = model()
    cb = ProgressiveUnfreezing({0: 4, 2: 2, 3: 0})
    frozen = []
    for epoch in range(5):
        cb.on_train_epoch_start(SimpleNamespace(current_epoch=epoch), m)
        frozen.append(sum(not p.requires_grad for p in m.backbone.parameters()) > 0 and len(m.frozen))
    assert frozen == [4, 4, 2, 0, 0]
    with pytest.raises(ValueError, match="epoch 0"):
        ProgressiveUnfreezing({2: 1})


def test_ablation_table_reports_means_and_deltas_against_the_baseline():
    rows = {
        "baseline": [
            {"val/f1_macro_best": 0.90, "test/f1_macro": 0.80, "test/acc": 0.85, "fit_seconds": 100}
        ],
        "ema": [
            {"val/f1_macro_best": 0.94, "test/f1_macro": 0.86, "test/acc": 0.9, "fit_seconds": 110},
            {"val/f1_macro_best": 0.92, "test/f1_macro": 0.84, "test/acc": 0.9, "fit_seconds": 130},
        ],
    }
    text = table(rows, "baseline")
    ema_line = next(line for line in text.splitlines() if line.startswith("| ema"))
    assert "| 2 |" in ema_line and "0.930" in ema_line and "+0.030" in ema_line and "+0.050" in ema_line
    assert "| 120 |" in ema_line
