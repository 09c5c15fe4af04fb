"""The CUDA path, run where a GPU is present (`make gpu-check`); skipped, with its reason, everywhere else.

    make gpu-check                      # one line and exit 0 on a machine without CUDA
    python -m pytest tests/test_cuda.py

What it checks on a GPU: a run on `--device cuda` trains, exports and is scored on the CPU by predict; fp16 (with
its GradScaler) and bf16 autocast train to finite losses; a run stopped after 2 epochs and continued to 4 equals a
straight 4-epoch run bit for bit with `deterministic` on; the GPU appears in the system samples.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pipeline import fileio, train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

FAST = dict(mlflow=False, tensorboard=False, progress="off", device="cuda")


def quiet(message: str) -> None:
    pass


@cuda
def test_a_cuda_run_trains_exports_and_predicts_on_cpu(penguins_dir: Path, tmp_path: Path):
    from pipeline import predict

    result = train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=15,
                                              system_interval=0.2, **FAST)), log=quiet)
    assert result.status == "completed" and result.metrics["run"]["device"].startswith("cuda")
    assert result.metrics["test"]["accuracy"] > 0.9
    samples = fileio.read_jsonl(tmp_path / "s" / "logs" / "system.jsonl")
    assert any(s.get("gpus") for s in samples), "no GPU figures in the system samples"
    root = Path(__file__).resolve().parents[1]
    scored = predict.predict_csv(tmp_path / "s" / "model.safetensors", root / "data" / "train.csv")
    assert (scored["prediction"] == scored["species"]).mean() > 0.9


@cuda
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_autocast_trains_to_finite_losses(penguins_dir: Path, tmp_path: Path, amp: str):
    result = train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / amp), epochs=4,
                                              amp=amp, system_interval=0, **FAST)), log=quiet)
    assert result.status == "completed"
    assert result.metrics["run"]["amp"] == {"fp16": "float16", "bf16": "bfloat16"}[amp]
    assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["val_loss"]) for e in result.metrics["epochs"])


@cuda
def test_resume_on_cuda_is_exact(penguins_dir: Path, tmp_path: Path):
    base = dict(data_dir=str(penguins_dir), batch_size=32, learning_rate=0.003, dropout=0.2, deterministic=True,
                system_interval=0, **FAST)
    train.run(train.make_config(dict(base, save_dir=str(tmp_path / "a"), epochs=4)), log=quiet)
    train.run(train.make_config(dict(base, save_dir=str(tmp_path / "b"), epochs=2)), log=quiet)
    train.run(train.make_config(dict(base, save_dir=str(tmp_path / "b"), epochs=4)), log=quiet)
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True)["model"] for d in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ea, eb = (fileio.read_json(tmp_path / d / "metrics.json")["epochs"] for d in ("a", "b"))
    assert [e["val_loss"] for e in ea] == [e["val_loss"] for e in eb]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the check runs for real")
def test_gpu_check_says_why_in_one_line_and_exits_0_without_cuda(capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main() == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("gpu-check: skipped, no CUDA device")
