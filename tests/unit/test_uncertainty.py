"""Cohen's κ, one-vs-rest AUC and group bootstrap intervals against references and known cases."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from skinlesion.inference.torch_backend import abstention_mask
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.reports.metrics import (
    Bootstrap,
    abstention_metrics,
    bootstrap_intervals,
    classification_metrics,
    cohen_kappa,
    details_markdown,
    roc_one_vs_rest,
    uncertainty_metrics,
)
from tests.helpers import NAMES, random_predictions


@pytest.mark.parametrize("seed", range(3))
def test_kappa_and_auc_agree_with_scikit_learn(seed):
    probs, targets = random_predictions(seed)
    assert cohen_kappa(targets, probs.argmax(1), 4) == pytest.approx(
        cohen_kappa_score(targets, probs.argmax(1))
    )
    for k, (_, _, area) in enumerate(roc_one_vs_rest(probs, targets)):
        assert area == pytest.approx(roc_auc_score(targets == k, probs[:, k]))


def test_auc_is_undefined_for_a_class_without_positives_and_left_out_of_the_macro():
    probs, targets = random_predictions(0)
    keep = targets != 2
    m = uncertainty_metrics(probs[keep], targets[keep], NAMES, "folder", options=Bootstrap(200))
    assert m["folder/auc/C"] is None
    others = [roc_auc_score(targets[keep] == k, probs[keep, k]) for k in (0, 1, 3)]
    assert m["folder/auc_macro"] == pytest.approx(np.mean(others))
    assert m["folder/recall_ci/C"] == [None, None]
    m |= classification_metrics(probs[keep], targets[keep], NAMES, "folder")
    assert "| C | — | — | — |" in details_markdown(m, NAMES, "folder")  # absent: no recall, not 0


def test_perfect_predictions_have_a_degenerate_interval():
    targets = np.repeat(np.arange(4), 10)
    ci = bootstrap_intervals(targets, targets, 4, options=Bootstrap(300))
    assert ci["acc"].tolist() == [1.0, 1.0] and ci["f1_macro"].tolist() == [1.0, 1.0]


def test_interval_brackets_the_estimate_narrows_with_more_data_and_is_reproducible():
    widths = []
    for n in (100, 1600):
        probs, targets = random_predictions(1, n)
        acc = (probs.argmax(1) == targets).mean()
        ci = bootstrap_intervals(targets, probs.argmax(1), 4, options=Bootstrap(1000, seed=3))
        assert ci["acc"][0] < acc < ci["acc"][1]
        widths.append(ci["acc"][1] - ci["acc"][0])
        again = bootstrap_intervals(targets, probs.argmax(1), 4, options=Bootstrap(1000, seed=3))
        assert np.array_equal(again["f1_macro"], ci["f1_macro"])
    assert widths[1] == pytest.approx(widths[0] / 4, rel=0.3)  # ~ 1 / sqrt(n)


def test_duplicates_resampled_as_groups_add_no_false_certainty():
    probs, targets = random_predictions(2, 60)
    preds = probs.argmax(1)
    copies = 8  # every image present 8 times, as one duplicate group
    t8, p8 = np.repeat(targets, copies), np.repeat(preds, copies)
    groups = np.repeat([f"g{i:03d}" for i in range(60)], copies)  # same unit order as the images
    options = Bootstrap(1000, seed=5)
    unique = bootstrap_intervals(targets, preds, 4, options=options)
    grouped = bootstrap_intervals(t8, p8, 4, groups=groups, options=options)
    naive = bootstrap_intervals(t8, p8, 4, options=options)
    assert np.allclose(grouped["acc"], unique["acc"]) and np.allclose(grouped["kappa"], unique["kappa"])
    assert naive["acc"][1] - naive["acc"][0] < 0.6 * (unique["acc"][1] - unique["acc"][0])


def test_metrics_name_the_unit_and_the_report_shows_the_intervals():
    probs, targets = random_predictions(4, 80)
    groups = [f"g{i // 2}" for i in range(80)]
    m = uncertainty_metrics(probs, targets, NAMES, "test", groups, Bootstrap(500))
    assert m["test/bootstrap_unit"] == "group" and m["test/bootstrap_units"] == 40
    low, high = m["test/recall_ci/A"]
    assert 0 <= low <= high <= 1
    text = details_markdown(m | classification_metrics(probs, targets, NAMES), NAMES, "test")
    assert (
        f"{m['test/acc_ci'][0]:.3f} – {m['test/acc_ci'][1]:.3f}" in text
        and "40 groups (an image with its duplicates" in text
    )


def test_abstention_scores_only_the_images_kept():
    targets = np.array([0, 1, 2, 3, 0])
    probs = np.eye(4)[[0, 1, 2, 0, 1]]  # the last two are wrong
    m = abstention_metrics(probs, targets, np.array([0, 0, 0, 1, 1], bool), NAMES, "folder")
    assert m["folder/abstention_rate"] == pytest.approx(0.4) and m["folder/n_abstained"] == 2
    assert m["folder/acc_non_abstained"] == 1.0


def test_abstention_mask_applies_the_checkpoints_fitted_gates():
    model = SkinLesionClassifier(NAMES, backbone="simple_cnn", pretrained=False)
    probs = np.array([[0.9, 0.05, 0.03, 0.02], [0.4, 0.3, 0.2, 0.1]])
    assert abstention_mask(model, probs) is None  # nothing fitted: no abstention figures
    model.confidence_threshold.fill_(0.5)
    assert abstention_mask(model, probs).tolist() == [False, True]
    model.ood_threshold.fill_(1.0)  # the OOD gate needs the images themselves
    with pytest.raises(ValueError, match="loader"):
        abstention_mask(model, probs)
