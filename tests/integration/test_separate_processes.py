"""What only a second Python process can show: the manifest under another hash seed, and a write
killed with SIGKILL half-way through a checkpoint."""

import os
import shutil
import subprocess
import sys
import textwrap

from skinlesion.core.artifacts import TMP_INFIX
from skinlesion.core.checkpoints import load_checkpoint
from skinlesion.core.resume import remove_partial_files
from skinlesion.data.manifest import PrepareParams, prepare
from tests.helpers import CLASSES, partial_files


def test_manifest_is_byte_identical_in_another_process(tmp_path, synthetic_root):
    """Another interpreter, another hash seed (set and dict order): the same manifest, byte for byte."""
    shutil.copy(synthetic_root / "Measles/measles0.png", synthetic_root / "Measles/measles_copy.png")
    shutil.copy(synthetic_root / "Normal/normal0.png", synthetic_root / "Monkeypox/mislabelled.png")
    prepare(synthetic_root, tmp_path / "here", PrepareParams.from_config(CLASSES, None, None, "train"))
    args = [f"data.root={synthetic_root}", f"paths.output_root={tmp_path / 'there'}"]
    r = subprocess.run(
        [sys.executable, "-m", "skinlesion.prepare", *args],
        env=os.environ | {"PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (there,) = (tmp_path / "there/prepared").glob("*/manifest.csv")
    assert there.read_bytes() == (tmp_path / "here/manifest.csv").read_bytes()


def test_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path):
    """SIGKILL while best.ckpt is being rewritten: the old file is still whole and loadable."""
    best = tmp_path / "best.ckpt"
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from skinlesion.core.checkpoints import save_checkpoint
        save_checkpoint({{"epoch": 0, "w": torch.arange(1000.0)}}, {str(best)!r})
        def dying_save(obj, fh, *a, **k):
            fh.write(b"PK\\x03\\x04" + b"x" * 4096)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        save_checkpoint({{"epoch": 1, "w": torch.zeros(1000)}}, {str(best)!r})
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert r.returncode == -9
    assert load_checkpoint(best)["epoch"] == 0
    assert len(partial_files(tmp_path)) == 1  # the garbage of the killed write, never read
    in_progress = tmp_path / f".last.ckpt{TMP_INFIX}{os.getpid()}-0000"  # a live writer's file
    in_progress.write_bytes(b"being written")
    assert remove_partial_files(tmp_path) != [] and partial_files(tmp_path) == [in_progress.name]
