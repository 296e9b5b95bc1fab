"""Data sources: any class-per-folder root, its folders mapped onto the project's classes.

A source is one YAML file under ``conf/data/source/`` (see ``conf/data/multisource.yaml``): its
``name`` (the manifest's ``source`` column), its ``path``, a ``label_map`` from its folder names to
the project's classes (``Healthy: Normal``), the folders ``outside`` the classes (kept in the
manifest with their own label, never trained as one of the classes), and optionally a
``group_pattern``: a regular expression whose first group reads a patient (or other group) id from
a file name, so that a patient's images never straddle two splits. Every mistake in one of them is
refused here, before anything is scanned, with a message that names it.
"""

from __future__ import annotations

import itertools
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from skinlesion.core.errors import ConfigError, DataError
from skinlesion.core.paths import default_data_root
from skinlesion.data.images import printable
from skinlesion.data.scan import ImageRecord, missing_root_message, scan_folders

SOURCE_KEYS = ("name", "path", "label_map", "outside", "group_pattern")


@dataclass(frozen=True)
class Source:
    """One configured source; ``path`` is absolute once :func:`resolve_sources` has run."""

    name: str
    path: str
    label_map: tuple[tuple[str, str], ...] = ()  # (folder, class), sorted
    outside: tuple[str, ...] = ()
    group_pattern: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.path)


def default_source_root(name: str) -> Path:
    """``msid`` is the default data root; any other source lies beside it, in a folder of its name."""
    msid = default_data_root()
    return msid if name == "msid" else msid.parent / name


def source_from_config(slot: str, spec: Mapping) -> Source:
    """A :class:`Source` from one ``data.sources`` entry (``slot`` names it when ``name`` is absent)."""
    unknown = sorted(set(spec) - set(SOURCE_KEYS))
    if unknown:
        raise ConfigError(f"data source {slot!r}: unknown key(s) {unknown}; a source has {list(SOURCE_KEYS)}")
    name = str(spec.get("name") or slot)
    label_map = spec.get("label_map") or {}
    if not isinstance(label_map, Mapping):
        raise ConfigError(f"source {name!r}: label_map must map folder names to classes, got {label_map!r}")
    outside = spec.get("outside") or ()
    if isinstance(outside, str):
        outside = (outside,)
    path = spec.get("path")
    root = Path(path) if path else default_source_root(name)
    return Source(
        name=name,
        path=str(root.resolve()),
        label_map=tuple(sorted((str(k), str(v)) for k, v in label_map.items())),
        outside=tuple(str(o) for o in outside),
        group_pattern=spec.get("group_pattern") or None,
    )


def resolve_sources(
    sources: Mapping[str, Mapping] | Sequence[Mapping], class_names: Sequence[str] | None
) -> tuple[Source, ...]:
    """Validate the configured sources (names and paths unique, classes known, patterns valid)."""
    entries = (
        sources.items() if isinstance(sources, Mapping) else ((str(i), s) for i, s in enumerate(sources))
    )
    resolved = [source_from_config(slot, spec) for slot, spec in entries if spec is not None]
    if not resolved:
        raise ConfigError("data.sources is empty: name at least one source")
    if not class_names:
        raise ConfigError("data.class_names must be given when data.sources are")
    seen: dict[str, Source] = {}
    paths: dict[str, str] = {}
    for s in resolved:
        if s.name in seen:
            raise ConfigError(
                f"two data sources share the name {s.name!r} ({seen[s.name].path} and {s.path})"
            )
        if s.path in paths:
            raise ConfigError(f"data sources {paths[s.path]!r} and {s.name!r} both read {s.path}")
        if "/" in s.name or not s.name.strip():
            raise ConfigError(f"data source name {s.name!r} must be non-empty and hold no '/'")
        seen[s.name], paths[s.path] = s, s.name
        unknown = sorted({cls for _, cls in s.label_map} - set(class_names))
        if unknown:
            raise ConfigError(
                f"source {s.name!r}: label_map names unknown class(es) {unknown}; "
                f"the classes are {list(class_names)}"
            )
        clash = sorted(set(s.outside) & ({f for f, _ in s.label_map} | set(class_names)))
        if clash:
            raise ConfigError(f"source {s.name!r}: folder(s) {clash} are both outside and mapped to a class")
        if s.group_pattern is not None:
            try:
                pattern = re.compile(s.group_pattern)
            except re.error as e:
                raise ConfigError(
                    f"source {s.name!r}: group_pattern {s.group_pattern!r} is invalid: {e}"
                ) from e
            if pattern.groups < 1:
                raise ConfigError(f"source {s.name!r}: group_pattern needs a (group) that captures the id")
    return tuple(resolved)


def common_root(roots: Sequence[Path]) -> Path:
    """The deepest folder that holds every root (the datasets' paths are relative to it)."""
    return Path(os.path.commonpath([str(Path(r).resolve()) for r in roots]))


