"""A mistake at the command line is one line on stderr and exit status 2 (Hydra's own: 1), never a
traceback: each case runs ``python -m skinlesion.<command>`` in a process of its own."""

import json

import pytest

from tests.helpers import CLASSES, nobody_prefix, run_cli


@pytest.mark.parametrize(
    "args, code, fragments",
    [
        (["skinlesion.train", "optimizer=foo"], 1, ["Could not find 'optimizer/foo'", "adamw", "rmsprop"]),
        (
            ["skinlesion.prepare", "data.root=/nonexistent/msid"],
            2,
            ["/nonexistent/msid does not exist", "dipuiucse/monkeypoxskinimagedataset"],
        ),
        (
            ["skinlesion.evaluate", "ckpt_path=/nonexistent/best.ckpt"],
            2,
            ["checkpoint /nonexistent/best.ckpt not found"],
        ),
        (["skinlesion.cv", "n_folds=1"], 2, ["n_folds >= 2"]),
    ],
    ids=["unknown-optimizer", "missing-data-root", "missing-checkpoint", "too-few-folds"],
)
def test_cli_errors_are_one_clear_message(tmp_path, args, code, fragments):
    r = run_cli(*args, f"paths.output_root={tmp_path}")
    assert r.returncode == code
    for fragment in fragments:
        assert fragment in r.stderr
    assert "Traceback" not in r.stderr


def test_output_root_under_a_file_is_one_clear_line(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output root should go")
    r = run_cli("skinlesion.train", f"paths.output_root={blocker / 'outputs'}", "model=simple_cnn")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"cannot create the run directory {blocker}/outputs" in r.stderr
    assert f"{blocker} is not a directory" in r.stderr


def test_read_only_output_root_is_one_clear_line(shared_tmp):
    """As an unprivileged user: root (CI) writes through directory permissions."""
    locked = shared_tmp / "locked"
    locked.mkdir(mode=0o555)
    r = run_cli("skinlesion.train", f"paths.output_root={locked}", "model=simple_cnn", prefix=nobody_prefix())
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"{locked} is not writable" in r.stderr
    assert list(locked.iterdir()) == []


def test_evaluate_refuses_a_checkpoint_that_would_run_code(evil, tmp_path):
    path, marker = evil
    r = run_cli("skinlesion.evaluate", f"ckpt_path={path}", f"paths.output_root={tmp_path}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "refused to load" in r.stderr and "Unsupported global" in r.stderr
    assert not marker.exists()


def test_cv_compare_names_the_missing_run(tmp_path):
    found = tmp_path / "found"  # a CV run with no folds: read fine, so the error is the other run's
    found.mkdir()
    (found / "cv_report.json").write_text(json.dumps({"model": "m", "class_names": CLASSES, "folds": []}))
    r = run_cli(
        "skinlesion.cv_compare", f"runs=[{found},{tmp_path / 'nowhere'}]", f"paths.output_root={tmp_path}"
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "nowhere/cv_report.json not found" in r.stderr
