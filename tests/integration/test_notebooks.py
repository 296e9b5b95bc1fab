"""The notebooks run top to bottom on real data (quick mode) and are committed without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from skinlesion.core.paths import project_root
from skinlesion.training.fit import train

NOTEBOOKS = sorted((project_root() / "notebooks").glob("*.ipynb"))


def execute(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    return nb


def figures(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_both_notebooks_exist_and_are_stripped():
    assert [p.name for p in NOTEBOOKS] == ["01_data_exploration.ipynb", "02_results.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), path.name


@pytest.mark.integration
def test_data_exploration_runs_on_the_real_data(tmp_path, monkeypatch, real_slice):
    monkeypatch.setenv("SKINLESION_QUICK", "1")
    monkeypatch.setenv("SKINLESION_DATA", str(real_slice))
    monkeypatch.setenv("SKINLESION_OUTPUTS", str(tmp_path))
    nb = execute(NOTEBOOKS[0])
    assert figures(nb) >= 3  # balance, samples, statistics (the slice has no duplicate groups)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "48 images under" in text and "no duplicate groups" in text


@pytest.mark.integration
def test_results_runs_on_a_fresh_run(tmp_path, monkeypatch, compose_cfg, real_slice):
    cfg = compose_cfg(
        f"data.root={real_slice}",
        "model=simple_cnn",
        "data.image_size=48",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=null",
        "trainer.enable_model_summary=false",
    )
    train(cfg)
    monkeypatch.setenv("SKINLESION_RUN", cfg.paths.output_dir)
    monkeypatch.setenv("SKINLESION_OUTPUTS", str(tmp_path / "outputs"))
    nb = execute(NOTEBOOKS[1])
    assert figures(nb) >= 4  # curves, confusion matrix, misclassified grid, class activation maps
    cam = next(c for c in nb.cells if c.cell_type == "code" and "explain=True" in c.source)
    assert any("image/png" in o.get("data", {}) for o in cam.outputs), cam.outputs
