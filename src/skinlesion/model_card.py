"""``python -m skinlesion.model_card``: write ``MODEL_CARD.md`` from a run's measured files.

Every number in the card is read from a file: the run's ``metrics.json``, ``.hydra/config.yaml``,
``run_info.json``, ``eval*/metrics.json`` and ``eval/abstention.json``, the data report of the
manifest the run was trained on (``outputs/prepared/*/report.json``) and the newest
cross-validation report that trained its folds the same way (``outputs/cv/*/*/cv_report.json``,
``reports.folds.cv_matches_run``). What is missing is said to be missing, with the command that
produces it; nothing is filled in by hand.
The card lists the files it read.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from skinlesion.core.errors import DataError
from skinlesion.core.task import command
from skinlesion.data.manifest import read_manifest
from skinlesion.reports.coverage import card_lines
from skinlesion.reports.folds import cv_matches_run, mean_sd
from skinlesion.reports.heldout import baseline_lines
from skinlesion.reports.metrics import bootstrap_units, calibration_lines, fmt_ci, fmt_num
from skinlesion.reports.reliability import SELECTIVE_COVERAGES

log = logging.getLogger(__name__)
HASHES = ("phash", "dhash", "whash")
PUBLISHED_IMAGES = 770  # MSID "Original Images" as published (Bala et al., Neural Networks 2023)


def read_json(path: Path, sources: list[Path]) -> dict | None:
    if not path.is_file():
        return None
    sources.append(path)
    return json.loads(path.read_text())


def newest(paths, keep=lambda _: True) -> Path | None:
    found = sorted((p for p in paths if keep(p)), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def numbering_gaps(paths: list[str]) -> list[str]:
    """File names missing from each class's numbering (``normal1.png`` ... ``normalN.png``)."""
    numbers: dict[str, set[int]] = defaultdict(set)
    for p in paths:
        if m := re.fullmatch(r"([A-Za-z]+?)(\d+)", Path(p).stem):
            numbers[m[1]].add(int(m[2]))
    gaps = []
    for stem, present in sorted(numbers.items()):
        gaps += [f"{stem}{k}" for k in range(1, max(present) + 1) if k not in present]
    return gaps


def with_ci(m: dict, p: str, key: str) -> str:
    """``0.912 (0.851 – 0.959)``, or the bare value when there is no interval."""
    value, ci = fmt_num(m.get(f"{p}/{key}")), m.get(f"{p}/{key}_ci")
    return f"{value} ({fmt_ci(ci)})" if ci else value


MSID_ABOUT = (
    "The Monkeypox Skin Image Dataset (MSID; Kaggle `dipuiucse/monkeypoxskinimagedataset`; Bala et al., "
    "*Neural Networks* 2023): photos scraped from the web, one folder per class, no patient identifiers, "
    "no dermatologist review of the labels recorded, no skin type or body site recorded."
)


def sources_lines(report: dict) -> list[str]:
    """What each source is and holds, for a run trained on several (``data=multisource``)."""
    about = {
        "msid": "MSID (Kaggle `dipuiucse/monkeypoxskinimagedataset`; Bala et al., *Neural Networks* 2023): "
        "web photos, no patient identifiers",
        "msld_v2": "MSLD v2.0 (Ali et al. 2023), the patients of its fold-1 Train split: patient ids in the "
        "file names, so a patient's photos stay on one side of every split",
    }
    outside = report.get("outside_labels") or []
    lines = [
        f"{len(report['sources'])} sources (`data=multisource`), no dermatologist review of the labels "
        "recorded, no skin type or body site recorded:",
        "",
    ]
    for source in report["sources"]:
        counts = report.get("counts_by_source", {}).get(source["name"], {})
        n = sum(sum(v.values()) for v in counts.values())
        twins = sum((report.get("twins_across_sources") or {}).get(source["name"], {}).values())
        lines.append(
            f"- **{source['name']}**: {about.get(source['name'], source['path'])}; {n} images"
            + (f", {twins} of them tied to another source's photo (a copy or a crop)" if twins else "")
            + "."
        )
    if outside:
        lines.append(
            f"- Rashes outside the four classes ({', '.join(outside)}) stay in the manifest, are never "
            "trained as one of the four, and fit the other-rash gate."
        )
    return [*lines, ""]


