"""Scan one class-per-folder root or several sources, find duplicate groups, split without leakage.

``python -m skinlesion.prepare [data=multisource] [data.root=...]`` writes, under
``outputs/prepared/<root-name or source names>-<key>/``:

- ``manifest.csv`` (path, sha256, label, group, split, and ``source`` when there are several
  sources; paths are relative to their source's root), byte-identical for the same inputs and seed;
- ``report.json`` and ``report.md``: counts per class per split (and per source), duplicate groups
  with the evidence that joined them, label conflicts, and every file left out with the reason.

Exact duplicates share a SHA-256 of their bytes; near-duplicates agree on at least ``min_votes``
of three perceptual hashes (pHash, dHash, wHash) within their thresholds; with
``crop_duplicates.enabled`` crops are found by verified SIFT matches (:mod:`skinlesion.data.crops`),
across sources by default. A source's ``group_pattern`` joins a patient's images. All of these are
joined into groups with a union-find, a group never straddles two splits, and a group carrying two
labels (label noise, also across sources) is kept out of val and test. With
``data.split.grouped: false`` (the published papers' protocol, for ``make leakage-audit``) files are
split one by one: the ``group`` column still names each file's duplicate group, but groups may
straddle the splits and label conflicts are not kept out.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skinlesion.core.artifacts import atomic_write_bytes
from skinlesion.core.errors import DataError
from skinlesion.data.crops import CropParams, FeatureCache, Item, crop_pairs
from skinlesion.data.duplicates import NearDuplicateParams, find_duplicate_pairs, group_records, merge_pairs
from skinlesion.data.overview import ALL_SPLITS, build_report, render_markdown
from skinlesion.data.scan import ImageRecord, fingerprint, scan
from skinlesion.data.sources import Source, patient_links, resolve_sources, scan_source
from skinlesion.data.splits import SplitParams, file_splits

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "sha256", "label", "group", "split")
SOURCE_COLUMNS = (*MANIFEST_COLUMNS, "source")


@dataclass(frozen=True)
class PrepareParams:
    class_names: tuple[str, ...] | None = None
    split: SplitParams = field(default_factory=SplitParams)
    near_duplicates: NearDuplicateParams = field(default_factory=NearDuplicateParams)
    conflicts: str = "train"  # "train": keep label-conflict groups in train only; "exclude": drop them
    sources: tuple[Source, ...] = ()  # () : the single root of data.root, as before sources existed
    crops: CropParams = field(default_factory=CropParams)

    @classmethod
    def from_config(
        cls,
        class_names: Sequence[str] | None,
        split: dict | None,
        near_duplicates: dict | None,
        conflicts: str,
        sources: dict | Sequence[dict] | None = None,
        crop_duplicates: dict | None = None,
    ) -> PrepareParams:
        if conflicts not in ("train", "exclude"):
            raise DataError(f"data.conflicts must be 'train' or 'exclude', got {conflicts!r}")
        sp = SplitParams(**(split or {}))
        if min(sp.train, sp.val, sp.test) < 0 or abs(sp.train + sp.val + sp.test - 1.0) > 1e-6:
            raise DataError(f"data.split fractions must be >= 0 and sum to 1, got {asdict(sp)}")
        if not isinstance(sp.grouped, bool):
            raise DataError(f"data.split.grouped must be true or false, got {sp.grouped!r}")
        m = sp.min_val_per_class
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise DataError(
                f"data.split.min_val_per_class must be a whole number >= 0, got {sp.min_val_per_class!r}"
            )
        return cls(
            class_names=tuple(class_names) if class_names else None,
            split=sp,
            near_duplicates=NearDuplicateParams(**(near_duplicates or {})),
            conflicts=conflicts,
            sources=resolve_sources(sources, class_names) if sources else (),
            crops=CropParams(**(crop_duplicates or {})),
        )

    def as_dict(self) -> dict:
        """The parameters as JSON-ready data; the newer fields only when set, so that a single root's
        key (its prepared folder) is the one it had before sources (or ``split.grouped``) existed."""
        d = json.loads(json.dumps(asdict(self)))
        if self.split.grouped:
            del d["split"]["grouped"]
        if not self.split.min_val_per_class:
            del d["split"]["min_val_per_class"]
        if not self.sources:
            del d["sources"]
        if self.crops == CropParams():
            del d["crops"]
        return d

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:8]


def manifest_bytes(
    records: list[ImageRecord], groups: list[str], splits: list[str], with_source: bool = False
) -> bytes:
    """The manifest CSV: one row per file (its group and its split), sorted by file."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SOURCE_COLUMNS if with_source else MANIFEST_COLUMNS)
    for r, g, s in sorted(zip(records, groups, splits, strict=True), key=lambda rgs: rgs[0].ident):
        w.writerow([r.path, r.sha256, r.label, g, s, *([r.source] if with_source else [])])
    return buf.getvalue().encode()


