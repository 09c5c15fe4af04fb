"""Phase 2: the training engine — runs, resume exactness, checkpoints, failures and signals."""
from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import checkpoint, data, fileio, optim, runtime, train
from pipeline.errors import CheckpointError, ConfigError

from conftest import ROOT, make_classification_csv, run_script, script_env

sys.path.insert(0, str(ROOT / "solutions"))
import train_pipeline  # noqa: E402

FAST = dict(mlflow=False, tensorboard=False, system_interval=0, progress="off")


def strict_json(path: Path) -> dict:
    def reject(constant: str):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=reject)


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor in a checkpoint, by path (model, optimizer, scheduler, RNG)."""
    payload = torch.load(path, weights_only=True)
    found: dict[str, torch.Tensor] = {}

    def walk(value, key):
        if isinstance(value, torch.Tensor):
            found[key] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}/{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{key}/{i}")
    walk({k: v for k, v in payload.items() if k != "state"}, "")
    return found


def assert_same_training(a: Path, b: Path) -> None:
    ta, tb = tensors_of(a / "last.pt"), tensors_of(b / "last.pt")
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"tensor {key} differs"
    ha, hb = strict_json(a / "metrics.json")["epochs"], strict_json(b / "metrics.json")["epochs"]
    keys = ("epoch", "step", "train_loss", "val_loss", "val_accuracy", "lr")
    assert [{k: e[k] for k in keys} for e in ha] == [{k: e[k] for k in keys} for e in hb]


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory) -> Path:
    """Large enough that an epoch takes a few hundred steps (room for kills mid-epoch)."""
    base = tmp_path_factory.mktemp("big")
    out = base / "prepared"
    data.prepare_dataset(make_classification_csv(base / "big.csv", rows=7000, seed=5, n_numeric=12), out, seed=1)
    return out


# ------------------------------------------------------------------------------------------ pure pieces
def test_lr_schedule_shapes():
    kw = dict(warmup_steps=10, total_steps=110, steps_per_epoch=10, step_size=2, gamma=0.5)
    assert train.lr_factor(0, kind="cosine", **kw) == pytest.approx(0.1)
    assert train.lr_factor(9, kind="cosine", **kw) == pytest.approx(1.0)
    assert train.lr_factor(60, kind="cosine", **kw) == pytest.approx(0.5)
    assert train.lr_factor(110, kind="cosine", **kw) == pytest.approx(0.0)
    assert train.lr_factor(45, kind="step", **kw) == pytest.approx(0.25)  # epoch 4 -> two decays
    peak = int(0.3 * 110)
    assert train.lr_factor(peak - 1, kind="onecycle", **kw) == pytest.approx(1.0)
    assert train.lr_factor(109, kind="onecycle", **kw) < 0.01


def test_config_validation_and_differences():
    with pytest.raises(ConfigError, match="did you mean learning_rate"):
        train.make_config({"data_dir": "d", "save_dir": "s", "learning_rat": 0.1})
    with pytest.raises(ConfigError, match="--dropout must be in"):
        train.make_config({"data_dir": "d", "save_dir": "s", "dropout": 1.5})
    assert train.make_config({"data_dir": "d", "save_dir": "s", "hidden_sizes": "64, 32"}).hidden_sizes == (64, 32)
    diffs = train.config_differences({"learning_rate": 0.1, "epochs": 5, "seed": 1},
                                     {"learning_rate": 0.2, "epochs": 9, "seed": 1})
    assert diffs == ["learning_rate: checkpoint 0.1, now 0.2"]  # epochs may change


def test_checkpoint_checksum_detects_damage(tmp_path: Path):
    path = tmp_path / "c.pt"
    checkpoint.save_checkpoint(path, {"model": {"w": torch.arange(6.0)}, "state": {"epoch": 1}})
    assert checkpoint.load_checkpoint(path)["state"] == {"epoch": 1}
    assert torch.load(path, weights_only=True)["model"]["w"].sum() == 15  # plain weights-only file
    raw = bytearray(path.read_bytes())
    at = bytes(raw).index(torch.arange(6.0).numpy().tobytes())  # flip a bit inside the stored weights
    raw[at + 9] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        checkpoint.load_checkpoint(path)
    path.write_bytes(path.read_bytes()[:100])  # torn
    with pytest.raises(CheckpointError, match="unreadable"):
        checkpoint.load_checkpoint(path)


# -------------------------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_quick_start_training_command(penguins_dir: Path, tmp_path: Path):
    """The Quick Start flags (fewer epochs), as a real process, with every default sink on."""
    result = run_script("train_pipeline.py", "--data-dir", penguins_dir, "--epochs", "3", "--batch-size", "32",
                        "--learning-rate", "0.001", "--save-dir", tmp_path / "checkpoints",
                        "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 3/3" in result.stdout and "completed" in result.stdout
    out = tmp_path / "checkpoints"
    m = strict_json(out / "metrics.json")
    assert m["schema_version"] == 1 and m["run"]["status"] == "completed"
    assert m["run"]["mlflow"]["run_id"] and m["run"]["device"] == "cpu"
    assert m["config"]["learning_rate"] == 0.001 and m["config"]["hidden_sizes"] == [256, 128]
    assert m["data"]["rows"] == {"train": 241, "val": 34, "test": 69} and m["data"]["task"] == "classification"
    assert [e["epoch"] for e in m["epochs"]] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "val_accuracy", "val_f1_macro", "lr", "epoch_seconds", "samples_per_second"):
        assert isinstance(m["epochs"][-1][key], float), key
    assert m["best"]["metric"] == "val_loss" and 1 <= m["best"]["epoch"] <= 3
    assert set(m["test"]) >= {"loss", "accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "confusion_matrix",
                              "per_class"}
    assert sum(map(sum, m["test"]["confusion_matrix"])) == 69
    assert m["system"]["samples"] >= 1
    records = list(fileio.read_jsonl(out / "logs" / "metrics.jsonl"))
    assert records[0]["type"] == "run" and records[0]["pid"] > 0 and records[-1] == {**records[-1], "type": "status",
                                                                                         "status": "completed"}
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2, 3]
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert list(fileio.read_jsonl(out / "logs" / "system.jsonl"))[0]["rss_mb"] > 0
    for pt in out.glob("*.pt"):  # every checkpoint opens with weights_only=True and verifies
        checkpoint.load_checkpoint(pt)
    assert (out / "model.safetensors").stat().st_size > 0


def test_resume_continues_to_new_total_identically(penguins_dir: Path, tmp_path: Path):
    base = dict(data_dir=str(penguins_dir), batch_size=32, learning_rate=0.003, dropout=0.2, **FAST)
    straight = train.run(train.make_config(dict(base, save_dir=str(tmp_path / "a"), epochs=6)), log=lambda m: None)
    first = train.run(train.make_config(dict(base, save_dir=str(tmp_path / "b"), epochs=2)), log=lambda m: None)
    assert first.status == "completed" and first.exit_code == 0
    again = train.run(train.make_config(dict(base, save_dir=str(tmp_path / "b"), epochs=2)), log=lambda m: None)
    assert again.status == "completed"  # nothing to do
    second = train.run(train.make_config(dict(base, save_dir=str(tmp_path / "b"), epochs=6)), log=lambda m: None)
    assert straight.status == second.status == "completed"
    assert_same_training(tmp_path / "a", tmp_path / "b")
    resumed = strict_json(tmp_path / "b" / "metrics.json")["run"]["resumed"]
    assert len(resumed) == 1 and resumed[0]["epoch"] == 2 and resumed[0]["step"] == 16


def test_changed_setting_is_refused_with_the_keys(penguins_dir: Path, tmp_path: Path, capsys):
    args = ["--data-dir", str(penguins_dir), "--epochs", "1", "--save-dir", str(tmp_path / "s"), "--no-mlflow",
            "--no-tensorboard", "--system-interval", "0"]
    assert train_pipeline.main(args) == 0
    capsys.readouterr()
    assert train_pipeline.main(args + ["--learning-rate", "0.01", "--dropout", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "dropout: checkpoint 0.1, now 0.3" in err and "learning_rate: checkpoint 0.001, now 0.01" in err
    assert "use a new --save-dir or --resume never" in err and err.count("\n") == 1
    assert train_pipeline.main(args + ["--learning-rate", "0.01", "--resume", "never"]) == 0


def test_yaml_config_and_flag_precedence(penguins_dir: Path, tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {penguins_dir}\nepochs: 2\nlearning_rate: 0.01\nhidden_sizes: [32, 16]\nmlflow: false\n")
    assert train_pipeline.main(["--config", str(cfg), "--save-dir", str(tmp_path / "s"), "--learning-rate", "0.02",
                                "--system-interval", "0"]) == 0
    m = strict_json(tmp_path / "s" / "metrics.json")
    assert m["config"]["learning_rate"] == 0.02 and m["config"]["hidden_sizes"] == [32, 16] and len(m["epochs"]) == 2


def test_corrupt_newest_checkpoint_falls_back_with_warning(penguins_dir: Path, tmp_path: Path):
    cfg = dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), keep_checkpoints=0, **FAST)
    train.run(train.make_config(dict(cfg, epochs=3)), log=lambda m: None)
    (tmp_path / "s" / "last.pt").write_bytes(b"garbage")
    (tmp_path / "s" / "ckpt-epoch0003.pt").write_bytes((tmp_path / "s" / "ckpt-epoch0003.pt").read_bytes()[:-50])
    logs: list[str] = []
    with pytest.warns(UserWarning, match="skipping .*last.pt.*resuming from ckpt-epoch0002.pt"):
        result = train.run(train.make_config(dict(cfg, epochs=4)), log=logs.append)
    assert result.status == "completed" and any("at epoch 3, step 16" in line for line in logs)
    for pt in (tmp_path / "s").glob("*.pt"):
        pt.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="none is valid"):
        train.run(train.make_config(dict(cfg, epochs=5)), log=lambda m: None)


def test_resume_on_other_data_is_refused(penguins_dir: Path, synthetic_dir: Path, tmp_path: Path):
    cfg = dict(save_dir=str(tmp_path / "s"), epochs=1, **FAST)
    train.run(train.make_config(dict(cfg, data_dir=str(penguins_dir))), log=lambda m: None)
    with pytest.raises(CheckpointError, match="different data"):
        train.run(train.make_config(dict(cfg, data_dir=str(synthetic_dir), epochs=2)), log=lambda m: None)


def test_non_finite_loss_fails_cleanly_and_keeps_last_good_checkpoint(penguins_dir: Path, tmp_path: Path,
                                                                       monkeypatch):
    cfg = dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), log_every=1, **FAST)
    train.run(train.make_config(dict(cfg, epochs=2)), log=lambda m: None)
    good = (tmp_path / "s" / "last.pt").read_bytes()
    real_build_loss = optim.build_loss

    def poisoned(*args, **kwargs):
        loss = real_build_loss(*args, **kwargs)
        return lambda out, y: loss(out, y) * float("nan")
    monkeypatch.setattr(optim, "build_loss", lambda *a, **k: _Wrap(poisoned(*a, **k)))
    result = train.run(train.make_config(dict(cfg, epochs=4)), log=lambda m: None)
    assert result.status == "failed" and result.exit_code == 1
    m = strict_json(tmp_path / "s" / "metrics.json")
    assert m["run"]["status"] == "failed" and "non-finite loss" in m["run"]["message"]
    assert (tmp_path / "s" / "last.pt").read_bytes() == good


class _Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, out, y):
        return self.fn(out, y)


def test_dataloader_path_matches_memory_path(synthetic_dir: Path, tmp_path: Path):
    cfg = dict(data_dir=str(synthetic_dir), epochs=2, batch_size=16, **FAST)
    train.run(train.make_config(dict(cfg, save_dir=str(tmp_path / "m"))), log=lambda m: None)
    train.run(train.make_config(dict(cfg, save_dir=str(tmp_path / "d"), loader="dataloader", num_workers=1)),
              log=lambda m: None)
    assert_same_training(tmp_path / "m", tmp_path / "d")


def test_regression_run_and_options(regression_dir: Path, tmp_path: Path):
    result = train.run(train.make_config(dict(
        data_dir=str(regression_dir), save_dir=str(tmp_path / "r"), epochs=8, batch_size=16, learning_rate=0.003,
        log_every=2,
        scheduler="cosine", warmup_epochs=1, grad_clip=1.0, grad_accum_steps=2, loss="huber", norm="layer",
        early_stopping_metric="val_r2", **FAST)), log=lambda m: None)
    m = result.metrics
    assert result.status in ("completed", "early_stopped")
    assert m["test"]["r2"] > 0.8 and m["test"]["rmse"] > 0 and len(m["test"]["predictions"]["y_true"]) > 0
    assert m["best"]["metric"] == "val_r2"
    step_lrs = [r["lr"] for r in fileio.read_jsonl(tmp_path / "r" / "logs" / "metrics.jsonl") if r["type"] == "step"]
    assert step_lrs[0] < step_lrs[1] < 0.003  # linear warmup over the first epoch
    assert m["epochs"][-1]["lr"] < m["epochs"][1]["lr"]  # then cosine decay


def test_class_weights_auto_balances_a_rare_class_only():
    six_percent = np.array([1] * 6 + [0] * 94)
    quarter = np.array([1] * 25 + [0] * 75)
    assert train.weigh_classes("auto", six_percent, 2) and not train.weigh_classes("auto", quarter, 2)
    assert train.weigh_classes("balanced", quarter, 2) and not train.weigh_classes("none", six_percent, 2)
    assert train.weigh_classes("auto", np.array([0, 1, 2] * 30 + [3] * 5), 4)  # 5% against an even 25%


def test_a_run_on_a_rare_class_weights_it_and_says_so(tmp_path: Path):
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(800, 3)), columns=["a", "b", "c"])
    frame["label"] = np.where(frame["a"] + 0.3 * rng.normal(size=800) > 1.6, "rare", "common")  # ~6%
    frame.to_csv(tmp_path / "rare.csv", index=False)
    data.prepare_dataset(tmp_path / "rare.csv", tmp_path / "prepared", seed=1)
    lines: list[str] = []
    for setting in ("auto", "none"):
        train.run(train.make_config(dict(data_dir=str(tmp_path / "prepared"), save_dir=str(tmp_path / setting),
                                         epochs=2, class_weights=setting, baselines=False, **FAST)),
                  log=lines.append)
    weighted = [line for line in lines if line.startswith("class weights: balanced")]
    assert len(weighted) == 1  # the auto run, not the none run


def test_regression_predictions_stay_in_the_training_range_unless_told_otherwise(regression_dir: Path,
                                                                                 tmp_path: Path):
    import pandas as pd

    from pipeline import predict

    y_train = data.load_processed(regression_dir).arrays["train"][1]
    far = tmp_path / "far.csv"  # price ~ 30a - 20b: these rows are 10-50 std away from anything trained on
    pd.DataFrame({"a": [50.0, -50.0, 0.0], "b": [-10.0, 10.0, 0.0], "c": 0.0, "d": 0.0,
                  "kind": ["p", "q", "p"]}).to_csv(far, index=False)
    predictions = {}
    for clip in (True, False):
        save_dir = tmp_path / f"clip-{clip}"
        result = train.run(train.make_config(dict(data_dir=str(regression_dir), save_dir=str(save_dir), epochs=6,
                                                  batch_size=16, learning_rate=0.003, clip_predictions=clip,
                                                  **FAST)), log=lambda m: None)
        assert result.status in ("completed", "early_stopped") and result.metrics["test"]["r2"] > 0.8
        predictions[clip] = predict.predict_csv(save_dir / "model.safetensors", far)["prediction"].to_numpy()
    low, high = float(y_train.min()), float(y_train.max())
    assert predictions[False][0] > high and predictions[False][1] < low  # the network extrapolates far out ...
    assert predictions[True][0] == pytest.approx(high) and predictions[True][1] == pytest.approx(low)  # ... clipped
    assert low < predictions[True][2] < high


@pytest.mark.parametrize("options", [
    dict(scheduler="plateau", optimizer="sgd", early_stopping_patience=6),
    dict(scheduler="onecycle", optimizer="adam", deterministic=True),
    dict(scheduler="step", step_size=1, gamma=0.5, norm="batch", weight_decay=0.01),
], ids=["plateau-sgd", "onecycle-adam-deterministic", "step-batchnorm"])
def test_optimizer_and_scheduler_options(penguins_dir: Path, tmp_path: Path, options: dict):
    result = train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=6,
                                              learning_rate=0.01, **FAST, **options)), log=lambda m: None)
    lrs = [e["lr"] for e in result.metrics["epochs"]]
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    assert result.status in ("completed", "early_stopped") and result.metrics["test"]["accuracy"] > 0.5
    if options["scheduler"] == "step":
        assert lrs[:3] == pytest.approx([0.005, 0.0025, 0.00125])  # halved after every epoch
    if options["scheduler"] == "onecycle":
        assert max(lrs) <= 0.01 + 1e-12 and lrs[-1] < 0.001  # rises to the peak, anneals towards zero


def test_early_stopping_then_raising_epochs_continues(penguins_dir: Path, tmp_path: Path):
    cfg = dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), learning_rate=0.05, early_stopping_patience=2,
               **FAST)
    first = train.run(train.make_config(dict(cfg, epochs=60)), log=lambda m: None)
    assert first.status == "early_stopped" and first.exit_code == 0
    done = len(first.metrics["epochs"])
    assert first.metrics["best"]["epoch"] < done
    # last.pt keeps the last weights (to continue from); the exported model holds the best ones
    from safetensors.torch import load_file
    last = checkpoint.load_checkpoint(tmp_path / "s" / "last.pt")["model"]
    best = checkpoint.load_checkpoint(tmp_path / "s" / "best.pt")["model"]
    exported = load_file(str(tmp_path / "s" / "model.safetensors"))
    assert all(torch.equal(exported[k], best[k]) for k in best)
    assert not all(torch.equal(last[k], best[k]) for k in best)
    # the same command again does nothing: --epochs is compared with what the run was started with (60),
    # not with the epoch it stopped at
    logs: list[str] = []
    again = train.run(train.make_config(dict(cfg, epochs=60)), log=logs.append)
    assert again.status == "early_stopped" and len(again.metrics["epochs"]) == done
    assert any("nothing to do" in line and "above 60" in line for line in logs), logs
    assert checkpoint.load_checkpoint(tmp_path / "s" / "best.pt")["model"].keys() == best.keys()
    more = train.run(train.make_config(dict(cfg, epochs=61)), log=lambda m: None)
    # raised above the original 60: it continues, with a fresh patience (so at least `patience` more epochs)
    assert done + 2 <= len(more.metrics["epochs"]) <= 61 and len(more.metrics["run"]["resumed"]) == 1


def test_bf16_autocast_and_class_weights_on_cpu(penguins_dir: Path, tmp_path: Path):
    """The AMP code path that CPU can run: bf16 autocast, with balanced class weights."""
    result = train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=3,
                                              amp="bf16", class_weights="balanced", **FAST)), log=lambda m: None)
    assert result.status == "completed" and result.metrics["run"]["amp"] == "bfloat16"
    assert all(math.isfinite(e["train_loss"]) for e in result.metrics["epochs"])
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        runtime.resolve_amp("fp16", torch.device("cpu"))
    assert runtime.resolve_amp("auto", torch.device("cpu")) is None


def test_predict_scores_a_new_csv(penguins_dir: Path, tmp_path: Path):
    from pipeline import predict

    train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=15, **FAST)),
              log=lambda m: None)
    scored = predict.predict_csv(tmp_path / "s" / "model.safetensors", ROOT / "data" / "train.csv")
    assert len(scored) == 344 and set(scored["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    assert (scored["prediction"] == scored["species"]).mean() > 0.9
    assert np.allclose(scored[["p_Adelie", "p_Chinstrap", "p_Gentoo"]].sum(axis=1), 1, atol=1e-5)


# -------------------------------------------------------------------------------- signals and kills
def _train_cmd(data_dir: Path, save_dir: Path, epochs: int = 6) -> list[str]:
    return [sys.executable, str(ROOT / "solutions" / "train_pipeline.py"), "--data-dir", str(data_dir),
            "--epochs", str(epochs), "--batch-size", "32", "--learning-rate", "0.001", "--save-dir", str(save_dir),
            "--hidden-sizes", "256,256", "--no-mlflow", "--system-interval", "0.5", "--log-every", "5"]


def _steps_logged(save_dir: Path) -> int:
    return sum(1 for r in fileio.read_jsonl(save_dir / "logs" / "metrics.jsonl") if r.get("type") == "step")


def _wait_for_steps(save_dir: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until this process has logged new steps (a resumed run's old records do not count)."""
    before = _steps_logged(save_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if _steps_logged(save_dir) > before:
            return
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference_run(big_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run(_train_cmd(big_dir, out), capture_output=True, text=True, env=script_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_sigterm_saves_mid_epoch_and_resume_is_exact(big_dir: Path, reference_run: Path, tmp_path: Path):
    out = tmp_path / "run"
    process = subprocess.Popen(_train_cmd(big_dir, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=script_env())
    _wait_for_steps(out, process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    m = strict_json(out / "metrics.json")
    assert m["run"]["status"] == "interrupted" and "SIGTERM" in m["run"]["message"]
    state = checkpoint.load_checkpoint(out / "last.pt")["state"]
    assert state["status"] == "interrupted" and state["global_step"] > 0
    done = subprocess.run(_train_cmd(big_dir, out), capture_output=True, text=True, env=script_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_training(reference_run, out)
    steps = [r["step"] for r in fileio.read_jsonl(out / "logs" / "metrics.jsonl") if r["type"] == "step"]
    assert steps == sorted(set(steps))  # no step logged twice


def test_sigkill_at_random_points_then_rerun_is_exact(big_dir: Path, reference_run: Path, tmp_path: Path):
    out = tmp_path / "run"
    rng = random.Random(20261127)
    kills, positions = 0, set()
    for attempt in range(5):
        process = subprocess.Popen(_train_cmd(big_dir, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   env=script_env())
        if attempt == 0:
            time.sleep(rng.uniform(0.5, 2.0))  # once during start-up, before any checkpoint exists
        else:
            _wait_for_steps(out, process)
            time.sleep(rng.uniform(0.0, 0.6))  # mid-epoch, at an epoch end, or during a checkpoint write
        if process.poll() is None:
            process.kill()
            kills += 1
        process.wait(timeout=60)
        if (out / "last.pt").exists():
            positions.add(checkpoint.load_checkpoint(out / "last.pt")["state"]["global_step"])
    assert kills >= 3 and len(positions) >= 2, (kills, positions)  # the run really advanced between kills
    done = subprocess.run(_train_cmd(big_dir, out), capture_output=True, text=True, env=script_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_training(reference_run, out)
    epochs = [r["epoch"] for r in fileio.read_jsonl(out / "logs" / "metrics.jsonl") if r["type"] == "epoch"]
    assert epochs == list(range(1, 7))
    strict_json(out / "metrics.json")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs" / "validation"))  # purges what a killed run logged after its checkpoint
    events.Reload()
    reference = EventAccumulator(str(reference_run / "logs" / "validation"))
    reference.Reload()
    assert [(e.step, e.value) for e in events.Scalars("epoch_loss")] == \
        [(e.step, e.value) for e in reference.Scalars("epoch_loss")]
    steps, reference_steps = EventAccumulator(str(out / "logs")), EventAccumulator(str(reference_run / "logs"))
    steps.Reload()
    reference_steps.Reload()  # the global-step axis is purged by its own step, each point once
    assert [e.step for e in steps.Scalars("batch_loss")] == [e.step for e in reference_steps.Scalars("batch_loss")]


def test_a_refused_run_leaves_no_lock_and_no_folder_it_made(penguins_dir: Path, tmp_path: Path):
    """Refused settings (checked once the folder is locked) leave nothing behind: not the .lock, not the folders
    the run made for itself; a folder of the user's keeps exactly what it held."""
    from pipeline.errors import ConfigError

    bad = dict(data_dir=str(penguins_dir), epochs=1, model_args={"dropout": 5}, **FAST)
    with pytest.raises(ConfigError, match="dropout must be in"):
        train.run(train.make_config(dict(bad, save_dir=str(tmp_path / "new" / "deeper" / "run"))), log=lambda m: None)
    assert not (tmp_path / "new").exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="dropout must be in"):
        train.run(train.make_config(dict(bad, save_dir=str(theirs))), log=lambda m: None)
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt"]


def test_a_finish_that_fails_says_so_and_the_same_command_redoes_it(penguins_dir: Path, tmp_path: Path, monkeypatch):
    """The disk fills at the export: metrics.json says failed, with the reason, instead of staying "running"
    (which the monitor reads as a lost process); the same command afterwards finishes the run."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "s" / "model.safetensors"))
    settings = dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=2, **FAST)
    monkeypatch.setattr(train, "export_model", full)
    with pytest.raises(OSError):
        train.run(train.make_config(settings), log=lambda m: None)
    failed = strict_json(tmp_path / "s" / "metrics.json")
    assert failed["run"]["status"] == "failed" and failed["run"]["ended_at"]
    assert failed["run"]["message"].startswith("while finishing: OSError") and "No space left" in failed["run"]["message"]
    monkeypatch.undo()
    again = train.run(train.make_config(settings), log=lambda m: None)
    assert again.status == "completed" and (tmp_path / "s" / "model.safetensors").is_file()
    assert len(again.metrics["epochs"]) == 2 and again.metrics["test"]["accuracy"] > 0.5
