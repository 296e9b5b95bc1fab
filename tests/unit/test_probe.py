"""Linear probes of frozen backbones: grouped folds, scores, combinations, bad config."""

import json
from pathlib import Path

import numpy as np
import pytest

from skinlesion.core.errors import ConfigError
from skinlesion.probe import probe
from tests.helpers import make_class_folders


def test_probe_separates_colour_classes_and_writes_its_table(tmp_path, synthetic_root, compose_cfg):
    external = make_class_folders(tmp_path / "external", per_class=4, classes=["Chickenpox", "Normal"])
    (external / "Normal" / "notes.txt").write_text("not an image")  # left out, not fatal
    cfg = compose_cfg(
        f"data.root={synthetic_root}",
        "backbones=[efficientnet_lite0,mobilenet_v2]",
        "combinations=[[efficientnet_lite0,mobilenet_v2]]",
        "image_size=64",
        "n_folds=3",
        f"external={external}",
        f"output_dir={tmp_path / 'probe'}",
        config_name="probe",
    )
    results = probe(cfg)
    assert list(results) == ["efficientnet_lite0", "mobilenet_v2", "efficientnet_lite0+mobilenet_v2"]
    assert results["efficientnet_lite0+mobilenet_v2"]["dim"] == 1280 + 1280
    for r in results.values():
        folds = r["cv/acc"]["folds"]
        assert len(folds) == 3 and r["cv/acc"]["mean"] == pytest.approx(np.mean(folds))
        # the synthetic classes differ by colour: ImageNet features separate them far above chance
        assert r["cv/acc"]["mean"] > 0.7 and r["external/acc"] > 0.7
    left_out = json.loads((tmp_path / "probe" / "excluded.json").read_text())
    assert [e["path"] for e in left_out] == ["Normal/notes.txt"]  # reported, not silently dropped
    saved = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert saved["mobilenet_v2"]["test/acc"] == pytest.approx(results["mobilenet_v2"]["test/acc"])
    assert "| efficientnet_lite0+mobilenet_v2 | 2560 |" in Path(tmp_path / "probe" / "probe.md").read_text()


def test_probe_refuses_a_combination_of_unlisted_backbones(synthetic_root, compose_cfg):
    cfg = compose_cfg(
        f"data.root={synthetic_root}",
        "backbones=[efficientnet_lite0]",
        "combinations=[[mobilenet_v2]]",
        config_name="probe",
    )
    with pytest.raises(ConfigError, match="mobilenet_v2"):
        probe(cfg)