def groups_across_splits(
    records: list[ImageRecord], groups: list[str], splits: list[str], pairs: list[dict]
) -> list[dict]:
    """The report's duplicate groups when files were split one by one: each with every split its
    members landed in (``train+test``: a test image has a twin in train)."""
    members: dict[str, list[tuple[ImageRecord, str]]] = defaultdict(list)
    for r, g, s in zip(records, groups, splits, strict=True):
        members[g].append((r, s))
    group_of = {r.ident: g for r, g in zip(records, groups, strict=True)}
    pairs_of: dict[str, list[dict]] = defaultdict(list)
    for p in pairs:
        pairs_of[group_of[p["a"]]].append(p)
    return [
        {
            "group": g,
            "split": "+".join(s for s in ALL_SPLITS if any(landed == s for _, landed in members[g])),
            "members": sorted(r.ident for r, _ in members[g]),
            "labels": sorted({r.label for r, _ in members[g]}),
            "pairs": pairs_of[g],
        }
        for g in sorted(pairs_of)
    ]


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a manifest CSV (with a ``source`` column or, from a single root, without one);
    raises DataError when it is missing or malformed."""
    if not path.is_file():
        raise DataError(f"manifest {path} not found; run `python -m skinlesion.prepare` first")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) not in (MANIFEST_COLUMNS, SOURCE_COLUMNS):
            raise DataError(f"manifest {path} has columns {reader.fieldnames}, expected {SOURCE_COLUMNS}")
        return list(reader)


def refuse_outputs_inside(data_root: Path, *outputs: Path) -> None:
    """The data root is only ever read: no output (prepared data, runs) may live inside it."""
    root = Path(data_root).resolve()
    for out in outputs:
        if Path(out).resolve().is_relative_to(root):
            raise DataError(
                f"{out} is inside the data root {root}; outputs must go elsewhere "
                "(set paths.output_root or hydra.run.dir outside the data)"
            )


def data_roots(root: Path, params: PrepareParams) -> dict[str, Path]:
    """Source name -> root folder: each configured source, or ``"" -> root`` for a single root."""
    return {s.name: s.root for s in params.sources} if params.sources else {"": Path(root)}


def data_fingerprint(root: Path, params: PrepareParams) -> str:
    """A cheap digest of every root's listing, to notice changed data."""
    if not params.sources:
        return fingerprint(Path(root)) if Path(root).is_dir() else ""
    h = hashlib.sha256()
    for name, r in data_roots(root, params).items():
        h.update(f"{name}\0{fingerprint(r) if r.is_dir() else ''}\n".encode())
    return h.hexdigest()


