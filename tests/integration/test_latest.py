"""``outputs/latest`` moves when a run of ``python -m skinlesion.train`` finishes, and not for a CV
fold, which calls ``fit.train`` as native sweep trials and sweep retrains do. (Multirun trials:
tests/integration/test_ddp.py; ablation variants: test_ablation.py; the rules: unit/test_latest.py.)
"""

import json
from pathlib import Path

from omegaconf import open_dict

from skinlesion.cv import cross_validate
from skinlesion.train import train_main_path
from tests.helpers import TINY


def test_only_the_train_command_moves_latest(tmp_path, compose_cfg, synthetic_root):
    latest = tmp_path / "outputs" / "latest"
    main = compose_cfg(f"data.root={synthetic_root}", *TINY)
    train_main_path(main)
    assert latest.resolve() == Path(main.paths.output_dir).resolve()
    assert "test/acc" in json.loads((latest / "metrics.json").read_text())

    cv = compose_cfg(f"data.root={synthetic_root}", *TINY, "n_folds=2", "folds=[0]", config_name="cv")
    with open_dict(cv):
        cv.paths.output_dir = str(tmp_path / "outputs" / "cv")
    report = cross_validate(cv)
    assert [f["fold"] for f in report["folds"]] == [0] and (
        tmp_path / "outputs/cv/fold0/metrics.json"
    ).is_file()
    assert latest.resolve() == Path(main.paths.output_dir).resolve()  # the fold left it alone
