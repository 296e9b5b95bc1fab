"""The model card: every figure it prints comes from the run's files; missing parts say so."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from skinlesion.core.artifacts import provenance, write_json
from skinlesion.core.errors import DataError
from skinlesion.data.datamodule import ImageListDataset
from skinlesion.data.manifest import PrepareParams, prepare, prepared_dir, read_manifest
from skinlesion.model_card import model_card, numbering_gaps
from skinlesion.reports.evaluation import write_evaluation
from skinlesion.reports.folds import cv_matches_run, summarise_folds, training_signature
from skinlesion.reports.metrics import fmt_ci
from tests.helpers import CLASSES, add_duplicates, random_predictions

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s#]+)")  # markdown link and image targets, without any #anchor


def untracked_links(card: Path, repo: Path) -> list[str]:
    """The card's local link targets that are not files git tracks in ``repo``."""
    listed = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True)
    tracked = set(listed.stdout.splitlines())
    targets = [t for t in LINK.findall(card.read_text()) if "://" not in t]
    return [t for t in targets if os.path.relpath((card.parent / t).resolve(), repo.resolve()) not in tracked]


def fake_run(tmp_path: Path, root: Path, compose_cfg) -> tuple[Path, dict]:
    """A run directory as train writes it, from a real preparation and synthetic predictions."""
    (root / "Measles" / "measles3.png").unlink()  # a gap in the numbering, like normal104 in MSID
    add_duplicates(root)  # one of them an exact copy under another label
    params = PrepareParams.from_config(CLASSES, None, None, "train")
    report = prepare(root, prepared_dir(tmp_path / "outputs" / "prepared", root, params), params)
    run = tmp_path / "outputs" / "2026-01-01" / "00-00-00"
    rows = read_manifest(prepared_dir(tmp_path / "outputs" / "prepared", root, params) / "manifest.csv")
    test = [r for r in rows if r["split"] != "excluded"]
    dataset = ImageListDataset(root, [(r["path"], CLASSES.index(r["label"])) for r in test], None)
    probs, targets = random_predictions(0, len(test))
    targets = np.array([label for _, label in dataset.items])
    metrics = write_evaluation(probs, targets, dataset, CLASSES, run / "eval", "test", logits=np.log(probs))
    metrics |= {"data_manifest_sha256": report["manifest_sha256"], "epochs": 3, "val/f1_macro_best": 0.5}
    write_json(run / "metrics.json", metrics)
    write_json(run / "run_info.json", provenance(report["manifest_sha256"]))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose_cfg("model=simple_cnn")))
    ext = write_evaluation(
        probs[:20],
        targets[:20],
        ImageListDataset(root, dataset.items[:20], None),
        CLASSES,
        run / "eval-health_app_ml",
        "folder",
    )
    return run, metrics | ext


def test_card_prints_the_measured_figures_and_says_what_is_missing(tmp_path, synthetic_root, compose_cfg):
    run, m = fake_run(tmp_path, synthetic_root, compose_cfg)
    card = compose_cfg(f"run_dir={run}", f"output={tmp_path / 'MODEL_CARD.md'}", config_name="model_card")
    assert "run `make cv`" in model_card(card).read_text()

    folds = [
        {"acc": a, "f1_macro": a - 0.1, "kappa": a - 0.2, **{f"recall/{c}": a for c in CLASSES}}
        for a in (0.8, 0.9, 0.85)
    ]
    summary = summarise_folds(folds, CLASSES)
    cv = {"model": "simple_cnn", "n_folds": 3, "folds": folds, "n_images": 40, "summary": summary}
    write_json(tmp_path / "outputs/cv/d/t/cv_report.json", cv | {"class_names": CLASSES, "command": "c"})
    text = model_card(card).read_text()
    assert "Not a medical device" in text
    assert f"accuracy {m['test/acc']:.3f} ({fmt_ci(m['test/acc_ci'])})" in text
    assert f"{m['test/ece_uncalibrated']:.3f}" in text and f"{m['folder/acc']:.3f}" in text
    assert f"accuracy {summary['acc']['mean']:.3f} ± {summary['acc']['sd']:.3f}" in text
    at80 = f"{m['test/acc_at_coverage/0.8']:.3f} | {m['folder/acc_at_coverage/0.8']:.3f} |"
    assert f"| accuracy on the 80 % most confident | {at80}" in text
    assert "measles3" in text  # the missing file, found from the manifest
    assert "Chickenpox/chickenpox0.png ~ Monkeypox/monkeypox_mislabelled.png: byte-identical" in text
    assert "- `outputs/2026-01-01/00-00-00/metrics.json`" in text  # the files read are listed
    assert "reliability diagram `eval/reliability_diagram.png`" in text  # named, not linked: not in git
    if shutil.which("git"):  # tmp_path as a repository that ignores outputs/, the card at its root
        subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
        (tmp_path / ".gitignore").write_text("/outputs/\n")
        subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
        assert untracked_links(tmp_path / "MODEL_CARD.md", tmp_path) == []
    beside = model_card(compose_cfg(f"run_dir={run}", config_name="model_card"))  # in the run directory
    figures = LINK.findall(beside.read_text())
    assert beside.parent == run and len(figures) == 3 and all((run / f).is_file() for f in figures)

    assert "`make lodo` writes it" in text
    summary = {"n": 9, "acc": 0.667, "acc_ci": [0.4, 0.9], "acc_by_seed": {"1": 0.667}}
    cell = {"heldout": {"summary": summary}, "external": {"summary": summary | {"n": 5, "acc": 0.6}}}
    lodo = {"command": "python -m skinlesion.lodo", "seeds": [1], "baseline": "b", "arms": {"b": {"x": cell}}}
    write_json(tmp_path / "outputs/lodo/lodo.json", lodo)
    text = model_card(card).read_text()
    assert "| x | the other sources | 9 | 0.667 | [0.400, 0.900] | 5 | 0.600 | [0.400, 0.900] |" in text

    (run / "eval-health_app_ml" / "metrics.json").unlink()
    assert "`make evaluate-external`" in model_card(card).read_text()
    with pytest.raises(DataError, match=r"no metrics\.json"):
        model_card(compose_cfg(f"run_dir={tmp_path}", config_name="model_card"))


