"""NumPy evaluation metrics agree with torchmetrics (used in training) and handle absent classes."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from skinlesion.reports.metrics import classification_metrics, confusion_matrix, report_markdown
from tests.helpers import NAMES, random_predictions


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_torchmetrics(seed):
    probs, targets = random_predictions(seed)
    m = classification_metrics(probs, targets, NAMES)
    t_probs, t_targets = torch.tensor(probs), torch.tensor(targets)
    assert m["test/acc"] == pytest.approx(multiclass_accuracy(t_probs, t_targets, 4, average="micro").item())
    assert m["test/f1_macro"] == pytest.approx(
        multiclass_f1_score(t_probs, t_targets, 4, average="macro").item()
    )
    per_class = multiclass_f1_score(t_probs, t_targets, 4, average=None)
    for i, name in enumerate(NAMES):
        assert m[f"test/f1/{name}"] == pytest.approx(per_class[i].item())


def test_macro_average_skips_absent_classes():
    targets = np.array([0, 0, 1, 1])
    probs = np.eye(4)[[0, 0, 1, 2]]
    m = classification_metrics(probs, targets, NAMES, prefix="folder")
    # class 0: F1 1.0; class 1: P=1, R=0.5 -> 2/3; C and D absent
    assert m["folder/f1_macro"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert "absent" in report_markdown(probs, targets, NAMES, "t")


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([1, 0, 1]), 2)
    assert cm.tolist() == [[1, 1], [0, 1]]
