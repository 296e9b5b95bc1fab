"""``python -m skinlesion.evaluate_abstention``: how often the model says "I don't know", and to what.

Runs the checkpoint's predictor (the same decoder, preprocessing and gates as predict and serve) on

- the non-skin set of ``skinlesion.reports.nonskin`` (bundled sample photos and synthetic images):
  the share rejected, which should be at least 90 %;
- the checkpoint's own test split: the share of real lesion photos wrongly rejected (at most 10 %),
  and the accuracy on the accepted ones;
- photos of other rashes of held-out patients (``other:val``, ``other:test``: the outside folders of
  ``other_data``, or of the checkpoint's own data, never used to fit the gate), which should be
  turned away (at least 60 %), and in-class test photos of other sources (``test:<source>``);
- optionally ``external=[folder, ...]``, class-per-folder sets from another source (domain shift).

Writes ``abstention.json`` (summary, the other-rash gate's trade-off curves, one row per image),
``abstention.md`` and ``other_tradeoff.png`` into ``<run>/eval``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from sklearn.metrics import roc_auc_score

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import ImageDecodeError
from skinlesion.core.task import command
from skinlesion.data.datamodule import folder_items
from skinlesion.inference.loading import (
    checkpoint_datamodule,
    default_checkpoint,
    load_classifier,
    run_dir_of,
)
from skinlesion.inference.other_rash import other_datamodule, other_rash_sets
from skinlesion.inference.runtime import Prediction, Predictor
from skinlesion.inference.torch_backend import TorchBackend
from skinlesion.reports.nonskin import nonskin_set
from skinlesion.reports.tradeoff import plot_tradeoff, scores, tradeoff, tradeoff_markdown

log = logging.getLogger(__name__)
NONSKIN_FLOOR, TEST_CEILING, OTHER_FLOOR = 0.90, 0.10, 0.60


def row(group: str, pred: Prediction, true: str | None = None) -> dict:
    return {
        "set": group,
        "file": pred.file,
        "true": true,
        "abstained": pred.abstained,
        "reason": pred.reason,
        "top_class": pred.top_class,
        "prediction_set": pred.prediction_set,
        "confidence": round(pred.confidence, 4),
        "ood_score": round(pred.ood_score, 4),
        "other_score": round(pred.other_score, 4),
    }


def labelled_rows(predictor: Predictor, group: str, files: list[tuple[Path, str]]) -> list[dict]:
    out = []
    for path, true in files:
        try:
            out.append(row(group, predictor.predict_file(path), true))
        except ImageDecodeError as e:
            log.warning("left out: %s", e)
    return out


def summarise(rows: list[dict]) -> dict:
    n = len(rows)
    rejected = [r for r in rows if r["abstained"]]
    out = {"n": n, "rejected": len(rejected), "rejected_fraction": len(rejected) / n if n else float("nan")}
    for reason in ("out_of_distribution", "other_condition", "low_confidence"):
        out[f"rejected_{reason}"] = sum(r["reason"] == reason for r in rejected)
    if n and rows[0]["true"] is not None and not rows[0]["set"].startswith("other:"):
        accepted = [r for r in rows if not r["abstained"]]
        out["acc_all"] = sum(r["top_class"] == r["true"] for r in rows) / n
        out["acc_accepted"] = (
            sum(r["top_class"] == r["true"] for r in accepted) / len(accepted) if accepted else float("nan")
        )
    return out


def separation(rows: list[dict], inside: str, outside: str) -> float | None:
    """AUROC of the out-of-distribution score between two sets (1.0: every outside image scores higher)."""
    a = [r["ood_score"] for r in rows if r["set"] == inside]
    b = [r["ood_score"] for r in rows if r["set"] == outside]
    if not a or not b:
        return None
    return float(roc_auc_score([0] * len(a) + [1] * len(b), a + b))


def markdown(summary: dict, rows: list[dict], thresholds: dict) -> str:
    lines = [
        "# Abstention",
        "",
        f"Thresholds (fitted on the validation split): {thresholds}.",
        "",
        f"Separation of test and non-skin images by the out-of-distribution score: AUROC "
        f"{summary['ood_auroc_test_vs_nonskin']}.",
        "",
        "| set | images | rejected | share | out of distribution | other rash | low confidence | acc (all) "
        "| acc (answered) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for group, s in summary["sets"].items():
        cells = [s["n"], s["rejected"], f"{s['rejected_fraction']:.1%}"]
        cells += [s[f"rejected_{r}"] for r in ("out_of_distribution", "other_condition", "low_confidence")]
        cells += [f"{s[k]:.3f}" if k in s else "" for k in ("acc_all", "acc_accepted")]
        lines.append(f"| {group} | " + " | ".join(map(str, cells)) + " |")
    accepted = [r["file"] for r in rows if r["set"] == "nonskin" and not r["abstained"]]
    wrongly = [f"{r['file']} ({r['reason']})" for r in rows if r["set"] == "test" and r["abstained"]]
    lines += ["", f"Non-skin images answered anyway: {', '.join(accepted) or 'none'}.", ""]
    lines += [f"Test images rejected: {', '.join(wrongly) or 'none'}.", ""]
    return "\n".join(lines)


def group_of(r: dict) -> str | None:
    """Which side of the trade-off a row is on: in-class test photos, other rashes, non-skin."""
    if r["set"] == "test" or r["set"].startswith("test:"):
        return "inside"
    return "other" if r["set"].startswith("other:") else ("nonskin" if r["set"] == "nonskin" else None)


def other_rash_rows(predictor: Predictor, cfg: DictConfig, dm, model) -> list[dict]:
    """Other rashes of the held-out patients (val and test: the gate fits on train patients only)
    and in-class test photos of other sources; none without data of other rashes."""
    other_dm = other_datamodule(cfg.get("other_data"), dm, model)
    if other_dm is None:
        return []
    sets = other_rash_sets(other_dm, dm, model)
    rows = []
    for split in ("val", "test"):
        ds = sets.outside[split]
        files = [(ds.root / p, sets.outside_names[y]) for p, y in ds.items]
        rows += labelled_rows(predictor, f"other:{split}", files)
    ds = sets.inside["test"]
    for source in sorted(set(ds.sources or [])):
        items = [item for item, s in zip(ds.items, ds.sources, strict=True) if s == source]
        files = [(ds.root / p, model.class_names[y]) for p, y in items]
        rows += labelled_rows(predictor, f"test:{source}", files)
    return rows


def evaluate_abstention(cfg: DictConfig) -> dict:
    ckpt = default_checkpoint(cfg)
    model = load_classifier(ckpt)
    predictor = Predictor(TorchBackend(model))
    names = model.class_names
    rows = []
    for name, data in nonskin_set(int(cfg.seed)):
        rows.append(row("nonskin", predictor.predict_bytes(data, name)))
    dm = checkpoint_datamodule(ckpt, model, cfg.data.root)
    test = [(dm.root / path, names[label]) for path, label in dm.datasets["test"].items]
    rows += labelled_rows(predictor, "test", test)
    rows += other_rash_rows(predictor, cfg, dm, model)
    for folder in map(Path, cfg.external or []):
        items, _ = folder_items(folder, names)
        rows += labelled_rows(
            predictor, f"external:{folder.name}", [(folder / p, names[y]) for p, y in items]
        )
    groups = dict.fromkeys(r["set"] for r in rows)
    sets = {g: summarise([r for r in rows if r["set"] == g]) for g in groups}
    pooled = {k: summarise([r for r in rows if group_of(r) == k]) for k in ("inside", "other")}
    curves = tradeoff(scores(rows, group_of), predictor.info.thresholds.ood_score)
    summary = {
        "checkpoint": str(ckpt),
        "thresholds": predictor.info.thresholds.to_json(),
        "ood_auroc_test_vs_nonskin": separation(rows, "test", "nonskin"),
        "sets": sets,
        "nonskin_rejected_fraction": sets["nonskin"]["rejected_fraction"],
        "test_rejected_fraction": sets["test"]["rejected_fraction"] if "test" in sets else None,
        "inside_rejected_fraction": pooled["inside"]["rejected_fraction"],
        "other_rejected_fraction": pooled["other"]["rejected_fraction"] if pooled["other"]["n"] else None,
        "tradeoff": curves,
    }
    out_dir = Path(cfg.output_dir) if cfg.output_dir else run_dir_of(ckpt) / "eval"
    write_json(out_dir / "abstention.json", {"summary": summary, "rows": rows})
    (out_dir / "abstention.md").write_text(
        markdown(summary, rows, summary["thresholds"]) + "\n".join(["", *tradeoff_markdown(curves), ""])
    )
    deployed = {k: pooled[k]["rejected_fraction"] for k in ("inside", "other")}
    plot_tradeoff(curves, deployed if pooled["other"]["n"] else {}, out_dir / "other_tradeoff.png")
    for group, s in sets.items():
        print(f"{group:>28}: {s['rejected']:>3}/{s['n']:<3} rejected ({s['rejected_fraction']:.1%})")
    nonskin, test = summary["nonskin_rejected_fraction"], summary["test_rejected_fraction"]
    verdict = ("ok" if nonskin >= NONSKIN_FLOOR else "FAIL", "ok" if test <= TEST_CEILING else "FAIL")
    print(
        f"floors: non-skin rejected {nonskin:.1%} (>= {NONSKIN_FLOOR:.0%}: {verdict[0]}), "
        f"test rejected {test:.1%} (<= {TEST_CEILING:.0%}: {verdict[1]})"
    )
    if (other := summary["other_rejected_fraction"]) is not None:
        inside = summary["inside_rejected_fraction"]
        print(
            f"other rashes of held-out patients rejected {other:.1%} (>= {OTHER_FLOOR:.0%}: "
            f"{'ok' if other >= OTHER_FLOOR else 'FAIL'}); all in-class test photos rejected {inside:.1%}"
        )
    log.info("written to %s", out_dir / "abstention.md")
    return summary


main = command(evaluate_abstention, "evaluate_abstention")


if __name__ == "__main__":
    main()
