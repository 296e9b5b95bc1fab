"""compare_predictions: models compared on the photos they all scored, paired photo by photo."""

import csv

import pytest

from skinlesion.compare_predictions import compare
from skinlesion.core.errors import ConfigError


def write(path, rows):
    path.mkdir(parents=True)
    with open(path / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "true", "pred", "p_A", "p_B"])
        for name, true, right in rows:
            pred = true if right else ("B" if true == "A" else "A")
            w.writerow([name, true, pred, *(("0.9", "0.1") if pred == "A" else ("0.1", "0.9"))])


def test_only_common_photos_count_and_a_clear_gain_is_called_better(tmp_path, compose_cfg):
    photos = [(f"x{i}.jpg", "AB"[i % 2]) for i in range(60)]
    write(tmp_path / "a", [(p, t, i < 30) for i, (p, t) in enumerate(photos)])  # half right
    write(tmp_path / "b", [(p, t, True) for p, t in photos[:50]])  # all right, 10 photos fewer
    cfg = compose_cfg(
        f"evals=[{tmp_path / 'a'},{tmp_path / 'b'}]",
        "names=[a,b]",
        f"output={tmp_path / 'table.md'}",
        config_name="compare_predictions",
    )
    result = compare(cfg)
    assert result["n_common"] == 50
    a, b = result["rows"]
    assert a["acc"] == pytest.approx(30 / 50) and b["acc"] == 1.0
    assert b["diff"] == pytest.approx(0.4) and b["diff_ci"][0] > 0 and b["verdict"] == "better"
    assert "| b | 1.000 |" in (tmp_path / "table.md").read_text()
    with pytest.raises(ConfigError, match="two or more"):
        compare(compose_cfg(f"evals=[{tmp_path / 'a'}]", config_name="compare_predictions"))
