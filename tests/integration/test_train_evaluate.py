"""Train and evaluate on a small real-data slice, in-process and through the command line."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skinlesion.data.datamodule import SkinLesionDataModule
from skinlesion.evaluate import evaluate
from skinlesion.inference.loading import load_classifier
from skinlesion.models.classifier import SkinLesionClassifier
from skinlesion.train import train_main_path
from skinlesion.training.fit import train
from tests.helpers import CLASSES, FAST, REAL_ROOT, datamodule, quiet_trainer, run_cli

ARTEFACTS = [
    "metrics.json",
    "classification_report.md",
    "confusion_matrix.png",
    "misclassified.png",
    "predictions.csv",
    "roc_curves.png",
    "reliability_diagram.png",
    "accuracy_coverage.png",
    "training_curves.png",
]


@pytest.mark.integration
def test_fit_on_real_slice_writes_the_run_and_evaluate_rewrites_it(tmp_path, compose_cfg, real_slice):
    # EMA on: the in-run test must score the checkpointed (averaged) weights, as evaluate does
    cfg = compose_cfg(f"data.root={real_slice}", *FAST, "callbacks=[default,ema]", "trainer.max_epochs=3")
    objective = train_main_path(cfg)
    run = Path(cfg.paths.output_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (
        "test/acc",
        "test/f1_macro",
        "test/precision_macro",
        "test/recall_macro",
        *(f"test/{m}/{c}" for m in ("precision", "recall", "f1") for c in CLASSES),
        "test/ece",
        "test/ece_uncalibrated",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key
    for key in ("test/acc", "test/f1_macro", "test/kappa"):
        low, high = metrics[f"{key}_ci"]
        assert low <= metrics[key] <= high, key
    # the manifest's groups (an image with its duplicates) are the bootstrap's unit
    assert metrics["test/bootstrap_unit"] == "group" and metrics["test/bootstrap_units"] <= 12
    assert metrics["test/temperature"] == pytest.approx(metrics["calibration/temperature"])
    assert objective == pytest.approx(metrics["val/f1_macro_best"])
    assert (run / "checkpoints/best.ckpt").is_file() and (run / "checkpoints/last.ckpt").is_file()
    assert all((run / "eval" / a).stat().st_size > 0 for a in ARTEFACTS)
    assert (
        json.loads((run / "run_info.json").read_text())["data_manifest_sha256"]
        == metrics["data_manifest_sha256"]
    )
    assert (tmp_path / "outputs/latest").resolve() == run.resolve()

    # standalone evaluate on the default (latest) checkpoint, then on val into another folder
    eval_cfg = compose_cfg(config_name="evaluate")
    again = evaluate(eval_cfg)
    for key in ("test/f1_macro", "test/acc_ci", "test/kappa", "test/auc_macro", "test/ece_uncalibrated"):
        assert again[key] == pytest.approx(metrics[key]), key
    val = evaluate(compose_cfg("split=val", f"output_dir={tmp_path / 'val_eval'}", config_name="evaluate"))
    assert val["val/n"] > 0 and all((tmp_path / "val_eval" / a).is_file() for a in ARTEFACTS[:5])


@pytest.mark.integration
def test_evaluate_on_a_class_folder_with_missing_classes_and_a_bad_file(tmp_path, compose_cfg, real_slice):
    cfg = compose_cfg(f"data.root={real_slice}", *FAST, "trainer.max_epochs=1")
    train_main_path(cfg)  # evaluate's default checkpoint is outputs/latest's
    folder = tmp_path / "external"
    for name in ("Chickenpox", "Normal"):
        (folder / name).mkdir(parents=True)
        unseen = [
            f for f in sorted((REAL_ROOT / name).iterdir()) if not (real_slice / name / f.name).exists()
        ]
        for f in unseen[:3]:
            (folder / name / f.name).symlink_to(f.resolve())
    (folder / "Normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "Normal" / "a_training_image.png").symlink_to(next((real_slice / "Normal").iterdir()).resolve())
    (folder / "Unrelated").mkdir()
    out = tmp_path / "ext_eval"
    m = evaluate(compose_cfg(f"folder={folder}", f"output_dir={out}", config_name="evaluate"))
    assert m["folder/n"] == 6
    assert m["folder/support/Monkeypox"] == 0
    assert m["folder/auc/Monkeypox"] is None and m["folder/bootstrap_unit"] == "image"
    # a copy of a training image is no external evidence: left out, counted, named with its twin
    assert m["folder/n_duplicates_of_training_data"] == 1
    excluded = {e["path"]: e["reason"] for e in json.loads((out / "excluded.json").read_text())}
    assert set(excluded) == {"Normal/broken.png", "Unrelated", "Normal/a_training_image.png"}
    assert excluded["Normal/a_training_image.png"].startswith("duplicate of the checkpoint's data")
    assert "absent from the targets" in (out / "classification_report.md").read_text()


def test_checkpoint_round_trip_gives_the_same_predictions(tmp_path, synthetic_root):
    dm = datamodule(synthetic_root, tmp_path)
    model = SkinLesionClassifier(CLASSES, backbone="simple_cnn", pretrained=False)
    trainer = quiet_trainer()
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = load_classifier(tmp_path / "m.ckpt")
    x = torch.stack([dm.datasets["test"][i][0] for i in range(len(dm.datasets["test"]))])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)
    assert loaded.class_names == CLASSES and loaded.hparams.backbone == "simple_cnn"
    restored = SkinLesionDataModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    assert restored.manifest_path == dm.manifest_path


@pytest.mark.integration
def test_cli_short_non_default_run(tmp_path, real_slice):
    r = run_cli(
        "skinlesion.train",
        "optimizer=rmsprop",
        "regularizer=l1",
        "model=simple_cnn",
        "trainer.max_epochs=2",
        f"data.root={real_slice}",
        "data.image_size=48",
        f"paths.output_root={tmp_path}",
        "callbacks.progress_bar=null",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "latest/metrics.json").read_text())
    assert metrics["epochs"] == 2 and "test/f1_macro" in metrics
    cfg = (tmp_path / "latest/.hydra/config.yaml").read_text()
    assert "RMSprop" in cfg and "l1: 1.0e-06" in cfg


def test_unreadable_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(Exception, match="not a usable skinlesion checkpoint"):
        load_classifier(bad)


@pytest.mark.integration
def test_ensemble_of_members_with_different_preprocessing(tmp_path, compose_cfg, real_slice):
    """Members see the images through their own eval transforms; the ensemble is their mean."""
    members = []
    for size in (48, 64):
        cfg = compose_cfg(f"data.root={real_slice}", *FAST, f"data.image_size={size}", "trainer.max_epochs=1")
        cfg.paths.output_dir = str(tmp_path / f"run{size}")
        train(cfg)
        members.append(tmp_path / f"run{size}" / "checkpoints" / "best.ckpt")
    sizes = {load_classifier(c).preprocessing["image_size"] for c in members}
    assert sizes == {48, 64}
    probs = []
    for k, ckpt in enumerate(members):
        out = tmp_path / f"member{k}"
        evaluate(compose_cfg(f"ckpt_path={ckpt}", f"output_dir={out}", config_name="evaluate"))
        probs.append(np.loadtxt(out / "predictions.csv", delimiter=",", skiprows=1, usecols=(3, 4, 5, 6)))
    out = tmp_path / "ensemble"
    listed = ",".join(str(c) for c in members)
    m = evaluate(compose_cfg(f"ckpt_path=[{listed}]", f"output_dir={out}", config_name="evaluate"))
    assert m["test/ensemble_members"] == [str(c) for c in members]
    ensemble = np.loadtxt(out / "predictions.csv", delimiter=",", skiprows=1, usecols=(3, 4, 5, 6))
    assert not np.allclose(probs[0], probs[1])  # two different models ...
    assert np.allclose(ensemble, np.mean(probs, axis=0), atol=2e-6)  # ... averaged image by image