def data_section(report: dict | None, paths: list[str]) -> list[str]:
    if report is None:
        return ["The data report of this run's manifest was not found: run `make prepare`.", ""]
    names = report["class_names"]
    shown = [*names, *(report.get("outside_labels") or [])]  # rashes outside the classes are images too
    total = {c: sum(report["counts"][s].get(c, 0) for s in report["counts"]) for c in shown}
    gaps = numbering_gaps(paths + [e["path"] for e in report["excluded"]])
    conflict_lines = []
    for g in report["conflicts"]:
        across = [q for q in g["pairs"] if q["a"].split("/")[0] != q["b"].split("/")[0]] or g["pairs"]
        closest = min(across, key=lambda q: (not q["exact"], sum(q.get(k, 0) for k in HASHES)))
        how = (
            "byte-identical"
            if closest["exact"]
            else "pHash/dHash/wHash distances " + "/".join(str(closest.get(k)) for k in HASHES)
        )
        evidence = f"closest pair {closest['a']} ~ {closest['b']}: {how}"
        conflict_lines.append(f"  - {', '.join(g['members'])} ({' / '.join(g['labels'])}; {evidence})")
    found = report["n_images"] + sum("/" in e["path"] for e in report["excluded"])  # files in class folders
    several = len(report.get("sources") or []) > 1
    lines = sources_lines(report) if several else [MSID_ABOUT, ""]
    lines += [
        f"- **Images used:** {report['n_images']} ("
        + ", ".join(f"{c} {total[c]}" for c in shown)
        + f"); {len(report['excluded'])} files left out as unusable."
        + (
            ""
            if several
            else f" The published set counts {PUBLISHED_IMAGES}, this copy {found}: "
            f"{PUBLISHED_IMAGES - found} missing (gaps in the file numbering: "
            + (", ".join(gaps) if gaps else "none")
            + ")."
        ),
        f"- **Duplicates:** {report['n_exact_pairs']} byte-identical pairs and {report['n_near_pairs']} "
        f"near-duplicate pairs, joined into {len(report['duplicate_groups'])} groups; a group is never split "
        "between train, val and test, and the bootstrap resamples whole groups.",
        f"- **Label conflicts:** {len(report['conflicts'])} groups carry more than one label"
        + ("; they are used for training only, never for scoring:" if conflict_lines else "."),
        *conflict_lines,
        "- **Split** (grouped, stratified by class): "
        + "; ".join(
            f"{s} {sum(report['counts'][s].values())}"
            for s in ("train", "val", "test")
            if s in report["counts"]
        )
        + f". Manifest SHA-256 `{report['manifest_sha256'][:16]}…`.",
        "",
    ]
    return lines


def figures(linked: bool, *shown: tuple[str, str]) -> str:
    """Image links when the card sits in the run directory beside ``eval/``; anywhere else (the
    repository root, where git ignores ``outputs/``) the run-relative paths as plain text, so that a
    committed card never links a file its readers do not have."""
    if linked:
        return " ".join(f"![{title}]({path})" for title, path in shown)
    return "Figures in the run directory: " + ", ".join(f"{title} `{path}`" for title, path in shown) + "."


def metrics_section(m: dict, names: list[str], linked: bool) -> list[str]:
    p = "test"
    if f"{p}/acc" not in m:
        return ["The run has no test metrics: run `make evaluate`.", ""]
    if f"{p}/bootstrap_unit" not in m:
        return [
            "The test metrics predate the intervals: run `make evaluate ARGS=ckpt_path=<its best.ckpt>`.",
            "",
        ]
    level = round(100 * m.get(f"{p}/ci_level", 0.95))
    lines = [
        f"Held-out test split, {m[f'{p}/n']} images. In brackets, {level} % bootstrap intervals: "
        f"{m.get(f'{p}/bootstrap_resamples')} resamples of the {m.get(f'{p}/bootstrap_units')} "
        f"{bootstrap_units(m, p)}.",
        "",
        f"- accuracy {with_ci(m, p, 'acc')}",
        f"- macro-F1 {with_ci(m, p, 'f1_macro')}",
        f"- Cohen's κ {with_ci(m, p, 'kappa')}",
        f"- macro one-vs-rest ROC AUC {fmt_num(m.get(f'{p}/auc_macro'))}",
        "",
        f"| class | precision | recall (sensitivity) [{level} % CI] | F1 | ROC AUC | test images |",
        "|---|---|---|---|---|---|",
    ]
    for c in names:
        recall = f"{fmt_num(m[f'{p}/recall/{c}'])} [{fmt_ci(m.get(f'{p}/recall_ci/{c}'))}]"
        lines.append(
            f"| {c} | {fmt_num(m[f'{p}/precision/{c}'])} | {recall} | {fmt_num(m[f'{p}/f1/{c}'])} | "
            f"{fmt_num(m.get(f'{p}/auc/{c}'))} | {m[f'{p}/support/{c}']} |"
        )
    shown = figures(linked, ("confusion matrix", "eval/confusion_matrix.png"), ("ROC", "eval/roc_curves.png"))
    return [*lines, "", shown, ""]


