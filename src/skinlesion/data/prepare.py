"""Scan a class-per-folder image root, find duplicate groups, split without leakage, report.

``python -m skinlesion.data.prepare [data.root=...]`` writes, under
``outputs/prepared/<root-name>-<key>/``:

- ``manifest.csv`` (path, sha256, label, group, split), byte-identical for the same inputs and seed;
- ``report.json`` and ``report.md``: counts per class per split, duplicate groups with the evidence
  that joined them, label conflicts, and every file left out with the reason.

Exact duplicates share a SHA-256 of their bytes; near-duplicates agree on at least ``min_votes``
of three perceptual hashes (pHash, dHash, wHash) within their thresholds. Both are joined into
groups with a union-find, a group never straddles two splits, and a group carrying two labels
(label noise) is kept out of val and test.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash
import numpy as np

from skinlesion.data.images import decode_image, printable, read_bytes
from skinlesion.errors import DataError, ImageDecodeError
from skinlesion.runs import atomic_write_bytes

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "sha256", "label", "group", "split")
SPLITS = ("train", "val", "test")
KAGGLE_DATASET = "dipuiucse/monkeypoxskinimagedataset"


@dataclass(frozen=True)
class SplitParams:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    seed: int = 42


@dataclass(frozen=True)
class NearDuplicateParams:
    """Two images are near-duplicates when >= min_votes of the hash distances are within bounds."""

    enabled: bool = True
    phash: int = 10
    dhash: int = 10
    whash: int = 6
    min_votes: int = 2


@dataclass(frozen=True)
class PrepareParams:
    class_names: tuple[str, ...] | None = None
    split: SplitParams = field(default_factory=SplitParams)
    near_duplicates: NearDuplicateParams = field(default_factory=NearDuplicateParams)
    conflicts: str = "train"  # "train": keep label-conflict groups in train only; "exclude": drop them

    @classmethod
    def from_config(
        cls,
        class_names: Sequence[str] | None,
        split: dict | None,
        near_duplicates: dict | None,
        conflicts: str,
    ) -> PrepareParams:
        if conflicts not in ("train", "exclude"):
            raise DataError(f"data.conflicts must be 'train' or 'exclude', got {conflicts!r}")
        sp = SplitParams(**(split or {}))
        if min(sp.train, sp.val, sp.test) < 0 or abs(sp.train + sp.val + sp.test - 1.0) > 1e-6:
            raise DataError(f"data.split fractions must be >= 0 and sum to 1, got {asdict(sp)}")
        return cls(
            class_names=tuple(class_names) if class_names else None,
            split=sp,
            near_duplicates=NearDuplicateParams(**(near_duplicates or {})),
            conflicts=conflicts,
        )

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


@dataclass
class ImageRecord:
    path: str  # relative to the root, POSIX separators
    label: str
    sha256: str
    hashes: dict[str, np.ndarray]  # name -> packed bits (uint8)


# ----------------------------------------------------------------------------------------------
# Root and folders


def missing_root_message(root: Path) -> str:
    return (
        f"data root {root} does not exist.\n"
        f"Get the MSID dataset from Kaggle ({KAGGLE_DATASET}):\n"
        f"  kaggle datasets download -d {KAGGLE_DATASET} && unzip monkeypoxskinimagedataset.zip\n"
        "then point data.root (or $SKINLESION_DATA) at the folder that holds the class folders "
        "Chickenpox/ Measles/ Monkeypox/ Normal/ (the 'Original Images' set, not the augmented one),\n"
        "or put them under data/msid/ in the checkout. With Kaggle credentials set "
        "(~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY) and `pip install kagglehub`, "
        "data.download=true fetches it."
    )


def class_folders(root: Path, class_names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Return (class names, ignored top-level entries). Raises DataError for wrong folders."""
    if not root.exists():
        raise DataError(missing_root_message(root))
    if not root.is_dir():
        raise DataError(f"data root {root} is not a directory")
    entries = sorted(os.listdir(root))
    # a folder name that is not UTF-8 cannot be a class name in the manifest
    folders = [e for e in entries if (root / e).is_dir() and not e.startswith(".") and printable(e) == e]
    if class_names:
        missing = [c for c in class_names if c not in folders]
        if missing:
            raise DataError(
                f"data root {root} lacks the class folder(s) {missing}; it holds {folders or 'no folders'}. "
                "Expected one folder per class: " + ", ".join(class_names)
            )
        names = list(class_names)
    else:
        names = folders
        if len(names) < 2:
            raise DataError(f"data root {root} needs at least two class folders, found {folders}")
    ignored = [printable(e) for e in entries if e not in names]
    return names, ignored


