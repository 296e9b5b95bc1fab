"""The optimizer study end to end on a tiny grid: lr search, grid, paired differences, norms, plots,
and a second invocation that reads every cell back instead of training it."""

import json
import math
from pathlib import Path

import pytest

from tests.helpers import FAST, run_cli


def checkpoints(root) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.ckpt")}


@pytest.mark.integration
@pytest.mark.slow
def test_optimizer_study_runs_each_cell_once_and_tabulates(tmp_path, synthetic_root):
    out = tmp_path / "outputs" / "optimizer_study"
    tiny = [*FAST, "data.image_size=32", "trainer.max_epochs=1", f"data.root={synthetic_root}"]
    args = (
        "skinlesion.optimizer_study",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"output_dir={out}",
        "common=[" + ",".join(f"'{o}'" for o in tiny) + "]",
        "lr_grid.adam=[0.001,0.003]",  # a search of two values; rmsprop's grid is one value
        "lr_grid.rmsprop=[0.0003]",
        "~regularizers.l1",  # none and l2
        "dropouts=[0.3]",
        "n_folds=2",
    )
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads((out / "optimizer_study.json").read_text())

    assert result["lr_search"]["adam"]["chosen"] in (0.001, 0.003)
    assert result["lr_search"]["rmsprop"]["chosen"] == 0.0003
    assert [c["name"] for c in result["cells"]] == [
        "adam/none/dropout0.3",
        "adam/l2/dropout0.3",
        "rmsprop/none/dropout0.3",
        "rmsprop/l2/dropout0.3",
    ]
    for cell in result["cells"]:
        assert [f["fold"] for f in cell["folds"]] == [0, 1]
        assert cell["summary"]["f1_macro"]["sd"] >= 0 and cell["summary"]["epochs_to_best"]["mean"] == 1
        assert all(
            math.isfinite(cell["norms"][k]["mean"]) and cell["norms"][k]["mean"] > 0 for k in cell["norms"]
        )
    # the none cell at the base dropout is stage 1's run at the chosen lr, not a second training
    chosen = result["lr_search"]["adam"]["runs"]
    assert result["cells"][0]["directory"] in {r["directory"] for r in chosen.values()}
    assert not (out / "grid" / "adam" / "none").exists()

    kinds = [(c["kind"], c["a"], c["b"]) for c in result["comparisons"]]
    assert ("optimizer", "adam/none/dropout0.3", "rmsprop/none/dropout0.3") in kinds
    assert ("regularizer", "rmsprop/none/dropout0.3", "rmsprop/l2/dropout0.3") in kinds
    assert len(kinds) == 4  # 2 optimizer (one per regularizer) + 2 regularizer (one per optimizer)
    for c in result["comparisons"]:
        d = c["diff"]["f1_macro"]
        assert d["low"] <= d["mean"] <= d["high"] and d["verdict"] in ("real", "noise")

    text = (out / "optimizer_study.md").read_text()
    assert "| adam/l2/dropout0.3 |" in text and "corrected resampled t" in text
    for plot in ("lr_search.png", "learning_curves.png"):
        assert (out / plot).stat().st_size > 0, plot
    assert not (tmp_path / "outputs" / "latest").exists()  # cv folds never move outputs/latest

    # the lr search ran fold 0 only (lr_folds: [0]); the grid completed the chosen lr's run
    for lr, run in chosen.items():
        folds = sorted(p.name for p in Path(run["directory"]).glob("fold*"))
        kept = float(lr) == result["lr_search"]["adam"]["chosen"]
        assert folds == (["fold0", "fold1"] if kept else ["fold0"])
    assert result["lr_folds"] == [0] and result["folds"] == [0, 1]

    stamps = checkpoints(out)
    # (best, last) x (3 lr runs + 2 chosen runs completed + 2 cells x 2 folds)
    assert len(stamps) == 2 * (3 + 2 + 2 * 2)
    again = run_cli(*args)  # every cell is read back: nothing is trained again
    assert again.returncode == 0, again.stderr[-3000:]
    assert checkpoints(out) == stamps
    assert json.loads((out / "optimizer_study.json").read_text())["comparisons"] == result["comparisons"]
