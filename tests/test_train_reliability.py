"""The engine's side of reliability: refused before anything is written, nothing of the user's deleted,
edited data never resumed on, no traceback for a closed stdout or a Ctrl-C, no debris from a kill."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import train
from pipeline.errors import CheckpointError, ConfigError

from conftest import ROOT, script_env
from test_train import FAST, strict_json

sys.path.insert(0, str(ROOT / "solutions"))
import train_pipeline  # noqa: E402

BAD_YAML = {
    "epochs: ten": "--epochs (YAML key epochs) must be a whole number, e.g. 20, not 'ten'",
    "epochs: 2.7": "--epochs (YAML key epochs) must be a whole number, e.g. 20, not 2.7",
    "learning_rate: abc": "--learning-rate (YAML key learning_rate) must be a number",
    "hidden_sizes: 64": "--hidden-sizes (YAML key hidden_sizes) must be a list of whole numbers",
    "hidden_sizes: {a: 1}": "--hidden-sizes (YAML key hidden_sizes) must be a list of whole numbers",
    "device: 5": "--device (YAML key device) must be a non-empty text, not 5",
    "resume: null": "--resume (YAML key resume) must be a non-empty text, not None",
    "mlflow: 'no'": "--mlflow (YAML key mlflow) must be true or false",
    "tensorboard: 'false'": "--tensorboard (YAML key tensorboard) must be true or false",
    "model_args: [1, 2]": "--model-args (YAML key model_args) must be a mapping",
    "epochs: true": "--epochs (YAML key epochs) must be a whole number",
    "learning_rat: 0.1": "unknown config key(s): learning_rat (did you mean learning_rate?)",
}


@pytest.mark.parametrize("line", list(BAD_YAML), ids=list(BAD_YAML))
def test_config_yaml_with_wrong_types_is_one_line(line: str, penguins_dir: Path, tmp_path: Path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {penguins_dir}\n{line}\n")
    assert train_pipeline.main(["--config", str(cfg), "--save-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert BAD_YAML[line] in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()  # refused before anything was made


def test_papermill_style_parameters_reach_the_same_validation():
    with pytest.raises(ConfigError, match="must be true or false"):
        train.make_config({"data_dir": "d", "save_dir": "s", "mlflow": "False"})
    assert train.make_config({"data_dir": "d", "save_dir": "s", "learning_rate": 1, "epochs": 3}).learning_rate == 1.0


def test_a_refused_run_has_written_nothing_and_deleted_nothing(penguins_dir: Path, tmp_path: Path, capsys):
    base = ["--data-dir", str(penguins_dir), "--epochs", "1", "--no-mlflow", "--system-interval", "0"]
    fresh = tmp_path / "fresh"
    assert train_pipeline.main(base + ["--save-dir", str(fresh), "--early-stopping-metric", "val_r2"]) == 2
    assert "val_r2 is not produced for classification" in capsys.readouterr().err
    assert not fresh.exists()  # not even the folder: no metrics.json, no logs, no TensorBoard file
    # an existing run survives a refused --resume never: the refusal comes before the old run is cleared
    old = tmp_path / "old"
    assert train_pipeline.main(base + ["--save-dir", str(old)]) == 0
    before = {p.name: p.read_bytes() for p in old.glob("*") if p.is_file()}
    assert train_pipeline.main(base + ["--save-dir", str(old), "--resume", "never", "--loss", "mse"]) == 2
    assert "--loss mse is for regression" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in old.glob("*") if p.is_file()} == before


def test_resume_refuses_edited_processed_arrays(penguins_dir: Path, tmp_path: Path):
    data_dir = tmp_path / "data"
    shutil.copytree(penguins_dir, data_dir)
    cfg = dict(data_dir=str(data_dir), save_dir=str(tmp_path / "s"), **FAST)
    train.run(train.make_config(dict(cfg, epochs=1)), log=lambda m: None)
    X = np.load(data_dir / "train_X.npy")
    X[0, 0] += 1.0  # same shape, same schema.json: only the contents differ
    np.save(data_dir / "train_X.npy", X)
    with pytest.raises(CheckpointError, match="trained on different data"):
        train.run(train.make_config(dict(cfg, epochs=2)), log=lambda m: None)


def test_a_killed_checkpoint_write_leaves_no_debris(penguins_dir: Path, tmp_path: Path):
    save_dir = tmp_path / "s"
    cfg = dict(data_dir=str(penguins_dir), save_dir=str(save_dir), **FAST)
    train.run(train.make_config(dict(cfg, epochs=1)), log=lambda m: None)
    size = (save_dir / "last.pt").stat().st_size
    debris = [save_dir / ".last.pt.0123456789ab.tmp", save_dir / ".metrics.json.abcdefabcdef.tmp"]
    for path in debris:
        path.write_bytes(b"\0" * size)  # what SIGKILL between write and rename leaves
    mine = save_dir / ".my-notes.txt.0123456789ab.tmp"
    mine.write_text("the user's, not ours")
    train.run(train.make_config(dict(cfg, epochs=2)), log=lambda m: None)
    assert not any(p.exists() for p in debris) and mine.exists()


def test_a_closed_stdout_does_not_stop_training(penguins_dir: Path, tmp_path: Path):
    """`train_pipeline.py ... | head -1`: the reader goes away, training goes on and ends completed."""
    process = subprocess.Popen([sys.executable, str(ROOT / "solutions" / "train_pipeline.py"), "--data-dir",
                                str(penguins_dir), "--epochs", "6", "--save-dir", str(tmp_path / "s"), "--no-mlflow",
                                "--system-interval", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=script_env())
    process.stdout.readline()
    process.stdout.close()  # like `head -1` exiting
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr[-2000:]
    assert strict_json(tmp_path / "s" / "metrics.json")["run"]["status"] == "completed"


def test_ctrl_c_during_start_up_and_twice_quickly_is_no_traceback(penguins_dir: Path, tmp_path: Path):
    cmd = [sys.executable, str(ROOT / "solutions" / "train_pipeline.py"), "--data-dir", str(penguins_dir),
           "--epochs", "200", "--save-dir", str(tmp_path / "s"), "--no-mlflow", "--system-interval", "0",
           "--log-every", "1"]
    early = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env())
    time.sleep(0.3)  # still importing
    early.send_signal(signal.SIGINT)
    _, stderr = early.communicate(timeout=120)
    assert early.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]

    twice = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env())
    assert "epoch 1/200" in twice.stdout.readline() + twice.stdout.readline()  # training
    twice.send_signal(signal.SIGINT)
    twice.send_signal(signal.SIGINT)
    _, stderr = twice.communicate(timeout=120)
    assert twice.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert strict_json(tmp_path / "s" / "metrics.json")["run"]["status"] == "interrupted"



def test_a_run_killed_while_finishing_is_finished_by_the_same_command(penguins_dir: Path, tmp_path: Path):
    """SIGKILL after the final checkpoint (status completed) but before metrics.json and the log say so: the
    same command again redoes the finish instead of answering 'nothing to do' over a half-finished record."""
    import json

    from pipeline import fileio, monitor

    save_dir = tmp_path / "s"
    cfg = dict(data_dir=str(penguins_dir), save_dir=str(save_dir), epochs=2, **FAST)
    done = train.run(train.make_config(cfg), log=lambda m: None)
    # what the kill leaves: metrics.json still "running" without test scores, the log without its status line
    m = strict_json(save_dir / "metrics.json")
    m["run"].update(status="running", ended_at=None)
    m["test"] = m["baselines"] = None
    (save_dir / "metrics.json").write_text(json.dumps(m))
    lines = (save_dir / "logs" / "metrics.jsonl").read_text().splitlines(keepends=True)
    (save_dir / "logs" / "metrics.jsonl").write_text("".join(l for l in lines if '"type": "status"' not in l))
    logs: list[str] = []
    again = train.run(train.make_config(cfg), log=logs.append)
    assert again.status == "completed" and not any("nothing to do" in line for line in logs)
    m = strict_json(save_dir / "metrics.json")
    assert m["run"]["status"] == "completed" and m["test"]["accuracy"] == done.metrics["test"]["accuracy"]
    assert m["baselines"] is not None and len(m["epochs"]) == 2
    assert list(fileio.read_jsonl(save_dir / "logs" / "metrics.jsonl"))[-1]["status"] == "completed"
    assert monitor.follow(save_dir / "logs", once=True) == 0
    # and now it is final: the same command does nothing
    logs.clear()
    train.run(train.make_config(cfg), log=logs.append)
    assert any("nothing to do" in line for line in logs)