def cv_section(cv: dict | None) -> list[str]:
    if cv is None:
        return ["No cross-validation report that trains like this run was found: run `make cv`.", ""]
    s = cv["summary"]
    recalls = ", ".join(f"{c} {mean_sd(s, f'recall/{c}')}" for c in cv["class_names"])
    return [
        f"{len(cv['folds'])} of {cv['n_folds']} folds of a grouped, stratified cross-validation over "
        f"train + val ({cv['n_images']} images; mean ± sd over the folds): accuracy {mean_sd(s, 'acc')}, "
        f"macro-F1 {mean_sd(s, 'f1_macro')}, κ {mean_sd(s, 'kappa')}; recall {recalls}. "
        f"Command: `{cv['command']}`.",
        "",
    ]


def calibration_section(m: dict, linked: bool) -> list[str]:
    if "test/ece" not in m:
        return ["No calibration figures: run `make evaluate`.", ""]
    shown = figures(linked, ("reliability diagram", "eval/reliability_diagram.png"))
    return [*calibration_lines(m, "test"), "", shown, ""]


def external_section(m: dict | None, test: dict, name: str) -> list[str]:
    if m is None:
        return [f"Not measured for this run: `make evaluate-external` writes `{name}/metrics.json`.", ""]
    p = "folder"
    counts = {k.split("/")[-1]: v for k, v in m.items() if k.startswith(f"{p}/support/") and v > 0}
    lines = [
        f"{m[f'{p}/n']} independently collected web images ("
        + ", ".join(f"{c} {n}" for c, n in counts.items())
        + "); never trained or tuned on. Macro averages run over the classes present.",
        "",
        "| | in-domain test | external |",
        "|---|---|---|",
    ]
    for label, key in (("accuracy", "acc"), ("macro-F1", "f1_macro"), ("Cohen's κ", "kappa"), ("ECE", "ece")):
        lines.append(f"| {label} | {with_ci(test, 'test', key)} | {with_ci(m, p, key)} |")
    if f"{p}/abstention_rate" in m:
        for label, key in (
            ("abstention rate", "abstention_rate"),
            ("accuracy, not abstained", "acc_non_abstained"),
        ):
            lines.append(f"| {label} | {fmt_num(test.get(f'test/{key}'))} | {fmt_num(m[f'{p}/{key}'])} |")
    else:
        lines.append("| abstention | no rule in this checkpoint | |")
    for c in SELECTIVE_COVERAGES:  # the best any confidence threshold could do, on each set
        key = f"acc_at_coverage/{c}"
        if f"{p}/{key}" in m:
            lines.append(
                f"| accuracy on the {round(100 * c)} % most confident | {fmt_num(test.get(f'test/{key}'))} "
                f"| {fmt_num(m[f'{p}/{key}'])} |"
            )
    return [*lines, ""]


