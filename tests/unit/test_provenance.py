"""What a run directory records about itself, and the warning when the data under a checkpoint changed."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
from importlib import metadata

import pytest
import torch

from skinlesion.core.artifacts import provenance, record_run, run_name
from skinlesion.inference.loading import check_manifest
from skinlesion.models.classifier import SkinLesionClassifier
from tests.helpers import CLASSES


def test_provenance_names_versions_commit_and_data():
    info = provenance("ab" * 32)
    assert info["packages"]["torch"] == metadata.version("torch") == torch.__version__.split("+")[0]
    assert info["packages"]["lightning"] == metadata.version("lightning")
    assert info["data_manifest_sha256"] == "ab" * 32
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", info["git_commit"])
    assert info["git_dirty"] in (True, False, None)


def test_commit_is_unknown_outside_a_git_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))  # project root without .git
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    info = provenance(None)
    assert info["git_commit"] == "unknown" and info["git_dirty"] is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_commit_is_the_checkouts_head():
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert provenance(None)["git_commit"] == (head or "unknown")


def test_a_resume_keeps_the_first_record_and_appends(tmp_path, caplog):
    first = record_run(tmp_path, "a" * 64)
    stored = json.loads((tmp_path / "run_info.json").read_text())
    stored["packages"]["torch"] = "0.0.1"  # as if the run had started under another torch
    (tmp_path / "run_info.json").write_text(json.dumps(stored))
    with caplog.at_level(logging.WARNING):
        info = record_run(tmp_path, "a" * 64, resumed_from="run/checkpoints/last.ckpt")
    assert info["command"] == first["command"] and info["packages"]["torch"] == "0.0.1"
    assert [r["from"] for r in info["resumes"]] == ["run/checkpoints/last.ckpt"]
    assert info["resumes"][0]["packages"]["torch"] == first["packages"]["torch"]
    assert "resuming with a different packages" in caplog.text


def test_evaluate_warns_when_the_data_under_a_checkpoint_changed(tmp_path, caplog):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,sha256,label,group,split\nA/a.png,00,A,g0,test\n")
    trained_on = hashlib.sha256(manifest.read_bytes()).hexdigest()
    model = SkinLesionClassifier(
        CLASSES, backbone="simple_cnn", pretrained=False, data_manifest_sha256=trained_on
    )
    with caplog.at_level(logging.WARNING):
        check_manifest(model, manifest)
    assert "has changed" not in caplog.text
    manifest.write_text(manifest.read_text() + "A/b.png,01,A,g1,test\n")
    with caplog.at_level(logging.WARNING):
        check_manifest(model, manifest)
    assert "the data under this checkpoint has changed" in caplog.text and trained_on[:12] in caplog.text


def test_run_name_keeps_the_run_and_drops_the_server_directories():
    assert run_name("/srv/ml/outputs/2026-11-25/10-22-48/checkpoints/best.ckpt") == "2026-11-25/10-22-48"
    assert (
        run_name("/a/outputs/cv/2026-11-25/09-03-02/fold0/checkpoints/best.ckpt")
        == "cv/2026-11-25/09-03-02/fold0"
    )
    assert run_name("/home/alice/models/my-run/best.ckpt") == "my-run"
    assert run_name(None) is None
