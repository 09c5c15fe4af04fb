"""Bring your own model and sinks: every promise of the engine holds for a network it did not write.

A factory file trains through the CLI (--model file.py:function --model-args JSON) and resumes exactly after
SIGKILL; another model (other arguments, an edited file, another function) is refused; predict rebuilds the
network from model.safetensors; a sink of one's own receives every record; the monitor and the report read
such a run like any other.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import data, fileio, model, monitor, predict, train
from pipeline.errors import CheckpointError, ConfigError, DataError

from conftest import ROOT, make_classification_csv, script_env
from test_train import FAST, assert_same_training, strict_json

FACTORY = '''
import torch
from torch import nn


class Gated(nn.Module):
    """A small network that is not an MLP: a gated hidden layer with dropout (so the RNG matters)."""

    def __init__(self, n_features, n_outputs, width):
        super().__init__()
        self.value = nn.Linear(n_features, width)
        self.gate = nn.Linear(n_features, width)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x):                     # x: (batch, n_features)
        hidden = torch.tanh(self.value(x)) * torch.sigmoid(self.gate(x))
        return self.head(self.drop(hidden))   # (batch, n_outputs)


def build(n_features, n_outputs, width=32):
    return Gated(n_features, n_outputs, width)


def wrong_shape(n_features, n_outputs):
    return nn.Linear(n_features, n_outputs + 1)
'''


def build_in_test(n_features: int, n_outputs: int, width: int = 16) -> nn.Module:
    return nn.Sequential(nn.Linear(n_features, width), nn.ReLU(), nn.Dropout(0.1), nn.Linear(width, n_outputs))


def other_build(n_features: int, n_outputs: int, width: int = 16) -> nn.Module:
    return nn.Sequential(nn.Linear(n_features, width), nn.Tanh(), nn.Linear(width, n_outputs))


class Recorder:
    """A sink of one's own: keeps every call."""

    def __init__(self):
        self.dicts: list[tuple[str, int, dict]] = []
        self.events: list[dict] = []
        self.closed: list[str] = []

    def log_dict(self, metrics, step, kind):
        self.dicts.append((kind, step, dict(metrics)))

    def log_event(self, record):
        json.dumps(record)  # every event is plain JSON
        self.events.append(record)

    def close(self, status):
        self.closed.append(status)


@pytest.fixture(scope="module")
def factory_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("factory") / "my_models.py"
    path.write_text(FACTORY)
    return path


@pytest.fixture(scope="module")
def mid_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("mid")
    out = base / "prepared"
    data.prepare_dataset(make_classification_csv(base / "mid.csv", rows=5000, seed=8, n_numeric=10), out, seed=2)
    return out


def _cmd(data_dir: Path, save_dir: Path, factory: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "solutions" / "train_pipeline.py"), "--data-dir", str(data_dir),
            "--epochs", "4", "--batch-size", "32", "--save-dir", str(save_dir), "--model", f"{factory}:build",
            "--model-args", '{"width": 48}', "--no-mlflow", "--system-interval", "0.5", "--log-every", "5", *extra]


def _steps_logged(save_dir: Path) -> int:
    return sum(1 for r in fileio.read_jsonl(save_dir / "logs" / "metrics.jsonl") if r.get("type") == "step")


