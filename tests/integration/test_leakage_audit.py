"""The leakage audit end to end: both protocols train once per seed, the table is written, a second
invocation reads the finished runs back instead of training them again."""

import json
import shutil

import pytest

from tests.helpers import FAST, make_class_folders, run_cli


@pytest.mark.integration
def test_leakage_audit_trains_each_protocol_per_seed_once_and_tabulates(tmp_path):
    root = make_class_folders(tmp_path / "data", per_class=8)
    for f in sorted(root.glob("*/*.png")):  # every image twice: the random split cuts some pairs
        shutil.copy(f, f.with_name(f"{f.stem}_copy.png"))
    outputs = tmp_path / "outputs"
    out = outputs / "leakage_audit"  # where conf/leakage_audit.yaml puts it
    tiny = [*FAST, "data.image_size=32", "trainer.max_epochs=1", f"data.root={root}"]
    args = (
        "skinlesion.leakage_audit",
        f"paths.output_root={outputs}",
        "seeds=[1,2]",
        "common=[" + ",".join(f"'{o}'" for o in tiny) + "]",
    )
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    result = json.loads((out / "leakage_audit.json").read_text())
    assert set(result["runs"]) == {"random", "grouped"}
    for protocol, rows in result["runs"].items():
        assert [r["seed"] for r in rows] == [1, 2], protocol
        assert all(0 <= r["test/acc"] <= 1 and r["n_test"] > 0 for r in rows), protocol
    # the twins are counted from each run's own manifest: the grouped split never leaks one
    assert sum(r["test_group_in_train"] for r in result["runs"]["random"]) > 0
    assert all(r["test_group_in_train"] == 0 for r in result["runs"]["grouped"])
    assert result["difference"]["acc"]["n"] == 2
    table = (out / "leakage_audit.md").read_text()
    assert "| random | 2 |" in table and "| grouped | 2 |" in table and "includes 0 is noise" in table
    assert not (outputs / "latest").exists()  # the audit's runs never move outputs/latest

    ckpts = sorted(out.glob("*/seed*/checkpoints/best.ckpt"))
    assert len(ckpts) == 4
    stamps = [c.stat().st_mtime_ns for c in ckpts]
    again = run_cli(*args)  # finished runs are read back, not trained again
    assert again.returncode == 0, again.stderr[-2000:]
    assert [c.stat().st_mtime_ns for c in ckpts] == stamps
    assert json.loads((out / "leakage_audit.json").read_text()) == result
