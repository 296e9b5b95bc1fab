"""``outputs/latest`` follows only finished runs of the main path (``python -m skinlesion.train``).

What ``move_latest`` decides from the configuration and the run directory; the end-to-end cases
(a main run, a ``fit.train`` run as CV and the sweeps make, a CV fold, a multirun trial, an
ablation variant) are in tests/integration/test_latest.py, test_ddp.py and test_ablation.py.
"""

from pathlib import Path

import pytest

from skinlesion.core.artifacts import is_inside, link_latest
from skinlesion.core.errors import ConfigError
from skinlesion.training.fit import move_latest, train


def previous_run(output_root: Path) -> Path:
    """An earlier main run that ``latest`` points at."""
    run = output_root / "2026-01-01" / "10-00-00"
    run.mkdir(parents=True)
    assert link_latest(output_root, run) == output_root / "latest"
    return run


@pytest.mark.parametrize(
    "where, mode, moves",
    [
        ("inside", "auto", True),
        ("inside", "true", True),
        ("inside", "false", False),  # what ablation variants pass
        ("outside", "auto", False),  # never left pointing outside outputs/ ...
        ("outside", "true", True),  # ... unless the user asked for it
        ("outside", "false", False),
    ],
)
def test_latest_moves_to_a_run_inside_outputs_or_where_the_user_asked(
    tmp_path, compose_cfg, where, mode, moves
):
    cfg = compose_cfg(f"link_latest={mode}")
    root = Path(cfg.paths.output_root)
    before = previous_run(root)
    run = (root / "2026-01-02" / "11-00-00") if where == "inside" else tmp_path / "elsewhere" / "run"
    run.mkdir(parents=True)
    link = move_latest(cfg, run)
    assert (link is not None) == moves
    assert (root / "latest").resolve() == (run if moves else before).resolve()
    assert not (root / "latest").readlink().is_absolute()  # the outputs folder can move


@pytest.mark.parametrize("mode", ["auto", "true"])
def test_a_multirun_trial_never_moves_latest(tmp_path, hydra_job, mode):
    cfg = hydra_job(f"paths.output_root={tmp_path / 'outputs'}", f"link_latest={mode}")
    root = Path(cfg.paths.output_root)
    before = previous_run(root)
    trial = root / "multirun" / "2026-01-02" / "11-00-00" / "0"
    trial.mkdir(parents=True)
    assert move_latest(cfg, trial) is None
    assert (root / "latest").resolve() == before.resolve()


def test_run_directories_inside_the_output_root(tmp_path):
    root = tmp_path / "outputs"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "linked").symlink_to(tmp_path / "elsewhere")  # resolved: it lies outside
    assert is_inside(root / "a", root) and is_inside(root / "a" / "b", root)
    assert not is_inside(root, root) and not is_inside(tmp_path / "elsewhere", root)
    assert not is_inside(root / "linked", root) and not is_inside(tmp_path / "outputs-2", root)


def test_a_bad_link_latest_is_refused_before_training(compose_cfg):
    with pytest.raises(ConfigError, match="link_latest must be auto, true or false"):
        train(compose_cfg("link_latest=sometimes", "data.root=/nonexistent"))
