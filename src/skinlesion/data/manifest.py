"""Scan a class-per-folder image root, find duplicate groups, split without leakage, report.

``python -m skinlesion.prepare [data.root=...]`` writes, under
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
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skinlesion.core.artifacts import atomic_write_bytes
from skinlesion.core.errors import DataError
from skinlesion.data.duplicates import NearDuplicateParams, find_duplicate_pairs, group_records
from skinlesion.data.scan import ImageRecord, fingerprint, scan
from skinlesion.data.splits import SPLITS, SplitParams, assign_splits

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "sha256", "label", "group", "split")


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


# ----------------------------------------------------------------------------------------------
# Root and folders


# ----------------------------------------------------------------------------------------------
# Scanning and hashing


# ----------------------------------------------------------------------------------------------
# Grouping


# ----------------------------------------------------------------------------------------------
# Splitting


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
        raise DataError(f"manifest {path} not found; run `python -m skinlesion.prepare` first")
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
    mapping, conflicts = assign_splits([r.label for r in records], groups, params.split, params.conflicts)
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
