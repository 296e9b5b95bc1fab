"""The data report of a preparation: counts per class, split (and source), duplicate groups with
their evidence, label conflicts, cross-source twins; as JSON data and as markdown."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from skinlesion.data.scan import ImageRecord
from skinlesion.data.splits import SPLITS

ALL_SPLITS = (*SPLITS, "excluded")


def split_counts(records: Sequence[ImageRecord], groups: Sequence[str], mapping: dict) -> dict:
    counts: dict[str, Counter] = {s: Counter() for s in ALL_SPLITS}
    for r, g in zip(records, groups, strict=True):
        counts[mapping[g]][r.label] += 1
    return {s: dict(sorted(c.items())) for s, c in counts.items()}


def twins_across_sources(records: Sequence[ImageRecord], pairs: Sequence[dict]) -> dict:
    """source -> other source -> how many of its files have a duplicate (a pair) in the other."""
    source_of = {r.ident: r.source for r in records}
    tied: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for p in pairs:
        sa, sb = source_of[p["a"]], source_of[p["b"]]
        if sa != sb:
            tied[sa][sb].add(p["a"])
            tied[sb][sa].add(p["b"])
    return {s: {o: len(v) for o, v in sorted(others.items())} for s, others in sorted(tied.items())}


def build_report(
    records: Sequence[ImageRecord],
    groups: Sequence[str],
    mapping: dict[str, str],
    conflicts: Sequence[str],
    pairs: Sequence[dict],
    names: Sequence[str],
) -> dict:
    """The report's figures (the caller adds root, parameters, fingerprint, files left out)."""
    members: dict[str, list[ImageRecord]] = defaultdict(list)
    for r, g in zip(records, groups, strict=True):
        members[g].append(r)
    group_of = {r.ident: g for r, g in zip(records, groups, strict=True)}
    pairs_of: dict[str, list[dict]] = defaultdict(list)
    for p in pairs:
        pairs_of[group_of[p["a"]]].append(p)
    entries = {
        g: {
            "group": g,
            "split": mapping[g],
            "members": sorted(r.ident for r in members[g]),
            "labels": sorted({r.label for r in members[g]}),
            "pairs": pairs_of[g],
        }
        for g in sorted(set(pairs_of) | set(conflicts))
    }
    report = {
        "n_images": len(records),
        "n_exact_pairs": sum(p["exact"] for p in pairs),
        "n_near_pairs": sum(not p["exact"] for p in pairs),
        "counts": split_counts(records, groups, mapping),
        "duplicate_groups": [e for g, e in entries.items() if pairs_of[g]],
        "conflicts": [entries[g] for g in sorted(conflicts)],
    }
    sources = sorted({r.source for r in records})
    if sources != [""]:
        report["n_crop_pairs"] = sum("inliers" in p for p in pairs)
        report["outside_labels"] = sorted({r.label for r in records} - set(names))
        report["n_patient_groups"] = sum(
            len({r.ident for r in m}) > 1 and not pairs_of[g] for g, m in members.items()
        )
        report["counts_by_source"] = {
            s: split_counts(
                [r for r in records if r.source == s],
                [g for r, g in zip(records, groups, strict=True) if r.source == s],
                mapping,
            )
            for s in sources
        }
        report["twins_across_sources"] = twins_across_sources(records, pairs)
    return report


def evidence(p: dict) -> str:
    """One pair's evidence, short: exact, perceptual-hash distances, SIFT inliers."""
    if p["exact"]:
        return "exact"
    parts = []
    if "phash" in p:
        parts.append(f"p{p.get('phash')}/d{p.get('dhash')}/w{p.get('whash')}")
    if "inliers" in p:
        parts.append(f"SIFT {p['inliers']} inliers" + (f", NCC {p['ncc']:.2f}" if "ncc" in p else ""))
    return " + ".join(parts)


