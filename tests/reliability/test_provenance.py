"""Provenance all the way: a factory edited after training (or a helper it imports) is refused by predict and by a
resume, naming what changed; the same code is accepted; an explicit override uses the code as it is now."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from pipeline import predict, train  # noqa: E402
from pipeline.errors import CheckpointError, DataError  # noqa: E402

FAST = dict(mlflow=False, tensorboard=False, system_interval=0, progress="off", baselines=False)


def write_factory(folder: Path, activation: str = "ReLU", helper_width: int = 24) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "blocks.py").write_text(textwrap.dedent(f"""
        from torch import nn

        def block(n_in):
            return nn.Sequential(nn.Linear(n_in, {helper_width}), nn.{activation}())
    """))
    factory = folder / "factory.py"
    factory.write_text(textwrap.dedent("""
        from torch import nn
        from blocks import block

        def build(n_features, n_outputs):
            return nn.Sequential(block(n_features), nn.Linear(24, n_outputs))
    """))
    return factory


@pytest.fixture()
def factory_run(penguins_dir: Path, tmp_path: Path, monkeypatch):
    folder = tmp_path / "user_code"
    factory = write_factory(folder)
    monkeypatch.syspath_prepend(str(folder))          # `from blocks import block` resolves like a user's project
    monkeypatch.delitem(sys.modules, "blocks", raising=False)
    config = dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "run"), epochs=2, model=f"{factory}:build",
                  **FAST)
    result = train.run(train.make_config(config), log=lambda m: None)
    assert result.status == "completed"
    return folder, factory, config, tmp_path / "run"


def reimport_blocks(monkeypatch):
    monkeypatch.delitem(sys.modules, "blocks", raising=False)


def test_predict_refuses_a_factory_whose_activation_was_edited(factory_run, monkeypatch):
    folder, factory, _, run = factory_run
    before = predict.predict_csv(run / "model.safetensors", ROOT / "data" / "train.csv")   # the same code: accepted
    write_factory(folder, activation="Tanh")                                                 # same shapes
    reimport_blocks(monkeypatch)
    with pytest.raises(DataError, match=r"code changed since it was trained \(blocks.py differ"):
        predict.predict_csv(run / "model.safetensors", ROOT / "data" / "train.csv")
    after = predict.predict_csv(run / "model.safetensors", ROOT / "data" / "train.csv", trust_changed_code=True)
    assert len(after) == len(before) and not (after["p_Adelie"] == before["p_Adelie"]).all()


def test_a_resume_refuses_an_edited_helper_module(factory_run, monkeypatch):
    folder, factory, config, run = factory_run
    write_factory(folder, activation="Tanh")
    reimport_blocks(monkeypatch)
    with pytest.raises(CheckpointError, match="model_sha256"):
        train.run(train.make_config(dict(config, epochs=3)), log=lambda m: None)


def test_the_same_code_resumes(factory_run, monkeypatch):
    folder, factory, config, run = factory_run
    reimport_blocks(monkeypatch)
    again = train.run(train.make_config(dict(config, epochs=3)), log=lambda m: None)
    assert again.status == "completed" and len(again.metrics["epochs"]) == 3
    assert set(again.metrics["config"]) >= {"model_sha256"}
