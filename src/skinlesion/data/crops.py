"""Crop-robust duplicates: SIFT keypoints matched between images and verified by geometry.

Perceptual hashes compare whole images, so a crop of a photo (most MSLD v2 copies of MSID photos)
slips past them. Here every image gets SIFT keypoints (cached by the SHA-256 of its bytes, so a
second ``prepare`` or ``evaluate`` decodes nothing again). Candidates come from descriptor votes:
each descriptor of a query image votes for the reference images among its ``K`` nearest
descriptors (FLANN, seeded, so the result is the same in every run) that are clearly closer than
the ``K``-th; the ``candidates`` best-voted references are then verified pair by pair: Lowe's ratio
test, one match per reference keypoint, a RANSAC affine transform with a plausible scale, and
either ``sure_inliers`` inliers or, between ``min_inliers`` and that, pixels that agree once aligned
(normalised cross-correlation over the matched region >= ``min_ncc``).

The thresholds were set by eye on side-by-side pictures of matches and near-misses between MSID,
MSLD v2 and the external folder: with 6 to 11 inliers, stock photos of different faces still line
up (NCC 0.76-0.92), crops of one photo agree (NCC >= 0.95); from 12 inliers on, every pair seen was
one photo (eye bars and colour casts lower the NCC of true pairs to 0.4-0.8 there). With these
values, ``prepare data=multisource`` ties 91 of the 537 MSLD v2 files to MSID. By eye, a random 30 of
those 91 were each one photo with an MSID image of its group, and a random 40 of the 147 pairs that
the check finds for MSLD v2 images against MSID were all one photo; the five known crops of MSLD v2
photos in the external folder are found.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from skinlesion.core.errors import ConfigError
from skinlesion.data.images import load_image
from skinlesion.data.scan import image_hashes

K_NEIGHBOURS = 10
HASHES = ("phash", "dhash", "whash")


@dataclass(frozen=True)
class CropParams:
    """When two images count as one photo (a crop, a resize, a re-encode, a small rotation)."""

    enabled: bool = False
    scope: str = "across"  # "across": only pairs from two different sources; "all": every pair
    max_side: int = 512  # larger images are shrunk before SIFT (speed; 224 px data is untouched)
    n_features: int = 500
    candidates: int = 3  # references verified per image, best-voted first
    min_votes: int = 3
    ratio: float = 0.75
    min_inliers: int = 6
    sure_inliers: int = 12
    min_ncc: float = 0.95
    max_scale: float = 5.0  # the affine map may shrink or enlarge up to this factor
    max_anisotropy: float = 2.0  # ratio of its two scales (non-square crops resized to a square)

    def __post_init__(self) -> None:
        if self.scope not in ("across", "all"):
            raise ConfigError(f"data.crop_duplicates.scope must be 'across' or 'all', got {self.scope!r}")
        if not 4 <= self.min_inliers <= self.sure_inliers:
            raise ConfigError("data.crop_duplicates needs 4 <= min_inliers <= sure_inliers")

    def feature_key(self) -> str:
        """What the cached features depend on."""
        spec = {"v": 2, "max_side": self.max_side, "n_features": self.n_features}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Item:
    """An image to match: a unique name, the SHA-256 of its bytes (the cache key), its file."""

    ident: str
    sha256: str
    path: Path


@dataclass
class Features:
    points: np.ndarray  # (n, 2) float32, in the working (shrunk) frame
    descriptors: np.ndarray  # (n, 128) uint8
    hashes: dict[str, np.ndarray]  # the perceptual hashes of :func:`skinlesion.data.scan.image_hashes`


def gray(path: Path, max_side: int, image: Image.Image | None = None) -> np.ndarray:
    """The image as uint8 grayscale, shrunk so that its longer side is at most ``max_side``."""
    g = np.asarray((image or load_image(path)).convert("L"))
    scale = max_side / max(g.shape)
    if scale < 1:
        g = cv2.resize(
            g, (round(g.shape[1] * scale), round(g.shape[0] * scale)), interpolation=cv2.INTER_AREA
        )
    return g


class FeatureCache:
    """SIFT features and perceptual hashes by SHA-256 under ``directory`` (None: in memory only)."""

    def __init__(self, directory: Path | None, params: CropParams) -> None:
        self.dir = Path(directory) / f"sift-{params.feature_key()}" if directory else None
        self.params = params
        self.memory: dict[str, Features] = {}
        self.sift = cv2.SIFT_create(nfeatures=params.n_features)

    def get(self, item: Item) -> Features:
        if item.sha256 in self.memory:
            return self.memory[item.sha256]
        file = self.dir / item.sha256[:2] / f"{item.sha256}.npz" if self.dir else None
        if file is not None and file.is_file():
            with np.load(file) as z:
                feats = Features(z["points"], z["descriptors"], {k: z[k] for k in HASHES})
        else:
            image = load_image(item.path)
            kp, des = self.sift.detectAndCompute(gray(item.path, self.params.max_side, image), None)
            points = np.array([k.pt for k in kp], np.float32).reshape(-1, 2)
            des = np.zeros((0, 128), np.uint8) if des is None else np.clip(des, 0, 255).astype(np.uint8)
            feats = Features(points, des, image_hashes(image))
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npz")
                np.savez(tmp, points=points, descriptors=des, **feats.hashes)
                tmp.replace(file)
        self.memory[item.sha256] = feats
        return feats


def vote(
    queries: Sequence[Item], refs: Sequence[Item], cache: FeatureCache, params: CropParams, same: bool = False
) -> dict[int, list[int]]:
    """Query index -> the reference indices to verify, best-voted first (at most ``candidates``).

    ``same``: the queries are the references, and an image does not vote for itself."""
    ref_des = [cache.get(r).descriptors for r in refs]
    owner = np.concatenate([np.full(len(d), i, np.int64) for i, d in enumerate(ref_des)] or [np.zeros(0)])
    if len(owner) < 2:
        return {}
    k = min(K_NEIGHBOURS, len(owner))
    cv2.setRNGSeed(0)  # FLANN's randomised trees: the same candidates in every run
    matcher = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 64})
    matcher.add([np.concatenate(ref_des).astype(np.float32)])
    matcher.train()
    out = {}
    for qi, q in enumerate(queries):
        des = cache.get(q).descriptors
        if len(des) < 2:
            continue
        votes: Counter = Counter()
        for neighbours in matcher.knnMatch(des.astype(np.float32), k=k):
            if not neighbours:
                continue
            far = neighbours[-1].distance
            seen = set()
            for m in neighbours:
                o = int(owner[m.trainIdx])
                if o not in seen and m.distance < 0.8 * far and not (same and o == qi):
                    votes[o] += 1
                seen.add(o)
        best = sorted(votes.items(), key=lambda ov: (-ov[1], ov[0]))[: params.candidates]
        out[qi] = [o for o, n in best if n >= params.min_votes]
    return out


def ncc(a: np.ndarray, b: np.ndarray, affine: np.ndarray, points_b: np.ndarray) -> float:
    """Normalised cross-correlation of ``a`` warped onto ``b`` over the hull of the matched points."""
    h, w = b.shape
    warped = cv2.warpAffine(a.astype(np.float32), affine, (w, h), flags=cv2.INTER_AREA)
    valid = cv2.warpAffine(np.ones(a.shape, np.uint8), affine, (w, h), flags=cv2.INTER_NEAREST) > 0
    hull = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(points_b).astype(np.int32)), 1)
    mask = cv2.erode(((hull > 0) & valid).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if mask.sum() < 100:
        return 0.0
    x = cv2.GaussianBlur(warped, (0, 0), 1.0)[mask]
    y = cv2.GaussianBlur(b.astype(np.float32), (0, 0), 1.0)[mask]
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum() + 1e-9))


def verify(a: Item, b: Item, cache: FeatureCache, params: CropParams) -> dict | None:
    """The evidence that ``a`` and ``b`` show one photo, or None."""
    fa, fb = cache.get(a), cache.get(b)
    if len(fa.descriptors) < 2 or len(fb.descriptors) < 2:
        return None
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    knn = matcher.knnMatch(fa.descriptors.astype(np.float32), fb.descriptors.astype(np.float32), k=2)
    best: dict[int, cv2.DMatch] = {}
    for pair in knn:
        if len(pair) == 2 and pair[0].distance < params.ratio * pair[1].distance:
            m = pair[0]
            if m.trainIdx not in best or m.distance < best[m.trainIdx].distance:
                best[m.trainIdx] = m  # one keypoint cannot explain many: no collapsed matches
    if len(best) < params.min_inliers:
        return None
    matches = sorted(best.values(), key=lambda m: (m.queryIdx, m.trainIdx))
    src = fa.points[[m.queryIdx for m in matches]]
    dst = fb.points[[m.trainIdx for m in matches]]
    affine, mask = cv2.estimateAffine2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0, maxIters=2000, confidence=0.995
    )
    if affine is None:
        return None
    inliers = mask.ravel().astype(bool)
    n = int(inliers.sum())
    s_max, s_min = np.linalg.svd(affine[:, :2], compute_uv=False)
    plausible = (
        np.linalg.det(affine[:, :2]) > 0
        and s_min >= 1 / params.max_scale
        and s_max <= params.max_scale
        and s_max <= params.max_anisotropy * s_min
    )
    if n < params.min_inliers or not plausible:
        return None
    evidence = {"inliers": n, "scale": round(float(np.sqrt(s_max * s_min)), 3)}
    if n < params.sure_inliers:  # few inliers: the aligned pixels must agree too
        c = ncc(gray(a.path, params.max_side), gray(b.path, params.max_side), affine, dst[inliers])
        if c < params.min_ncc:
            return None
        evidence["ncc"] = round(c, 4)
    return evidence


def crop_pairs(
    queries: Sequence[Item], refs: Sequence[Item], cache: FeatureCache, params: CropParams
) -> list[dict]:
    """Verified pairs ``{"a": query ident, "b": reference ident, "inliers": ..., ...}``.

    ``refs`` may be ``queries`` itself: an image is never paired with itself, each pair once.
    """
    same = queries is refs
    out, seen = [], set()
    for qi, candidates in vote(queries, refs, cache, params, same).items():
        for ri in candidates:
            a, b = queries[qi], refs[ri]
            key = (min(a.ident, b.ident), max(a.ident, b.ident))
            if key in seen:
                continue
            seen.add(key)
            evidence = verify(a, b, cache, params)
            if evidence is not None:
                out.append({"a": a.ident, "b": b.ident, **evidence})
    return out