def counts_table(counts: dict, names: Sequence[str]) -> list[str]:
    lines = ["| class | " + " | ".join(ALL_SPLITS) + " | total |", "|---" * (len(ALL_SPLITS) + 2) + "|"]
    for c in names:
        row = [counts[s].get(c, 0) for s in ALL_SPLITS]
        lines.append(f"| {c} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")
    totals = [sum(counts[s].get(c, 0) for c in names) for s in ALL_SPLITS]
    lines.append("| **all** | " + " | ".join(map(str, totals)) + f" | {sum(totals)} |")
    return lines


def sources_markdown(report: dict) -> list[str]:
    """The per-source sections of a multi-source report."""
    outside = report["outside_labels"]
    names = [*report["class_names"], *outside]
    lines = ["", "## Sources", ""]
    for s in report["sources"]:
        mapped = ", ".join(f"{k} → {v}" for k, v in s["label_map"]) or "none"
        patients = s.get("patients")
        lines.append(
            f"- **{s['name']}** `{s['path']}`: label map {mapped}; outside the classes: "
            f"{', '.join(s['outside']) or 'none'}; "
            + (
                f"patients read from file names by `{s['group_pattern']}`: {patients['patients']} patients "
                f"({patients['files']} files, {patients['unmatched']} without an id)"
                if patients
                else "no patient ids"
            )
        )
    lines += ["", f"{report['n_patient_groups']} groups joined only by patient id.", ""]
    for s, others in report["twins_across_sources"].items():
        for o, n in others.items():
            lines.append(f"- {n} files of {s} have a duplicate (or crop) in {o}")
    if not report["twins_across_sources"]:
        lines.append("- no duplicate across sources")
    for s, counts in report["counts_by_source"].items():
        present = [c for c in names if any(counts[sp].get(c) for sp in ALL_SPLITS)]
        lines += ["", f"### Images per class and split: {s}", "", *counts_table(counts, present)]
    if outside:
        lines += ["", f"Labels outside the classes (in the manifest, never trained): {', '.join(outside)}."]
    return lines


def render_markdown(report: dict) -> str:
    names = report["class_names"]
    crops = f", {report['n_crop_pairs']} of them crops" if "n_crop_pairs" in report else ""
    lines = [
        f"# Data report: `{report['root']}`",
        "",
        f"{report['n_images']} usable images in {len(names)} classes; "
        f"{len(report['excluded'])} files left out; {len(report['duplicate_groups'])} duplicate groups "
        f"({report['n_exact_pairs']} exact pairs, {report['n_near_pairs']} near pairs{crops}); "
        f"{len(report['conflicts'])} label conflicts.",
        "",
        "## Images per class and split",
        "",
        *counts_table(report["counts"], [*names, *report.get("outside_labels", [])]),
    ]
    if "sources" in report:
        lines += sources_markdown(report)
    lines += ["", "## Label conflicts (kept out of val and test)", ""]
    lines += [f"- {g['group']}: " + ", ".join(g["members"]) for g in report["conflicts"]] or ["none"]
    lines += ["", "## Duplicate groups", "", "| group | split | members | evidence |", "|---|---|---|---|"]
    for g in report["duplicate_groups"]:
        ev = "; ".join(evidence(p) for p in g["pairs"])
        lines.append(f"| {g['group']} | {g['split']} | {', '.join(g['members'])} | {ev} |")
    lines += ["", "## Files left out", ""]
    lines += [f"- `{e['path']}`: {e['reason']}" for e in report["excluded"]] or ["none"]
    p = report["params"]
    crop_params = f", crop duplicates {p['crops']}" if "crops" in p else ""
    lines += [
        "",
        "## Parameters",
        "",
        f"split {p['split']}, near-duplicates {p['near_duplicates']}{crop_params}, "
        f"conflicts → {p['conflicts']}.",
        f"Manifest SHA-256: `{report['manifest_sha256']}`.",
        "",
    ]
    return "\n".join(lines)
