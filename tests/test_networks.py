"""The tabular networks (`--model realmlp`, `--model tabm`): shapes, the pieces' maths, determinism, and every
engine promise (training through train.run, exact resume after SIGKILL, predict rebuilding the network)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import config, data, evaluate, fileio, model, networks, predict, train

from conftest import make_classification_csv, make_regression_csv, script_env
from test_train import FAST, assert_same_training, strict_json

FACTORIES = {"realmlp": networks.build_realmlp, "tabm": networks.build_tabm}


# ------------------------------------------------------------------------------------------------ the pieces
@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("n_outputs", [1, 2, 5])
def test_shapes_in_training_and_evaluation(name: str, n_outputs: int):
    torch.manual_seed(0)
    net = model.make(FACTORIES[name], 7, n_outputs, {"width": 32}, reference=name)  # the engine's own check too
    for rows in (1, 3, 64):
        x = torch.randn(rows, 7)
        assert net.train()(x).shape == (rows, n_outputs)
        assert net.eval()(x).shape == (rows, n_outputs)


def test_built_in_names_and_model_args():
    assert model.BUILT_IN["realmlp"] is networks.build_realmlp and model.BUILT_IN["tabm"] is networks.build_tabm
    assert model.resolve_factory("tabm") == (networks.build_tabm, "tabm", None)
    assert model.BUILT_IN["mlp"] is model.build_mlp  # the plain MLP stays available by name
    assert tuple(model.BUILT_IN) == config.BUILT_IN_MODELS  # the names --help lists without importing torch
    net = model.make(networks.build_realmlp, 5, 3, {"width": 24, "depth": 2, "embedding_dim": 3}, reference="realmlp")
    assert [m.out_features for m in net.body if isinstance(m, torch.nn.Linear)] == [24, 24]
    assert net.body[0].in_features == 5 * 3
    with pytest.raises(ValueError, match="activation must be one of"):
        networks.build_realmlp(5, 3, activation="tanh")


def test_activation_follows_the_task():
    assert isinstance(networks.build_realmlp(4, 1).body[1], torch.nn.Mish)   # regression: one output
    assert isinstance(networks.build_realmlp(4, 3).body[1], torch.nn.SELU)   # classification: logits


def test_smooth_clip_keeps_ordinary_values_and_bounds_outliers():
    clip = networks.SmoothClip(3.0)
    x = torch.tensor([-1e6, -10.0, -0.1, 0.0, 0.1, 10.0, 1e6])
    y = clip(x)
    assert torch.all(y.abs() <= 3.0) and torch.all(y[1:-1].abs() < 3.0) and torch.all(torch.sign(y) == torch.sign(x))
    assert torch.allclose(y[2:5], x[2:5], atol=1e-3)
    assert torch.all(y[1:] >= y[:-1])  # monotone: the order of values is kept


def test_periodic_embedding_keeps_the_value_and_is_per_feature():
    torch.manual_seed(0)
    embed = networks.PeriodicEmbedding(3, n_frequencies=8, dim=4)
    x = torch.randn(10, 3)
    out = embed(x).view(10, 3, 4)                     # (batch, features, dim)
    assert torch.equal(out[..., 0], x)                # densenet-style: the raw value travels on
    changed = x.clone()
    changed[:, 1] += 1.0
    again = embed(changed).view(10, 3, 4)
    assert torch.equal(again[:, [0, 2]], out[:, [0, 2]]) and not torch.equal(again[:, 1], out[:, 1])


def test_diagonal_scale_learns_faster_by_reparametrisation():
    layer = networks.DiagonalScale(4, lr_factor=16.0)
    x = torch.ones(2, 4)
    assert torch.allclose(layer(x), x)  # starts as the identity
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
    layer(x).sum().backward()
    optimizer.step()
    assert torch.allclose(layer(x), x * (1 - 16 * 1e-2), atol=1e-5)  # one Adam step moves the gain 16 x lr


def test_tabm_routes_rows_in_training_and_averages_in_evaluation():
    torch.manual_seed(0)
    net = networks.build_tabm(6, 3, k=4, width=16, dropout=0.0)
    x = torch.randn(9, 6)
    h = net.scale(net.embed(net.clip(x)))
    per_member = torch.stack([net.body(h * net.adapter[m]) @ net.head_weight[m] + net.head_bias[m]
                              for m in range(4)], dim=1)                            # (batch, k, outputs)
    trained = net.train()(x)
    assert torch.allclose(trained, per_member[torch.arange(9), torch.arange(9) % 4], atol=1e-6)
    evaluated = net.eval()(x)
    mean_probability = torch.softmax(per_member, dim=-1).mean(dim=1)
    assert torch.allclose(torch.exp(evaluated), mean_probability, atol=1e-6)      # log(mean probability)
    regression = networks.build_tabm(6, 1, k=4, width=16, dropout=0.0).eval()
    h = regression.scale(regression.embed(regression.clip(x)))
    values = torch.stack([regression.body(h * regression.adapter[m]) @ regression.head_weight[m]
                          + regression.head_bias[m] for m in range(4)], dim=1)
    assert torch.allclose(regression(x), values.mean(dim=1), atol=1e-6)


@pytest.mark.parametrize("name", FACTORIES)
def test_forward_is_deterministic_and_rows_are_independent(name: str):
    def built() -> torch.nn.Module:
        torch.manual_seed(3)
        return FACTORIES[name](8, 3, width=32)

    a, b = built(), built()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    x = torch.randn(40, 8)
    assert torch.equal(a.eval()(x), b.eval()(x))
    assert torch.allclose(a(x[:5]), a(x)[:5], atol=1e-6)  # a row's prediction does not depend on its batch
    torch.manual_seed(7)
    first = a.train()(x)
    torch.manual_seed(7)
    assert torch.equal(first, a(x))                        # dropout draws from the seeded stream only


@pytest.mark.parametrize("name", FACTORIES)
def test_every_parameter_learns(name: str):
    torch.manual_seed(0)
    net = FACTORIES[name](5, 2, width=16).train()
    torch.nn.functional.cross_entropy(net(torch.randn(32, 5)), torch.randint(0, 2, (32,))).backward()
    silent = [k for k, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not silent, silent


# ------------------------------------------------------------------------------------------------ the engine
@pytest.fixture(scope="module")
def classification_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("networks")
    out = base / "prepared"
    data.prepare_dataset(make_classification_csv(base / "table.csv", rows=4000, seed=4, n_numeric=8), out, seed=2)
    return out


def _config(data_dir: Path, save_dir: Path, name: str, epochs: int = 4, **extra) -> dict:
    return dict(data_dir=str(data_dir), save_dir=str(save_dir), epochs=epochs, model=name,
                model_args={"width": 32, "k": 4} if name == "tabm" else {"width": 32}, log_every=5, **FAST, **extra)


CHILD = "import json, sys; from pipeline import train; train.run(train.make_config(json.loads(sys.argv[1])))"


@pytest.mark.slow
def test_tabm_trains_through_the_engine_and_resumes_exactly_after_sigkill(classification_dir: Path, tmp_path: Path):
    reference = tmp_path / "reference"
    done = train.run(train.make_config(_config(classification_dir, reference, "tabm", epochs=3)), log=lambda m: None)
    assert done.status == "completed" and done.metrics["config"]["model"] == "tabm"
    assert done.metrics["test"]["balanced_accuracy"] > 0.6  # it learned something in 3 short epochs

    out = tmp_path / "killed"
    values = json.dumps(_config(classification_dir, out, "tabm", epochs=3))
    process = subprocess.Popen([sys.executable, "-c", CHILD, values], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=script_env())

    def epochs_done() -> int:
        path = out / "logs" / "metrics.jsonl"
        return sum(1 for r in fileio.read_jsonl(path) if r.get("type") == "epoch") if path.exists() else 0

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None and not (
            epochs_done() >= 1 and (out / "last.pt").exists()):  # a checkpoint to resume from, mid-run
        time.sleep(0.01)
    alive = process.poll() is None
    process.kill()
    process.wait(timeout=60)
    assert alive, process.stderr.read().decode()[-2000:]  # killed mid-run, not after it ended
    resumed = train.run(train.make_config(_config(classification_dir, out, "tabm", epochs=3)), log=lambda m: None)
    assert resumed.status == "completed" and len(resumed.metrics["run"]["resumed"]) == 1
    assert_same_training(reference, out)


def test_realmlp_regression_trains_and_predict_rebuilds_it(tmp_path: Path):
    csv = make_regression_csv(tmp_path / "reg.csv", rows=600)
    prepared = tmp_path / "prepared"
    data.prepare_dataset(csv, prepared, seed=3)
    save_dir = tmp_path / "run"
    result = train.run(train.make_config(_config(prepared, save_dir, "realmlp", epochs=6)), log=lambda m: None)
    assert result.status in ("completed", "early_stopped")
    assert result.metrics["test"]["r2"] > 0.8
    assert strict_json(save_dir / "metrics.json")["config"]["model_args"] == {"width": 32}

    net, spec, schema = predict.load_model(save_dir / "model.safetensors")
    assert isinstance(net, networks.RealMLP) and spec["factory"] == "realmlp" and spec["model_args"] == {"width": 32}
    scored = predict.predict_csv(save_dir / "model.safetensors", csv)
    X_test, y_test = data.load_split(prepared, "test")
    out = evaluate.predict_arrays(net, X_test, device=torch.device("cpu"), amp=None)[:, 0]
    predicted = out * spec["target_std"] + spec["target_mean"]
    r2 = 1 - np.sum((y_test - predicted) ** 2) / np.sum((y_test - y_test.mean()) ** 2)
    assert math.isclose(r2, result.metrics["test"]["r2"], rel_tol=1e-5)  # the exported weights are the scored ones
    assert len(scored) == 600 and np.isfinite(scored["prediction"]).all()


def test_another_network_is_refused_on_resume(classification_dir: Path, tmp_path: Path):
    from pipeline.errors import CheckpointError

    train.run(train.make_config(_config(classification_dir, tmp_path / "s", "realmlp", epochs=1)), log=lambda m: None)
    with pytest.raises(CheckpointError, match=r"model: checkpoint 'realmlp', now 'tabm'"):
        train.run(train.make_config(dict(_config(classification_dir, tmp_path / "s", "tabm", epochs=2),
                                         model_args={"width": 32})), log=lambda m: None)
