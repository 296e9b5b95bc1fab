"""The ablation end to end: each variant trains once, the table is written, outputs/latest is left alone."""

import json

import pytest

from tests.helpers import FAST, make_class_folders, run_cli


@pytest.mark.integration
def test_ablation_trains_each_variant_once_and_tabulates(tmp_path, synthetic_root):
    # photos the variants never trained on (the same seeds would be copies, left out of the score)
    external = make_class_folders(
        tmp_path / "external", per_class=3, classes=["Chickenpox", "Normal"], first_seed=500
    )
    out = tmp_path / "outputs" / "ablation"  # where conf/ablation.yaml puts it: inside outputs/
    main_run = tmp_path / "outputs" / "main-run"  # what make train left; make evaluate scores it
    main_run.mkdir(parents=True)
    (tmp_path / "outputs" / "latest").symlink_to("main-run")
    common = ",".join(f"'{o}'" for o in [*FAST, "trainer.max_epochs=1", f"data.root={synthetic_root}"])
    args = (
        "skinlesion.ablation",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"output_dir={out}",
        f"external={external}",
        f"common=[{common}]",
        "only=[baseline,no_label_smoothing]",  # two of conf/ablation.yaml's variants
    )
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads((out / "ablation.json").read_text())
    assert list(results) == ["baseline", "no_label_smoothing"]
    for name, rows in results.items():
        assert len(rows) == 1 and 0 <= rows[0]["test/acc"] <= 1, name
        assert rows[0]["folder/n"] == 6  # each variant's best checkpoint is scored on the external folder
    table = (out / "ablation.md").read_text()
    assert "| baseline | 1 |" in table and "| no_label_smoothing | 1 |" in table
    assert (tmp_path / "outputs" / "latest").resolve() == main_run.resolve()  # variants never move it

    stamp = (out / "baseline" / "seed42" / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    again = run_cli(*args)  # finished variants are read back, not trained again
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "baseline" / "seed42" / "checkpoints" / "best.ckpt").stat().st_mtime_ns == stamp
    assert json.loads((out / "ablation.json").read_text()) == results