def test_numbering_gaps():
    assert numbering_gaps(["N/normal1.png", "N/normal4.png", "C/chickenpox2.jpg", "C/x.png"]) == [
        "chickenpox1",
        "normal2",
        "normal3",
    ]
    assert numbering_gaps([]) == []


def test_the_card_quotes_only_a_cv_that_trained_like_its_run(tmp_path, compose_cfg):
    saved = tmp_path / "config.yaml"  # as the run saved it in .hydra/config.yaml
    saved.write_text(OmegaConf.to_yaml(compose_cfg("model=efficientnet_lite0", "seed=7")))
    run_cfg = OmegaConf.load(saved)
    same = compose_cfg("model=efficientnet_lite0", "seed=7", "callbacks.progress_bar=null", config_name="cv")
    report = json.loads(json.dumps({"model": "efficientnet_lite0", "train_config": training_signature(same)}))
    assert cv_matches_run(report, run_cfg)  # display options and the JSON round trip do not matter
    for change in (
        "model.freeze_stages=1",
        "data.image_size=288",
        "optimizer=sgd",
        "callbacks=[default,ema]",
    ):
        other = compose_cfg("model=efficientnet_lite0", "seed=7", change, config_name="cv")
        assert not cv_matches_run(
            {"model": "efficientnet_lite0", "train_config": training_signature(other)}, run_cfg
        )
    # reports written before train_config: the recorded keys and the CV command's overrides decide
    legacy = {"model": "efficientnet_lite0", "config": {"seed": 7, "image_size": 224, "max_epochs": 12}}
    display = "callbacks.progress_bar=null trainer.enable_model_summary=false"
    assert cv_matches_run(legacy | {"command": f"python -m skinlesion.cv {display}"}, run_cfg)
    assert cv_matches_run(legacy | {"command": "python -m skinlesion.cv model=efficientnet_lite0"}, run_cfg)
    assert not cv_matches_run(legacy | {"command": "python -m skinlesion.cv model.freeze_stages=1"}, run_cfg)
    assert not cv_matches_run(legacy | {"command": "python -m skinlesion.cv optimizer=sgd"}, run_cfg)
    assert not cv_matches_run(legacy | {"config": {"seed": 7, "image_size": 288}, "command": ""}, run_cfg)


@pytest.mark.skipif(not (REPO / ".git").exists() or not shutil.which("git"), reason="needs the git checkout")
def test_the_committed_card_links_only_files_git_tracks():
    """Readers of the repository have its tracked files, not the git-ignored run outputs."""
    assert untracked_links(REPO / "MODEL_CARD.md", REPO) == []


def test_a_card_of_several_sources_describes_each_one():
    from skinlesion.model_card import sources_lines

    report = {
        "sources": [{"name": "msid", "path": "/d/msid"}, {"name": "mine", "path": "/d/mine"}],
        "counts_by_source": {
            "msid": {"train": {"Normal": 3}, "test": {"Normal": 1}},
            "mine": {"train": {"Cowpox": 2}},
        },
        "twins_across_sources": {"mine": {"msid": 1}},
        "outside_labels": ["Cowpox"],
    }
    text = "\n".join(sources_lines(report))
    assert "2 sources (`data=multisource`)" in text
    assert "- **msid**: MSID" in text and "; 4 images." in text
    assert "- **mine**: /d/mine; 2 images, 1 of them tied to another source's photo" in text
    assert "(Cowpox) stay in the manifest" in text
