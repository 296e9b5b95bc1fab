"""Duplicate groups: exact copies share a SHA-256 of their bytes; near-duplicates agree on at least
``min_votes`` of three perceptual hashes (pHash, dHash, wHash) within their thresholds. Both, the
crops of :mod:`skinlesion.data.crops` and a source's patients are joined into groups with a
union-find, so that a group can be kept on one side of every split."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from skinlesion.data.scan import ImageRecord


@dataclass(frozen=True)
class NearDuplicateParams:
    """Two images are near-duplicates when >= min_votes of the hash distances are within bounds."""

    enabled: bool = True
    phash: int = 10
    dhash: int = 10
    whash: int = 6
    min_votes: int = 2


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def hamming_matrix(packed: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances of packed bit rows, (n, bytes) -> (n, n)."""
    return np.bitwise_count(packed[:, None, :] ^ packed[None, :, :]).sum(-1, dtype=np.int32)


def find_duplicate_pairs(records: list[ImageRecord], near: NearDuplicateParams) -> list[dict]:
    """Every pair that is an exact or near duplicate, with the evidence."""
    n = len(records)
    pairs: list[dict] = []
    by_sha: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_sha[r.sha256].append(i)
    exact = {(a, b) for idx in by_sha.values() for k, a in enumerate(idx) for b in idx[k + 1 :]}
    dists: dict[str, np.ndarray] = {}
    if near.enabled and n > 1:
        for name in ("phash", "dhash", "whash"):
            dists[name] = hamming_matrix(np.stack([r.hashes[name] for r in records]))
        votes = sum((dists[k] <= getattr(near, k)).astype(np.int8) for k in dists)
        near_pairs = votes >= near.min_votes
        sources = np.array([r.source for r in records])
        if len(set(sources)) > 1:
            # Across sources the crop check finds crops; hashes add whole-image copies only: dHash
            # and wHash alone pair unrelated low-texture skin photos (12 of 14 MSID/MSLD v2 pairs
            # that way were different photos, seen by eye), pHash does not.
            across = sources[:, None] != sources[None, :]
            near_pairs &= ~across | (dists["phash"] <= near.phash)
        iu, ju = np.nonzero(np.triu(near_pairs, k=1))
        candidates = set(zip(iu.tolist(), ju.tolist(), strict=True)) | exact
    else:
        candidates = exact
    for a, b in sorted(candidates):
        pair = {"a": records[a].ident, "b": records[b].ident, "exact": (a, b) in exact}
        pair.update({k: int(d[a, b]) for k, d in dists.items()})
        pairs.append(pair)
    return pairs


def merge_pairs(records: list[ImageRecord], pairs: list[dict], extra: list[dict]) -> list[dict]:
    """``pairs`` with the evidence of ``extra`` (e.g. crop matches) added, new pairs appended; each
    pair names its two records in record order, the list is sorted the same way."""
    index = {r.ident: i for i, r in enumerate(records)}
    by_key = {(index[p["a"]], index[p["b"]]): dict(p) for p in pairs}
    for e in extra:
        a, b = sorted((index[e["a"]], index[e["b"]]))
        evidence = {k: v for k, v in e.items() if k not in ("a", "b")}
        by_key.setdefault((a, b), {"a": records[a].ident, "b": records[b].ident, "exact": False})
        by_key[(a, b)].update(evidence)
    return [by_key[k] for k in sorted(by_key)]


def group_records(
    records: list[ImageRecord], pairs: list[dict], links: Sequence[tuple[str, str]] = ()
) -> list[str]:
    """Group id per record: connected components of the duplicate pairs and of ``links`` (e.g. one
    patient's images), numbered in the order of the records' names."""
    index = {r.ident: i for i, r in enumerate(records)}
    uf = UnionFind(len(records))
    for p in pairs:
        uf.union(index[p["a"]], index[p["b"]])
    for a, b in links:
        uf.union(index[a], index[b])
    roots: dict[int, str] = {}
    ids = []
    for i in sorted(range(len(records)), key=lambda k: records[k].ident):
        roots.setdefault(uf.find(i), f"g{len(roots):05d}")
    for i in range(len(records)):
        ids.append(roots[uf.find(i)])
    return ids