def iter_class_files(root: Path, name: str) -> list[Path]:
    """All files below one class folder, sorted, without following directory links."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root / name, followlinks=False):
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in sorted(filenames))
    return out


def fingerprint(root: Path) -> str:
    """A cheap digest of the tree's listing (path, size, mtime) to notice changed data."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            rel = os.fsencode(p.relative_to(root).as_posix())  # any bytes, UTF-8 or not
            try:
                st = p.stat()
                h.update(rel + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(rel + b"\0unreadable\n")
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Scanning and hashing


def _packed(h: imagehash.ImageHash) -> np.ndarray:
    return np.packbits(np.asarray(h.hash, dtype=bool).ravel())


def scan(root: Path, class_names: Sequence[str] | None) -> tuple[list[ImageRecord], list[dict], list[str]]:
    """Decode every file fully; return (records, excluded files with reasons, class names)."""
    names, ignored = class_folders(root, class_names)
    excluded = [{"path": e, "reason": "not a class folder (ignored)"} for e in ignored]
    records: list[ImageRecord] = []
    for name in names:
        kept = 0
        for p in iter_class_files(root, name):
            rel = p.relative_to(root).as_posix()
            if p.name.startswith("."):
                excluded.append({"path": printable(rel), "reason": "hidden file"})
                continue
            if printable(rel) != rel:
                reason = "file name is not valid UTF-8 (the manifest cannot name it); rename the file"
                excluded.append({"path": printable(rel), "reason": reason})
                continue
            try:
                data = read_bytes(p)
                image = decode_image(data, rel)  # the bytes that are hashed are the bytes decoded
            except ImageDecodeError as e:
                excluded.append({"path": rel, "reason": str(e).replace(printable(p), rel)})
                continue
            hashes = {
                "phash": _packed(imagehash.phash(image)),
                "dhash": _packed(imagehash.dhash(image)),
                "whash": _packed(imagehash.whash(image)),
            }
            records.append(ImageRecord(rel, name, hashlib.sha256(data).hexdigest(), hashes))
            kept += 1
        if kept == 0:
            raise DataError(
                f"class folder {root / name} holds no usable images; every class needs at least one. "
                f"Files left out there: {[e for e in excluded if e['path'].startswith(name + '/')]}"
            )
    return records, excluded, names


# ----------------------------------------------------------------------------------------------
# Grouping


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
        iu, ju = np.nonzero(np.triu(votes >= near.min_votes, k=1))
        candidates = set(zip(iu.tolist(), ju.tolist(), strict=True)) | exact
    else:
        candidates = exact
    for a, b in sorted(candidates):
        pair = {"a": records[a].path, "b": records[b].path, "exact": (a, b) in exact}
        pair.update({k: int(d[a, b]) for k, d in dists.items()})
        pairs.append(pair)
    return pairs


def group_records(records: list[ImageRecord], pairs: list[dict]) -> list[str]:
    """Group id per record: connected components of the duplicate pairs, numbered by first path."""
    index = {r.path: i for i, r in enumerate(records)}
    uf = UnionFind(len(records))
    for p in pairs:
        uf.union(index[p["a"]], index[p["b"]])
    roots: dict[int, str] = {}
    ids = []
    for i in sorted(range(len(records)), key=lambda k: records[k].path):
        roots.setdefault(uf.find(i), f"g{len(roots):05d}")
    for i in range(len(records)):
        ids.append(roots[uf.find(i)])
    return ids


# ----------------------------------------------------------------------------------------------
# Splitting


def allocate_groups(labels: dict[str, list[str]], fractions: dict, seed: int) -> tuple[dict, list[str]]:
    """Stratified, grouped allocation of whole groups to bins (splits or folds) by target fraction.

    ``labels`` maps each group to its members' labels. Per class, the groups are shuffled and each
    goes to the bin furthest below its target share of that class's images (ties: the first bin in
    ``fractions``), so every bin gets its share of every class and no group is ever cut. Groups
    carrying two labels get no bin; they come back, sorted, as the second value.
    """
    by_class: dict[str, list[str]] = defaultdict(list)
    conflicts = []
    for g in sorted(labels):
        distinct = set(labels[g])
        if len(distinct) > 1:
            conflicts.append(g)
        else:
            by_class[distinct.pop()].append(g)
    rng = random.Random(seed)
    mapping: dict = {}
    for label in sorted(by_class):
        gs = by_class[label]
        rng.shuffle(gs)
        total = sum(len(labels[g]) for g in gs)
        count = dict.fromkeys(fractions, 0)
        for g in gs:
            chosen = max(fractions, key=lambda b: fractions[b] * total - count[b])
            mapping[g] = chosen
            count[chosen] += len(labels[g])
    return mapping, conflicts


def assign_splits(
    records: list[ImageRecord], groups: list[str], params: PrepareParams
) -> tuple[dict[str, str], list[str]]:
    """Map group -> split, stratified by class and grouped; returns (mapping, conflict groups)."""
    labels: dict[str, list[str]] = defaultdict(list)
    for r, g in zip(records, groups, strict=True):
        labels[g].append(r.label)
    fractions = {"train": params.split.train, "val": params.split.val, "test": params.split.test}
    mapping, conflicts = allocate_groups(labels, fractions, params.split.seed)
    for g in conflicts:
        mapping[g] = "train" if params.conflicts == "train" else "excluded"
    return mapping, conflicts


def assign_folds(rows: list[dict[str, str]], n_folds: int, seed: int) -> dict[str, int | None]:
    """Group -> fold for cross-validation over the given manifest rows, by the split's rules.

    Stratified by class and grouped like :func:`assign_splits`; a label-conflict group gets no fold
    (None): it is only ever in the training part.
    """
    if n_folds < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got n_folds={n_folds}")
    labels: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        labels[r["group"]].append(r["label"])
    mapping, conflicts = allocate_groups(labels, dict.fromkeys(range(n_folds), 1 / n_folds), seed)
    return mapping | dict.fromkeys(conflicts)


def fold_rows(rows: list[dict[str, str]], fold: int, n_folds: int, seed: int) -> list[dict[str, str]]:
    """The manifest with train + val re-split for one fold: that fold's groups are val, the rest train.

    The test rows (and excluded ones) are left as they are: cross-validation never touches them.
    """
    if not 0 <= fold < n_folds:
        raise DataError(f"fold must be in 0..{n_folds - 1} for n_folds={n_folds}, got {fold}")
    pool = [r for r in rows if r["split"] in ("train", "val")]
    folds = assign_folds(pool, n_folds, seed)
    out = []
    for r in rows:
        if r["split"] in ("train", "val"):
            r = r | {"split": "val" if folds[r["group"]] == fold else "train"}
        out.append(r)
    return out


# ----------------------------------------------------------------------------------------------
# Writing


def manifest_bytes(records: list[ImageRecord], groups: list[str], mapping: dict[str, str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for r, g in sorted(zip(records, groups, strict=True), key=lambda rg: rg[0].path):
        w.writerow([r.path, r.sha256, r.label, g, mapping[g]])
    return buf.getvalue().encode()


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a manifest CSV; raises DataError when it is missing or malformed."""
    if not path.is_file():
        raise DataError(f"manifest {path} not found; run `python -m skinlesion.data.prepare` first")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise DataError(f"manifest {path} has columns {reader.fieldnames}, expected {MANIFEST_COLUMNS}")
        return list(reader)


def render_markdown(report: dict) -> str:
    names = report["class_names"]
    splits = [*SPLITS, "excluded"]
    lines = [
        f"# Data report: `{report['root']}`",
        "",
        f"{report['n_images']} usable images in {len(names)} classes; "
        f"{len(report['excluded'])} files left out; {len(report['duplicate_groups'])} duplicate groups "
        f"({report['n_exact_pairs']} exact pairs, {report['n_near_pairs']} near pairs); "
        f"{len(report['conflicts'])} label conflicts.",
        "",
        "## Images per class and split",
        "",
        "| class | " + " | ".join(splits) + " | total |",
        "|---" * (len(splits) + 2) + "|",
    ]
    for c in names:
        row = [report["counts"][s].get(c, 0) for s in splits]
        lines.append(f"| {c} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")
    totals = [sum(report["counts"][s].values()) for s in splits]
    lines.append("| **all** | " + " | ".join(map(str, totals)) + f" | {sum(totals)} |")
    lines += ["", "## Label conflicts (kept out of val and test)", ""]
    lines += [f"- {g['group']}: " + ", ".join(g["members"]) for g in report["conflicts"]] or ["none"]
    lines += ["", "## Duplicate groups", "", "| group | split | members | evidence |", "|---|---|---|---|"]
    for g in report["duplicate_groups"]:
        ev = "; ".join(
            "exact" if p["exact"] else f"p{p.get('phash')}/d{p.get('dhash')}/w{p.get('whash')}"
            for p in g["pairs"]
        )
        lines.append(f"| {g['group']} | {g['split']} | {', '.join(g['members'])} | {ev} |")
    lines += ["", "## Files left out", ""]
    lines += [f"- `{e['path']}`: {e['reason']}" for e in report["excluded"]] or ["none"]
    p = report["params"]
    lines += [
        "",
        "## Parameters",
        "",
        f"split {p['split']}, near-duplicates {p['near_duplicates']}, conflicts → {p['conflicts']}.",
        f"Manifest SHA-256: `{report['manifest_sha256']}`.",
        "",
    ]
    return "\n".join(lines)


def refuse_outputs_inside(data_root: Path, *outputs: Path) -> None:
    """The data root is only ever read: no output (prepared data, runs) may live inside it."""
    root = Path(data_root).resolve()
    for out in outputs:
        if Path(out).resolve().is_relative_to(root):
            raise DataError(
                f"{out} is inside the data root {root}; outputs must go elsewhere "
                "(set paths.output_root or hydra.run.dir outside the data)"
            )


def prepare(root: Path, out_dir: Path, params: PrepareParams) -> dict:
    """Run the whole preparation and write manifest.csv, report.json and report.md."""
    root = Path(root)
    refuse_outputs_inside(root, out_dir)
    fp = fingerprint(root) if root.is_dir() else ""
    records, excluded, names = scan(root, params.class_names)
    pairs = find_duplicate_pairs(records, params.near_duplicates)
    groups = group_records(records, pairs)
    mapping, conflicts = assign_splits(records, groups, params)
    manifest = manifest_bytes(records, groups, mapping)

    members: dict[str, list[str]] = defaultdict(list)
    for r, g in zip(records, groups, strict=True):
        members[g].append(r.path)
    label_of = {r.path: r.label for r in records}
    group_of = dict(zip((r.path for r in records), groups, strict=True))
    dup_groups = []
    for g in sorted(g for g, m in members.items() if len(m) > 1):
        dup_groups.append(
            {
                "group": g,
                "split": mapping[g],
                "members": sorted(members[g]),
                "labels": sorted({label_of[m] for m in members[g]}),
                "pairs": [p for p in pairs if group_of[p["a"]] == g],
            }
        )
    counts: dict[str, Counter] = {s: Counter() for s in (*SPLITS, "excluded")}
    for r, g in zip(records, groups, strict=True):
        counts[mapping[g]][r.label] += 1
    report = {
        "root": str(root.resolve()),
        "class_names": names,
        "params": asdict(params),
        "fingerprint": fp,
        "n_images": len(records),
        "n_exact_pairs": sum(p["exact"] for p in pairs),
        "n_near_pairs": sum(not p["exact"] for p in pairs),
        "counts": {s: dict(sorted(c.items())) for s, c in counts.items()},
        "duplicate_groups": dup_groups,
        "conflicts": [g for g in dup_groups if g["group"] in conflicts],
        "excluded": excluded,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / "manifest.csv", manifest)
        atomic_write_bytes(out_dir / "report.json", json.dumps(report, indent=2).encode())
        atomic_write_bytes(out_dir / "report.md", render_markdown(report).encode())
    except OSError as e:
        raise DataError(f"cannot write the prepared data to {out_dir}: {e.strerror or e}") from e
    for e in excluded:
        log.warning("left out %s: %s", e["path"], e["reason"])
    return report


def prepared_dir(base: Path, root: Path, params: PrepareParams) -> Path:
    """Where prepare writes for this root and these parameters."""
    key = hashlib.sha256(f"{Path(root).resolve()}\0{params.key()}".encode()).hexdigest()[:8]
    return Path(base) / f"{Path(root).resolve().name or 'root'}-{key}"


def ensure_prepared(root: Path, base: Path, params: PrepareParams, force: bool = False) -> tuple[Path, dict]:
    """Return (manifest path, report), preparing again only when the data or parameters changed."""
    out = prepared_dir(base, root, params)
    report_path = out / "report.json"
    if not force and report_path.is_file() and (out / "manifest.csv").is_file():
        report = json.loads(report_path.read_text())
        if report.get("params") == json.loads(json.dumps(asdict(params))) and report.get(
            "fingerprint"
        ) == fingerprint(Path(root)):
            return out / "manifest.csv", report
    return out / "manifest.csv", prepare(Path(root), out, params)


# ----------------------------------------------------------------------------------------------
# Command line


def run(cfg) -> dict:
    import hydra.utils

    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    report = dm.prepare_data(force=cfg.get("force", True))
    out = dm.manifest_path.parent
    counts = report["counts"]
    print(f"prepared {report['n_images']} images from {report['root']} -> {out}")
    for split in (*SPLITS, "excluded"):
        if counts[split]:
            print(f"  {split:9s} " + "  ".join(f"{c}={n}" for c, n in counts[split].items()))
    print(
        f"  {len(report['duplicate_groups'])} duplicate groups ({report['n_exact_pairs']} exact, "
        f"{report['n_near_pairs']} near pairs), {len(report['conflicts'])} label conflicts, "
        f"{len(report['excluded'])} files left out; see {out / 'report.md'}"
    )
    return report


def _main() -> None:
    import hydra

    from skinlesion.cli import run_task
    from skinlesion.paths import CONF_DIR

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="prepare")
    def main(cfg) -> None:
        run_task(run, cfg)

    main()


if __name__ == "__main__":
    _main()