def render(run_dir: Path, cfg_run: DictConfig, files: dict, external_name: str, out: Path) -> str:
    """The card's markdown; ``files`` holds the parsed inputs and ``sources`` the paths they came from."""
    m, info = files["metrics"], files["info"]
    names = list(cfg_run.data.class_names)
    model = cfg_run.model
    rel = os.path.relpath(run_dir, out.parent)
    linked = out.parent == run_dir  # figures are linked only from beside them
    lines = [
        f"# Model card: skinlesion {model.backbone}",
        "",
        "> **Not a medical device.** A research and teaching tool: not validated clinically, trained on "
        "web-scraped photos, and it must never be used to diagnose, triage or reassure anyone.",
        "",
        f"Generated by `python -m skinlesion.model_card` from run `{rel}`; regenerate rather than edit.",
        "",
        "## Model",
        "",
        f"- {model.backbone} (ImageNet-pretrained: {model.pretrained}), input {cfg_run.data.image_size} px, "
        f"{len(names)} classes: {', '.join(names)}.",
        f"- Trained {m.get('epochs')} epochs; best val macro-F1 {fmt_num(m.get('val/f1_macro_best'))}; "
        f"temperature {fmt_num(m.get('calibration/temperature'))}.",
        f"- Code commit `{info.get('git_commit', 'unknown')}`; "
        f"torch {info.get('packages', {}).get('torch', 'unknown')}.",
        "",
        "## Intended use",
        "",
        "- For ML researchers comparing methods on MSID, and for clinicians-in-training learning how such a "
        "classifier succeeds and fails (confusion matrices, calibration, intervals).",
        "- Out of scope: any decision about a person; images other than photos of skin (dermoscopy, "
        "microscopy, histology); conditions outside the four classes: the other-rash gate turns part of "
        "them away (figures below), not all, and what passes is answered as one of the four.",
        "",
        "## Data",
        "",
        *data_section(files["data"], files["paths"]),
        "## Results",
        "",
        *metrics_section(m, names, linked),
        "### Cross-validation",
        "",
        *cv_section(files["cv"]),
        "### External validation",
        "",
        *external_section(files["external"], m, external_name),
        "### Sources it never saw",
        "",
        *baseline_lines(files["lodo"], files["lodo_path"]),
        "## Calibration",
        "",
        *calibration_section(m, linked),
        "## Prediction sets and abstention",
        "",
        *card_lines(m, (files["cv"] or {}).get("oof"), files["external"], files["abstention"]),
        *(
            [figures(linked, ("other-rash trade-off", "eval/other_tradeoff.png")), ""]
            if files["abstention"]
            else []
        ),
        "## Limits",
        "",
        "- **Skin tones:** MSID records no skin type; performance across skin tones is unmeasured and "
        "unknown.",
        "- **Image sources:** web photos of varied quality, framing and resolution; the external "
        "figures above show how much is lost on images from other sources.",
        "- **Sample size:** the test split is small, so the intervals above are wide; differences "
        "smaller than them are not evidence.",
        "- **Labels:** unverified web labels, with the conflicts listed under Data.",
        "",
        "## Files read",
        "",
        *(f"- `{os.path.relpath(p, out.parent)}`" for p in files["sources"]),
        "",
    ]
    return "\n".join(lines)


def model_card(cfg: DictConfig) -> Path:
    output_root = Path(cfg.paths.output_root)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else output_root / "latest"
    if not (run_dir / "metrics.json").is_file():
        raise DataError(
            f"{run_dir} has no metrics.json: train a model first (make train) or pass run_dir=..."
        )
    run_dir = run_dir.resolve()
    sources: list[Path] = []
    # the run's summary, with the test figures of the latest `make evaluate` (eval/) on top
    m = (read_json(run_dir / "metrics.json", sources) or {}) | (
        read_json(run_dir / "eval" / "metrics.json", sources) or {}
    )
    info = read_json(run_dir / "run_info.json", sources) or {}
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise DataError(f"{cfg_path} not found: the card needs the run's configuration")
    sources.append(cfg_path)
    cfg_run = OmegaConf.load(cfg_path)
    data_path = newest(
        output_root.glob("prepared/*/report.json"),
        lambda p: json.loads(p.read_text()).get("manifest_sha256") == m.get("data_manifest_sha256"),
    )
    data = read_json(data_path, sources) if data_path else None
    paths = []
    if data_path:
        sources.append(data_path.with_name("manifest.csv"))
        paths = [r["path"] for r in read_manifest(data_path.with_name("manifest.csv"))]
    cv_path = (
        Path(cfg.cv_report)
        if cfg.cv_report
        else newest(
            output_root.glob("cv/*/*/cv_report.json"),
            lambda p: cv_matches_run(json.loads(p.read_text()), cfg_run),
        )
    )
    cv = read_json(cv_path, sources) if cv_path else None
    external = read_json(run_dir / cfg.external_eval / "metrics.json", sources)
    rejection = (read_json(run_dir / "eval" / "abstention.json", sources) or {}).get("summary")
    out = Path(cfg.output) if cfg.output else run_dir / "MODEL_CARD.md"
    files = {"metrics": m, "info": info, "data": data, "paths": paths, "cv": cv, "external": external}
    files["abstention"] = rejection
    lodo_path = Path(cfg.lodo_report) if cfg.get("lodo_report") else None
    files["lodo"] = read_json(lodo_path, sources) if lodo_path and lodo_path.is_file() else None
    files["lodo_path"] = os.path.relpath(lodo_path, out.parent) if files["lodo"] else ""
    text = render(run_dir, cfg_run, files | {"sources": sources}, cfg.external_eval, out.resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"model card written to {out}")
    return out


main = command(model_card, "model_card")


if __name__ == "__main__":
    main()
