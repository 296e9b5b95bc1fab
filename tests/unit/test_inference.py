"""The deployed forward pass: exact class activation maps, abstention scores, preprocessing, gates."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from skinlesion.data.transforms import eval_transforms
from skinlesion.inference.cam import normalised_map, overlay
from skinlesion.inference.decision import NOT_A_LESION, Thresholds, decide
from skinlesion.inference.preprocess import model_view, normalise
from skinlesion.models.backbones import BACKBONES
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.models.graph import InferenceGraph
from skinlesion.models.ood import mahalanobis

CLASSES = ["Chickenpox", "Measles", "Monkeypox", "Normal"]


@pytest.fixture(scope="module")
def tiny() -> SkinLesionClassifier:
    torch.manual_seed(0)
    model = SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False, image_size=64).eval()
    model.temperature.fill_(1.7)
    return model


@pytest.mark.parametrize("name", ["simple_cnn", "efficientnet_lite0", "mobilenet_v2"])  # one per trunk kind
def test_feature_map_pools_to_the_backbone_features(name):
    backbone = BACKBONES[name].build(pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = backbone.feature_map(x)
        assert fmap.shape[:2] == (2, backbone.num_features) and fmap.ndim == 4
        torch.testing.assert_close(fmap.mean(dim=(2, 3)), backbone(x), atol=1e-5, rtol=1e-5)


def test_class_maps_average_to_the_logits(tiny):
    """CAM_c = sum_k w_ck A_k: its spatial mean plus the bias is exactly the logit of class c."""
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        probs, ood, cam, other = InferenceGraph(tiny)(x)
        logits = tiny(x)
    torch.testing.assert_close(cam.mean(dim=(2, 3)) + tiny.head[-1].bias, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, (logits / 1.7).softmax(-1))  # temperature included
    assert ood.tolist() == other.tolist() == [0.0, 0.0, 0.0]  # not fitted: the gates are off


def test_class_map_equals_grad_cam_up_to_scale(tiny):
    """Grad-CAM on the last feature map (gradients by autograd) is the same map, normalised."""
    x = torch.randn(1, 3, 64, 64)
    fmap = tiny.backbone.feature_map(x).detach().requires_grad_(True)
    logits = tiny.head(fmap.mean(dim=(2, 3)))
    top = int(logits.argmax())
    logits[0, top].backward()
    alpha = fmap.grad.mean(dim=(2, 3), keepdim=True)
    grad_cam = torch.relu((alpha * fmap).sum(1))[0].detach().numpy()
    with torch.no_grad():
        cam = InferenceGraph(tiny)(x)[2][0, top].numpy()
    np.testing.assert_allclose(normalised_map(cam), normalised_map(grad_cam), atol=1e-5)


def test_mahalanobis_is_the_distance_to_the_nearest_class_mean():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    precision = torch.diag(torch.tensor([1.0, 0.25]))  # variance 1 along x, 4 along y
    feats = torch.tensor([[1.0, 0.0], [0.0, 2.0], [9.0, 4.0]])
    torch.testing.assert_close(mahalanobis(feats, means, precision), torch.tensor([1.0, 1.0, 5.0]))


@pytest.mark.parametrize("size", [(224, 224), (300, 200), (199, 401), (1000, 750), (50, 60)])
def test_numpy_preprocessing_matches_eval_transforms(size):
    """The torch-free path sees the pixels the model was evaluated on (at most 1 grey level apart)."""
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    want = eval_transforms(224, [0.5] * 3, [0.5] * 3)(TF.pil_to_tensor(image)).numpy()
    got = normalise(model_view(image, 224), [0.5] * 3, [0.5] * 3)[0]
    assert got.shape == want.shape == (3, 224, 224)
    diff = np.abs(got - want) * 0.5 * 255  # in grey levels
    assert diff.max() <= 1.0 + 1e-3 and (diff > 0.01).mean() < 0.05


def test_overlay_is_the_model_view_with_heat_where_the_map_is_high():
    view = Image.new("RGB", (64, 64), (128, 128, 128))
    cam = np.zeros((4, 4), np.float32)
    cam[0, 0] = 5.0  # hot top-left corner
    out = np.asarray(overlay(view, cam)).astype(int)
    assert out.shape == (64, 64, 3)
    assert out[2, 2, 0] > out[2, 2, 2] + 40  # red where the map peaks
    assert out[60, 60, 2] > out[60, 60, 0]  # blue (low) far from it


GATES = Thresholds(confidence=0.6, ood_score=2.0)


@pytest.mark.parametrize(
    "probs, ood, reason",
    [
        ([0.1, 0.8, 0.05, 0.05], 1.0, None),
        ([0.1, 0.8, 0.05, 0.05], 3.0, "out_of_distribution"),
        ([0.3, 0.4, 0.2, 0.1], 1.0, "low_confidence"),
        ([0.3, 0.4, 0.2, 0.1], 3.0, "out_of_distribution"),  # the first failing gate is reported
    ],
)
def test_gates(probs, ood, reason):
    d = decide(probs, CLASSES, ood, GATES)
    assert d.abstained == (reason is not None) and d.reason == reason
    assert (NOT_A_LESION in d.message) == (reason == "out_of_distribution")
    if reason is None:
        assert d.message.startswith("Measles")


def test_unfitted_thresholds_never_abstain():
    t = Thresholds.from_values(0.0, float("inf"))
    assert t == Thresholds() and set(t.to_json().values()) == {None}
    assert not decide([0.26, 0.25, 0.25, 0.24], CLASSES, 99.0, t).abstained