def collect(root: Path, params: PrepareParams) -> tuple[list[ImageRecord], list[dict], list[str]]:
    """(records, files left out, class names) of the single root or of every source."""
    if not params.sources:
        return scan(root, params.class_names)
    records: list[ImageRecord] = []
    excluded: list[dict] = []
    names = list(params.class_names or ())
    for source in params.sources:
        recs, left_out = scan_source(source, names)
        records += recs
        excluded += left_out
    missing = sorted(set(names) - {r.label for r in records})
    if missing:
        raise DataError(
            f"no source holds an image of the class(es) {missing}; every class needs at least one "
            f"(sources: {[s.name for s in params.sources]})"
        )
    return records, excluded, names


def crop_duplicate_pairs(
    root: Path, cache_dir: Path, params: PrepareParams, records: list[ImageRecord]
) -> list[dict]:
    """Verified crop pairs: across sources (each source against the ones after it) or all pairs."""
    roots = data_roots(root, params)
    items = [Item(r.ident, r.sha256, roots[r.source] / r.path) for r in records]
    cache = FeatureCache(cache_dir, params.crops)
    if params.crops.scope == "all":
        return crop_pairs(items, items, cache, params.crops)
    names = list(roots)
    pairs = []
    for i, name in enumerate(names[:-1]):
        queries = [it for it, r in zip(items, records, strict=True) if r.source == name]
        refs = [it for it, r in zip(items, records, strict=True) if r.source in names[i + 1 :]]
        pairs += crop_pairs(queries, refs, cache, params.crops)
    return pairs


def prepare(root: Path, out_dir: Path, params: PrepareParams) -> dict:
    """Run the whole preparation and write manifest.csv, report.json and report.md."""
    root, out_dir = Path(root), Path(out_dir)
    for r in data_roots(root, params).values():
        refuse_outputs_inside(r, out_dir)
    fp = data_fingerprint(root, params)
    records, excluded, names = collect(root, params)
    pairs = find_duplicate_pairs(records, params.near_duplicates)
    if params.crops.enabled:
        crops = crop_duplicate_pairs(root, out_dir.parent / "features", params, records)
        pairs = merge_pairs(records, pairs, crops)
    links, patients = patient_links(records, params.sources)
    groups = group_records(records, pairs, links)
    by_source = [r.source for r in records] if len(params.sources) > 1 else None
    labels = [r.label for r in records]
    idents = [r.ident for r in records]
    splits, conflicts = file_splits(labels, groups, idents, params.split, params.conflicts, by_source, names)
    manifest = manifest_bytes(records, groups, splits, with_source=bool(params.sources))
    units = groups if params.split.grouped else idents
    report = build_report(records, units, dict(zip(units, splits, strict=True)), conflicts, pairs, names)
    if not params.split.grouped:
        report["duplicate_groups"] = groups_across_splits(records, groups, splits, pairs)
    report = {
        "root": str(root.resolve()),
        "class_names": names,
        "params": params.as_dict(),
        "fingerprint": fp,
        **report,
        "excluded": excluded,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
    }
    if params.sources:
        report["sources"] = [asdict(s) | {"patients": patients.get(s.name)} for s in params.sources]
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
    """Where prepare writes for this root (or these sources) and these parameters."""
    if params.sources:
        return Path(base) / f"{'+'.join(s.name for s in params.sources)}-{params.key()}"
    key = hashlib.sha256(f"{Path(root).resolve()}\0{params.key()}".encode()).hexdigest()[:8]
    return Path(base) / f"{Path(root).resolve().name or 'root'}-{key}"


def ensure_prepared(root: Path, base: Path, params: PrepareParams, force: bool = False) -> tuple[Path, dict]:
    """Return (manifest path, report), preparing again only when the data or parameters changed."""
    out = prepared_dir(base, root, params)
    report_path = out / "report.json"
    if not force and report_path.is_file() and (out / "manifest.csv").is_file():
        report = json.loads(report_path.read_text())
        if report.get("params") == params.as_dict() and report.get("fingerprint") == data_fingerprint(
            Path(root), params
        ):
            return out / "manifest.csv", report
    return out / "manifest.csv", prepare(Path(root), out, params)
