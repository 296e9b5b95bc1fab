"""Temperature scaling recovers a known temperature and travels inside the checkpoint."""

import lightning as L
import pytest
import torch

from skinlesion.inference.loading import load_classifier
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.temperature import fit_temperature, update_checkpoint_buffers


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_that_generated_the_labels(true_t):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 4, generator=g) * 3
    targets = torch.multinomial((logits / true_t).softmax(-1), 1, generator=g).squeeze(1)
    assert fit_temperature(logits, targets) == pytest.approx(true_t, rel=0.05)


def test_temperature_changes_probabilities_not_predictions():
    model = SkinLesionClassifier(["a", "b", "c"], backbone="simple_cnn", pretrained=False)
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    before = model.probabilities(logits)
    model.temperature.fill_(2.0)
    after = model.probabilities(logits)
    assert after.argmax() == before.argmax() and after.max() < before.max()


def test_temperature_is_stored_in_the_checkpoint(tmp_path):
    model = SkinLesionClassifier(["a", "b"], backbone="simple_cnn", pretrained=False)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    update_checkpoint_buffers(tmp_path / "m.ckpt", {"temperature": torch.tensor(1.7)})
    assert not (tmp_path / "m.ckpt.tmp").exists()
    assert load_classifier(tmp_path / "m.ckpt").temperature.item() == pytest.approx(1.7)
