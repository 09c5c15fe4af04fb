"""Training on a read-only or full disk: one line, exit 2, and the previous good state survives."""
from __future__ import annotations

import sys
from pathlib import Path

from faults import fill, tmpfs

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import run_script  # noqa: E402

from pipeline import checkpoint  # noqa: E402


def _train(data_dir: Path, save_dir: Path, epochs: int):
    return run_script("train_pipeline.py", "--data-dir", data_dir, "--epochs", str(epochs), "--save-dir", save_dir,
                      "--no-mlflow", "--no-tensorboard", "--system-interval", "0", "--no-baselines")


def test_a_read_only_save_dir_is_one_line(penguins_dir: Path, tmp_path: Path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        done = _train(penguins_dir, ro / "run", 1)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "writable" in done.stderr
    assert done.stderr.count("error: ") == 1


def test_a_full_disk_keeps_the_last_good_checkpoint_and_the_run_continues_later(penguins_dir: Path, tmp_path: Path):
    with tmpfs(tmp_path / "small", "size=8m") as disk:
        save_dir = disk / "run"
        assert _train(penguins_dir, save_dir, 2).returncode == 0
        good = (save_dir / "last.pt").read_bytes()
        fill(disk, leave_bytes=4096)
        full = _train(penguins_dir, save_dir, 4)
        assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-2000:]
        assert "the disk is full" in full.stderr and full.stderr.count("error: ") == 1
        assert (save_dir / "last.pt").read_bytes() == good  # the previous good state survived
        assert checkpoint.load_checkpoint(save_dir / "last.pt")["state"]["epoch"] == 2
        assert not list(save_dir.glob(".*.tmp"))  # no half-written temporary left behind
        (disk / "filler").unlink()  # space again: the same command continues
        again = _train(penguins_dir, save_dir, 4)
        assert again.returncode == 0, again.stderr[-2000:]
        assert checkpoint.load_checkpoint(save_dir / "last.pt")["state"]["epoch"] == 4