@pytest.mark.slow
def test_factory_file_trains_and_resumes_exactly_after_sigkill(mid_dir: Path, factory_file: Path, tmp_path: Path):
    reference = tmp_path / "reference"
    done = subprocess.run(_cmd(mid_dir, reference, factory_file), capture_output=True, text=True, env=script_env(),
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    m = strict_json(reference / "metrics.json")
    assert m["config"]["model"] == f"{factory_file.resolve()}:build"  # recorded by absolute path ...
    file_sha = __import__("hashlib").sha256(factory_file.read_bytes()).hexdigest()
    assert m["config"]["model_sha256"] == model.identity_sha256({factory_file.name: file_sha})  # + its code
    assert m["config"]["model_args"] == {"width": 48}

    out = tmp_path / "killed"
    kills = 0
    for attempt in range(3):
        process = subprocess.Popen(_cmd(mid_dir, out, factory_file), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=script_env())
        before, deadline = _steps_logged(out), time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None and _steps_logged(out) <= before:
            time.sleep(0.02)
        time.sleep(0.1 * attempt)
        if process.poll() is None:
            process.kill()
            kills += 1
        process.wait(timeout=60)
    assert kills >= 2
    done = subprocess.run(_cmd(mid_dir, out, factory_file), capture_output=True, text=True, env=script_env(),
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_training(reference, out)
    assert len(strict_json(out / "metrics.json")["run"]["resumed"]) >= 1

    # the monitor and the report read it like any other run
    assert monitor.follow(out / "logs", once=True) == 0
    from pipeline import report

    page = report.generate(out / "metrics.json", tmp_path / "report.html").read_text()
    assert "Test evaluation" in page and "my_models.py:build" in page


def test_another_model_is_refused_on_resume(penguins_dir: Path, factory_file: Path, tmp_path: Path):
    sys.path.insert(0, str(ROOT / "solutions"))
    import train_pipeline

    base = ["--data-dir", str(penguins_dir), "--epochs", "1", "--save-dir", str(tmp_path / "s"), "--no-mlflow",
            "--no-tensorboard", "--system-interval", "0", "--model", f"{factory_file}:build"]
    assert train_pipeline.main(base) == 0
    with pytest.raises(CheckpointError, match=r"model_args: checkpoint \{\}, now \{'width': 64\}"):
        train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=2,
                                         model=f"{factory_file}:build", model_args={"width": 64}, **FAST)))
    with pytest.raises(CheckpointError, match=r"model: checkpoint '.*my_models.py:build', now 'mlp'"):
        train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=2, **FAST)))
    edited = tmp_path / "copy" / "my_models.py"  # the same file, edited: another model
    edited.parent.mkdir()
    factory_file_text = factory_file.read_text()
    edited.write_text(factory_file_text)
    assert train_pipeline.main(base[:-1] + [f"{edited}:build", "--save-dir", str(tmp_path / "e")]) == 0
    edited.write_text(factory_file_text.replace("0.2", "0.3"))
    with pytest.raises(CheckpointError, match="model_sha256: checkpoint"):
        train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "e"), epochs=2,
                                         model=f"{edited}:build", **FAST)))