def move_sources(sources: Sequence[Source], root: str | os.PathLike | None) -> tuple[Source, ...]:
    """The sources as they lie under ``root`` now, laid out there as they were under their common
    root (``data.root=...`` when the data moved); unchanged when ``root`` is None."""
    if not root:
        return tuple(sources)
    old = common_root([s.root for s in sources])
    return tuple(replace(s, path=str((Path(root) / s.root.relative_to(old)).resolve())) for s in sources)


def source_folders(source: Source, class_names: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """(folder -> label, ignored top-level entries) of one source; raises DataError for bad folders."""
    root = source.root
    if not root.is_dir():
        if source.name == "msid" and not root.exists():
            raise DataError(missing_root_message(root))
        raise DataError(f"source {source.name!r}: path {root} does not exist or is not a directory")
    entries = sorted(os.listdir(root))
    folders = [e for e in entries if (root / e).is_dir() and not e.startswith(".") and printable(e) == e]
    label_map = dict(source.label_map)
    missing = sorted((set(label_map) | set(source.outside)) - set(folders))
    if missing:
        raise DataError(
            f"source {source.name!r}: label_map/outside name folder(s) {missing} that {root} lacks; "
            f"it holds {folders or 'no folders'}"
        )
    mapping = {}
    for f in folders:
        if f in source.outside:
            mapping[f] = f
        elif f in label_map:
            mapping[f] = label_map[f]
        elif f in class_names:
            mapping[f] = f
    if not any(label in class_names for label in mapping.values()):
        raise DataError(
            f"source {source.name!r}: no folder of {root} is one of the classes {list(class_names)} "
            f"(it holds {folders or 'no folders'}); map its folders with label_map"
        )
    ignored = [printable(e) for e in entries if e not in mapping]
    return mapping, ignored


def scan_source(source: Source, class_names: Sequence[str]) -> tuple[list[ImageRecord], list[dict]]:
    """Records of one source (paths relative to its root) and its files left out, named ``<source>/...``."""
    folders, ignored = source_folders(source, class_names)
    excluded = [{"path": e, "reason": "not a class folder (ignored)"} for e in ignored]
    records = scan_folders(source.root, folders, excluded, source.name)
    for e in excluded:
        e["path"] = f"{source.name}/{e['path']}"
    return records, excluded


def patient_links(records: Sequence[ImageRecord], sources: Sequence[Source]) -> tuple[list[tuple], dict]:
    """Pairs of records that share a patient id (chained per patient) and, per source, how many files
    the pattern read an id from. Raises DataError for a pattern that matches no file of its source."""
    links: list[tuple[str, str]] = []
    matched: dict[str, dict] = {}
    for s in sources:
        if s.group_pattern is None:
            continue
        pattern = re.compile(s.group_pattern)
        members: dict[str, list[str]] = defaultdict(list)
        mine = [r for r in records if r.source == s.name]
        for r in mine:
            m = pattern.search(Path(r.path).name)
            if m:
                members[m.group(1)].append(r.ident)
        n = sum(len(v) for v in members.values())
        if n == 0:
            raise DataError(
                f"source {s.name!r}: group_pattern {s.group_pattern!r} matches none of its "
                f"{len(mine)} file names (e.g. {Path(mine[0].path).name if mine else 'none'})"
            )
        for ids in members.values():
            links += list(itertools.pairwise(ids))
        matched[s.name] = {"files": n, "unmatched": len(mine) - n, "patients": len(members)}
    return links, matched


def holdout_rows(
    rows: list[dict[str, str]], holdout: str, class_names: Sequence[str]
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Leave one source out: the manifest as a run that never sees ``holdout`` should use it.

    Every in-class photo of the held-out source is test, except those whose group (a duplicate,
    a crop, a patient) also holds a train or val photo of another source: the model has seen
    them, so they are excluded and counted. The other sources keep their train and val rows;
    their own test rows are excluded, so that the test split is the unseen source alone. The
    held-out source's rashes outside the classes are excluded too (nothing may be fitted on them).
    """
    names = {r.get("source", "") for r in rows}
    if holdout not in names:
        raise ConfigError(f"data.holdout={holdout!r} is not a source of this data; sources: {sorted(names)}")
    seen = {r["group"] for r in rows if r.get("source") != holdout and r["split"] in ("train", "val")}
    out, counts = [], {"test": 0, "seen_elsewhere": 0, "outside_classes": 0}
    for r in rows:
        split = r["split"]
        if r.get("source") == holdout:
            reason = (
                "outside_classes"
                if r["label"] not in class_names
                else ("seen_elsewhere" if r["group"] in seen else "test")
            )
            counts[reason] += 1
            split = "test" if reason == "test" else "excluded"
        elif split == "test":
            split = "excluded"
        out.append(r | {"split": split})
    if not counts["test"]:
        raise DataError(f"data.holdout={holdout!r} leaves no test photo: another source holds every one")
    return out, counts
