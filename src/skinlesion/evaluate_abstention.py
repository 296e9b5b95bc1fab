"""``python -m skinlesion.evaluate_abstention``: how often the model says "I don't know", and to what.

Runs the checkpoint's predictor (the same decoder, preprocessing and gates as predict and serve) on

- the non-skin set of ``skinlesion.reports.nonskin`` (bundled sample photos and synthetic images):
  the share rejected, which should be at least 90 %;
- the checkpoint's own test split: the share of real lesion photos wrongly rejected (at most 5 %),
  and the accuracy on the accepted ones;
- optionally ``external=[folder, ...]``, class-per-folder sets from another source (domain shift).

Writes ``abstention.json`` (summary and one row per image) and ``abstention.md`` into ``<run>/eval``.
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
from skinlesion.inference.runtime import Prediction, Predictor
from skinlesion.inference.torch_backend import TorchBackend
from skinlesion.reports.nonskin import nonskin_set

log = logging.getLogger(__name__)
NONSKIN_FLOOR, TEST_CEILING = 0.90, 0.05


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
    for reason in ("out_of_distribution", "low_confidence"):
        out[f"rejected_{reason}"] = sum(r["reason"] == reason for r in rejected)
    if n and rows[0]["true"] is not None:
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
        "| set | images | rejected | share | out of distribution | low confidence | acc (all) "
        "| acc (answered) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group, s in summary["sets"].items():
        cells = [s["n"], s["rejected"], f"{s['rejected_fraction']:.1%}"]
        cells += [s[f"rejected_{r}"] for r in ("out_of_distribution", "low_confidence")]
        cells += [f"{s[k]:.3f}" if k in s else "" for k in ("acc_all", "acc_accepted")]
        lines.append(f"| {group} | " + " | ".join(map(str, cells)) + " |")
    accepted = [r["file"] for r in rows if r["set"] == "nonskin" and not r["abstained"]]
    wrongly = [f"{r['file']} ({r['reason']})" for r in rows if r["set"] == "test" and r["abstained"]]
    lines += ["", f"Non-skin images answered anyway: {', '.join(accepted) or 'none'}.", ""]
    lines += [f"Test images rejected: {', '.join(wrongly) or 'none'}.", ""]
    return "\n".join(lines)


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
    for folder in map(Path, cfg.external or []):
        items, _ = folder_items(folder, names)
        rows += labelled_rows(
            predictor, f"external:{folder.name}", [(folder / p, names[y]) for p, y in items]
        )
    groups = dict.fromkeys(r["set"] for r in rows)
    sets = {g: summarise([r for r in rows if r["set"] == g]) for g in groups}
    summary = {
        "checkpoint": str(ckpt),
        "thresholds": predictor.info.thresholds.to_json(),
        "ood_auroc_test_vs_nonskin": separation(rows, "test", "nonskin"),
        "sets": sets,
        "nonskin_rejected_fraction": sets["nonskin"]["rejected_fraction"],
        "test_rejected_fraction": sets["test"]["rejected_fraction"] if "test" in sets else None,
    }
    out_dir = Path(cfg.output_dir) if cfg.output_dir else run_dir_of(ckpt) / "eval"
    write_json(out_dir / "abstention.json", {"summary": summary, "rows": rows})
    (out_dir / "abstention.md").write_text(markdown(summary, rows, summary["thresholds"]))
    for group, s in sets.items():
        print(f"{group:>28}: {s['rejected']:>3}/{s['n']:<3} rejected ({s['rejected_fraction']:.1%})")
    nonskin, test = summary["nonskin_rejected_fraction"], summary["test_rejected_fraction"]
    verdict = ("ok" if nonskin >= NONSKIN_FLOOR else "FAIL", "ok" if test <= TEST_CEILING else "FAIL")
    print(
        f"floors: non-skin rejected {nonskin:.1%} (>= {NONSKIN_FLOOR:.0%}: {verdict[0]}), "
        f"test rejected {test:.1%} (<= {TEST_CEILING:.0%}: {verdict[1]})"
    )
    log.info("written to %s", out_dir / "abstention.md")
    return summary


main = command(evaluate_abstention, "evaluate_abstention")


if __name__ == "__main__":
    main()