def test_bad_factories_are_one_clear_line(penguins_dir: Path, factory_file: Path, tmp_path: Path, capsys):
    sys.path.insert(0, str(ROOT / "solutions"))
    import train_pipeline

    base = ["--data-dir", str(penguins_dir), "--epochs", "1", "--no-mlflow", "--system-interval", "0"]
    cases = {f"{factory_file}:wrong_shape": "expected outputs of shape (batch, 3), got (2, 4)",
             f"{factory_file}:missing": "has no function 'missing'",
             "no_such_package.models:build": "cannot import no_such_package.models",
             str(tmp_path / "absent.py") + ":build": "is not a file",
             "resnet": "expected a built-in network (mlp"}
    for i, (reference, expected) in enumerate(cases.items()):
        save_dir = tmp_path / f"s{i}"
        assert train_pipeline.main(base + ["--save-dir", str(save_dir), "--model", reference]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
        assert not (save_dir / "metrics.json").exists()  # refused before anything was written
    assert train_pipeline.main(base + ["--save-dir", str(tmp_path / "j"), "--model-args", "{width: 3}"]) == 2
    assert "--model-args must be a JSON object" in capsys.readouterr().err
    assert train_pipeline.main(base + ["--save-dir", str(tmp_path / "k"), "--model", f"{factory_file}:build",
                                       "--model-args", '{"depth": 3}']) == 2
    assert "check --model-args" in capsys.readouterr().err


def test_python_api_model_fn_and_a_sink_of_ones_own(penguins_dir: Path, tmp_path: Path):
    sink = Recorder()
    config = train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=3,
                                    model_args={"width": 24}, log_every=2, mlflow=False, tensorboard=False,
                                    system_interval=0.05, progress="off"))
    result = train.run(config, model_fn=build_in_test, sinks=[sink], log=lambda m: None)
    assert result.status == "completed"
    m = result.metrics
    assert m["config"]["model"] == "test_custom_model:build_in_test" and m["config"]["model_sha256"]

    # the sink saw every record the JSONL log holds, with the same steps and values
    jsonl = list(fileio.read_jsonl(tmp_path / "s" / "logs" / "metrics.jsonl"))
    for kind in ("step", "epoch"):
        ours = [(step, d) for k, step, d in sink.dicts if k == kind]
        logged = [r for r in jsonl if r["type"] == kind]
        assert len(ours) == len(logged) > 0
        assert all(step == r["step"] and d.items() <= r.items() for (step, d), r in zip(ours, logged))
    assert [d["train_loss"] for k, _, d in sink.dicts if k == "epoch"] == [e["train_loss"] for e in m["epochs"]]
    assert [k for k, _, _ in sink.dicts].count("system") >= 1
    test = [d for k, _, d in sink.dicts if k == "test"]
    assert len(test) == 1 and test[0]["accuracy"] == m["test"]["accuracy"]
    types = [e["type"] for e in sink.events]
    assert types[0] == "run" and types[-1] == "status" and {"model", "artifact"} <= set(types)
    run_event = sink.events[0]
    assert run_event["config"]["model_args"] == {"width": 24} and run_event["steps_per_epoch"] == 8
    assert sink.events[-1]["status"] == "completed" and sink.closed == ["completed"]

    # predict rebuilds the network by importing its factory again ...
    scored = predict.predict_csv(tmp_path / "s" / "model.safetensors", ROOT / "data" / "train.csv")
    assert len(scored) == 344 and set(scored["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    net, spec, _ = predict.load_model(tmp_path / "s" / "model.safetensors")
    assert spec["factory"] == "test_custom_model:build_in_test" and spec["model_args"] == {"width": 24}
    assert net[0].out_features == 24

    # ... and the same seed gives the same initial weights: a second run is identical
    train.run(dataclasses.replace(config, save_dir=str(tmp_path / "t")), model_fn=build_in_test, log=lambda m: None)
    assert_same_training(tmp_path / "s", tmp_path / "t")

    # resuming with another function is resuming with another model
    with pytest.raises(CheckpointError, match="model: checkpoint 'test_custom_model:build_in_test', now "
                                              "'test_custom_model:other_build'"):
        train.run(train.make_config(dict(config.to_dict(), epochs=4)), model_fn=other_build, log=lambda m: None)


class Tied(nn.Module):
    """Two layers sharing one weight matrix (as tied embeddings do): state_dict holds it under two names."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.first, self.second = nn.Linear(n_features, n_features), nn.Linear(n_features, n_features)
        self.second.weight = self.first.weight
        self.head = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        return self.head(torch.relu(self.second(torch.relu(self.first(x)))))


def build_tied(n_features, n_outputs):
    return Tied(n_features, n_outputs)


def test_a_model_with_tied_weights_exports_and_predicts_as_trained(penguins_dir: Path, tmp_path: Path):
    result = train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=2,
                                              **FAST)), model_fn=build_tied, log=lambda m: None)
    assert result.status == "completed"
    net, _, _ = predict.load_model(tmp_path / "s" / "model.safetensors")
    assert net.second.weight is net.first.weight  # still tied after loading
    best = torch.load(tmp_path / "s" / "best.pt", weights_only=True)["model"]
    assert torch.equal(net.first.weight, best["first.weight"]) and torch.equal(net.head.bias, best["head.bias"])
    scored = predict.predict_csv(tmp_path / "s" / "model.safetensors", ROOT / "data" / "train.csv")
    assert len(scored) == 344


def test_predict_says_what_to_do_when_the_factory_is_gone(penguins_dir: Path, factory_file: Path, tmp_path: Path):
    moved = tmp_path / "gone.py"
    moved.write_text(factory_file.read_text())
    train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=2,
                                     model=f"{moved}:build", model_args={"width": 8}, **FAST)), log=lambda m: None)
    path = tmp_path / "s" / "model.safetensors"
    first = predict.predict_csv(path, ROOT / "data" / "train.csv")
    moved.unlink()
    with pytest.raises(DataError, match=r"cannot be rebuilt .*gone.py.* pass model_fn="):
        predict.load_model(path)
    sys.path.insert(0, str(factory_file.parent))
    import my_models

    again = predict.predict_csv(path, ROOT / "data" / "train.csv", model_fn=my_models.build)
    assert np.allclose(first["p_Adelie"], again["p_Adelie"])
    wider = lambda n_features, n_outputs, width: my_models.build(n_features, n_outputs, width + 1)  # noqa: E731
    with pytest.raises(DataError, match="code changed since it was trained"):
        predict.load_model(path, model_fn=wider)       # other code than the training run's: refused by default
    with pytest.raises(DataError, match="do not fit the network"):
        predict.load_model(path, model_fn=wider, trust_changed_code=True)


def test_model_output_check_leaves_the_random_stream_alone():
    from pipeline import model

    net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2)).train()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    model.check_output_shape(net, 4, 2, "x")
    assert torch.equal(torch.rand(3), expected) and net.training  # and the module is back in train mode
    with pytest.raises(ConfigError, match="not a torch.nn.Module"):
        model.make(lambda n_features, n_outputs: "a string", 4, 2, {}, reference="f")


def test_readme_api_example_runs_as_written(penguins_dir: Path, tmp_path: Path, monkeypatch, capsys):
    """The README's Python API example, verbatim, in a folder where processed_data/ is the bundled table."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own model and your own sinks"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    (tmp_path / "processed_data").symlink_to(penguins_dir)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    namespace: dict = {"__name__": "readme_example"}
    with pytest.warns(UserWarning, match="the model was not logged as an MLflow model .*cannot import readme_example"):
        exec(compile(code, "README.md", "exec"), namespace)  # (an exec'd module cannot be imported again)
    result = namespace["result"]
    assert result.status in ("completed", "early_stopped") and result.exit_code == 0
    assert result.metrics["config"]["model"] == "readme_example:build"
    printed = [line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert len(printed) == len(result.metrics["epochs"])  # the sink saw each epoch


def test_the_engine_leaves_a_notebooks_own_mlflow_state_alone(penguins_dir: Path, tmp_path: Path):
    """A learner who called mlflow.set_experiment / set_tracking_uri for their own runs: the engine's run still
    logs its model, and their settings are as they were afterwards."""
    import mlflow
    from mlflow.tracking import fluent

    before = mlflow.get_tracking_uri()
    request_cleanup = (lambda: (mlflow.set_tracking_uri(before), setattr(fluent, "_active_experiment_id", None)))
    theirs = f"sqlite:///{tmp_path / 'theirs.db'}"
    mlflow.set_tracking_uri(theirs)
    mlflow.set_experiment("my-own-experiment")
    ours = f"sqlite:///{tmp_path / 'ours.db'}"
    with warnings_as_errors("the model was not logged"):
        result = train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=2,
                                                  tracking_uri=ours, system_interval=0, progress="off")),
                           log=lambda m: None)
    assert mlflow.get_tracking_uri() == theirs
    assert mlflow.get_experiment_by_name("my-own-experiment") is not None  # still pointing at their store
    run_id = result.metrics["run"]["mlflow"]["run_id"]
    mlflow.set_tracking_uri(ours)
    models = [m for m in mlflow.search_logged_models(experiment_ids=[result.metrics["run"]["mlflow"]["experiment_id"]],
                                                     output_format="list") if m.source_run_id == run_id]
    assert models
    request_cleanup()  # this test process's own state, as the other tests expect it


class warnings_as_errors:
    """Fail if a warning containing `text` is emitted inside the block."""

    def __init__(self, text: str):
        self.text = text

    def __enter__(self):
        import warnings

        self.catcher = warnings.catch_warnings(record=True)
        self.caught = self.catcher.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self.catcher.__exit__(*exc)
        found = [str(w.message) for w in self.caught if self.text in str(w.message)]
        assert not found, found


HOSTILE = '''import sys
import torch
from torch import nn


def raises_value_error(n_features, n_outputs):
    raise ValueError("width must be even")


def raises_key_error(n_features, n_outputs):
    return {}["layers"]


def frozen(n_features, n_outputs):
    net = nn.Linear(n_features, n_outputs)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class FixedBatch(nn.Module):
    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.layer = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        return self.layer(x)[:2].expand(2, -1)  # always two rows, whatever the batch


def fixed_batch(n_features, n_outputs):
    return FixedBatch(n_features, n_outputs)
'''


def test_whatever_user_code_raises_is_one_line_with_its_file_and_line(penguins_dir: Path, tmp_path: Path, capsys):
    sys.path.insert(0, str(ROOT / "solutions"))
    import train_pipeline

    models = tmp_path / "hostile.py"
    models.write_text(HOSTILE)
    exiting = tmp_path / "exiting.py"
    exiting.write_text("import sys\nsys.exit(0)\n\ndef build(n_features, n_outputs):\n    pass\n")
    base = ["--data-dir", str(penguins_dir), "--epochs", "1", "--no-mlflow", "--system-interval", "0"]
    cases = [
        (["--model", f"{models}:raises_value_error"], f"at {models}:7 (ValueError: width must be even)"),
        (["--model", f"{models}:raises_key_error"], f"at {models}:11 (KeyError: 'layers')"),
        (["--model", f"{exiting}:build"], f"importing it failed at {exiting}:2 (SystemExit: 0)"),
        (["--model", f"{models}:frozen"], "the network has no trainable parameters"),
        (["--model", f"{models}:fixed_batch"], "got (2, 3) for a batch of 3"),
        (["--model", "mlp", "--model-args", '{"dropout": 5}'], "dropout must be in [0, 1), not 5"),
        (["--model", "mlp", "--model-args", '{"hidden_sizes": [-1]}'], "hidden_sizes must be a list of whole"),
        (["--model", "mlp", "--model-args", '{"norm": "weird"}'], "norm must be one of none, batch, layer"),
        (["--model", "realmlp", "--model-args", '{"width": -4}'], "width must be a whole number >= 1, not -4"),
        (["--model", "tabm", "--model-args", '{"k": true}'], "k must be a whole number >= 1, not True"),
        (["--model", "realmlp", "--model-args", '{"activation": "swish"}'], "(ValueError: activation must be one"),
        (["--model-args", "[" * 100_000 + "]" * 100_000], "--model-args is nested too deeply to read"),
    ]
    for i, (flags, expected) in enumerate(cases):
        save_dir = tmp_path / f"s{i}"
        assert train_pipeline.main(base + ["--save-dir", str(save_dir), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, (flags, err)
        assert not (save_dir / "metrics.json").exists()


def test_a_config_file_nested_too_deeply_is_one_line(penguins_dir: Path, tmp_path: Path, capsys):
    sys.path.insert(0, str(ROOT / "solutions"))
    import train_pipeline

    deep = tmp_path / "deep.yaml"
    deep.write_text("epochs: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert train_pipeline.main(["--config", str(deep), "--data-dir", str(penguins_dir),
                                "--save-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("nested too deeply" in err or "not valid YAML" in err), err
