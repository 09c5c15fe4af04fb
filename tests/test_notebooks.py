"""The lessons as a learner meets them: figures in every executed lesson that draws one, lesson 02 run again and
again in the same folder, and lesson 04's best epoch for a metric where higher is better."""
from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from pipeline import course, train
from pipeline.errors import ConfigError


def outputs(path: Path) -> list[dict]:
    return [o for c in nbformat.read(str(path), as_version=4).cells for o in c.get("outputs", [])]


def text_of(path: Path) -> str:
    return "".join(o.get("text", "") for o in outputs(path))


def errors_in(path: Path) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for o in outputs(path) if o.get("output_type") == "error"]


def count_images(path: Path) -> tuple[int, int]:
    """(image/png outputs, <img> tags inside HTML outputs) of an executed notebook."""
    pngs = sum("image/png" in o.get("data", {}) for o in outputs(path))
    tags = sum(len(re.findall(r"<img\s", o.get("data", {}).get("text/html", ""))) for o in outputs(path))
    return pngs, tags


def test_executed_lessons_carry_their_figures(demo_run: dict[str, Path]):
    """The demo ran from a shell exporting MPLBACKEND=Agg (see conftest): the kernels must not inherit it."""
    executed = demo_run["executed notebooks"]
    counts = {name: count_images(executed / f"{name}.ipynb") for name in course.NOTEBOOKS}
    assert counts["01_data_preparation"][0] >= 1, counts   # the feature histograms
    assert counts["03_monitoring"][0] >= 2, counts         # the watched run's last frame, the overfitting run
    assert counts["04_reporting"][1] >= 3, counts          # report sections embed their figures as <img>


def kill_demo_lines(text: str) -> tuple[str, int, list[dict]]:
    killed = re.search(r"(run-\d+): killed after (\d+) epoch\(s\) in its log; last\.pt holds epoch (\d+)", text)
    assert killed, text[-3000:]
    status = re.search(r"status: completed \| epochs: 8 \| resumed: (\[.*\])", text)
    assert status, text[-3000:]
    resumed = ast.literal_eval(status.group(1))  # the printed list of dicts
    return killed.group(1), int(killed.group(3)), resumed


def test_lesson_02_runs_again_in_the_same_folder(demo_run: dict[str, Path]):
    """`make demo` ran 02 once; run it twice more in the same folders, the second time with another
    learning rate. Every run trains afresh, in its own folder; earlier runs stay; the kill demo reports its own."""
    run_dir = demo_run["processed data"].parent
    runs = run_dir / "checkpoints"
    first = json.loads(demo_run["metrics"].read_text())
    seen_kill_dirs = {"run-001"}
    for i, learning_rate in enumerate((0.001, 0.003), start=2):
        out = run_dir / "notebooks" / f"02_again_{i}.ipynb"
        course.execute("02_training_pipeline", out, {"data_dir": str(demo_run["processed data"]), "save_dir": str(runs),
                                                     "work_dir": str(run_dir), "epochs": 4,
                                                     "learning_rate": learning_rate, "run_name": "demo"},
                       log=lambda m: None)
        assert not errors_in(out), errors_in(out)
        text = text_of(out)
        save_dir = Path(re.search(r"training into (\S+)", text).group(1))
        assert save_dir.parent == runs and f"lr{learning_rate:g}-" in save_dir.name
        metrics = json.loads((save_dir / "metrics.json").read_text())
        assert metrics["config"]["learning_rate"] == learning_rate
        assert metrics["run"]["status"] == "completed" and len(metrics["epochs"]) == 4 and not metrics["run"]["resumed"]
        assert "epoch 4/4" in text  # it trained: not "nothing to do"
        assert "nothing to do" in text and "refused:" in text and "learning_rate: checkpoint" in text  # the lesson
        kill_dir, epoch, resumed = kill_demo_lines(text)
        assert kill_dir not in seen_kill_dirs, "the kill demo reused an earlier run's folder"
        seen_kill_dirs.add(kill_dir)
        assert 1 <= epoch < 8, "last.pt is an earlier, finished run's"
        assert len(resumed) == 1 and resumed[0]["epoch"] == epoch
        assert Path(resumed[0]["checkpoint"]).parent == run_dir / "kill_demo" / kill_dir
        accuracy = re.search(r"accuracy on the (\d+) held-out test rows: ([\d.]+) \(metrics.json: ([\d.]+)\)", text)
        assert accuracy and accuracy.group(2) == accuracy.group(3), text[-2000:]
        assert int(accuracy.group(1)) == metrics["data"]["rows"]["test"]
        assert "whole file" not in text
    assert json.loads(demo_run["metrics"].read_text()) == first  # the demo's own run is untouched
    assert len(list(runs.glob("*/metrics.json"))) == 3


def test_lesson_04_finds_the_best_epoch_when_higher_is_better(penguins_dir: Path, tmp_path: Path):
    """With val_accuracy monitored, the best epoch is the highest one: `min` would pick the worst."""
    config = train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "run"), epochs=5,
                                    early_stopping_metric="val_accuracy", mlflow=False, tensorboard=False,
                                    progress="off", system_interval=0))
    result = train.run(config, log=lambda m: None)
    best = result.metrics["best"]
    assert best["metric"] == "val_accuracy"
    values = [e["val_accuracy"] for e in result.metrics["epochs"]]
    assert values.index(min(values)) + 1 != best["epoch"], "this run cannot tell min from max"
    out = tmp_path / "04.ipynb"
    course.execute("04_reporting", out, {"metrics_path": str(tmp_path / "run" / "metrics.json"),
                                         "output_html": str(tmp_path / "report.html")}, log=lambda m: None)
    assert not errors_in(out), errors_in(out)
    assert (f"highest val_accuracy: epoch {best['epoch']} ({best['value']:.4f}); the engine says epoch {best['epoch']}"
            in text_of(out))


def test_run_folders_are_new_each_time_and_the_newest_is_found(tmp_path: Path):
    label = course.run_label(lr=0.001, bs=32, h="256,128", e=20)
    assert label == "lr0.001-bs32-h256x128-e20"
    first, second = course.new_run_dir(tmp_path, label), course.new_run_dir(tmp_path, label)
    assert (first.name, second.name) == (f"{label}-001", f"{label}-002") and first.is_dir() and second.is_dir()
    assert course.new_run_dir(tmp_path, "other").name == "other-001"
    (second / "metrics.json").write_text("{}")
    (first / "metrics.json").write_text("{}")  # written last: the newest run, whatever its number
    assert course.latest_run(tmp_path) == first
    with pytest.raises(ConfigError, match="run notebook 02 first"):
        course.latest_run(tmp_path / "other-001")


def test_kernels_do_not_inherit_a_non_interactive_backend(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    with course.kernel_environment():
        assert "MPLBACKEND" not in os.environ
    assert os.environ["MPLBACKEND"] == "Agg"


def test_lessons_03_to_05_run_again_in_the_same_folder(demo_run: dict[str, Path]):
    """After `make demo`: 03 twice more (the same settings, then another learning rate), 04 and 05 once more,
    in the demo's own folders. Each runs without error, and every earlier run is still there."""
    run_dir = demo_run["processed data"].parent
    before = {p.parent for p in run_dir.rglob("metrics.json")}
    for i, learning_rate in enumerate((None, 0.003), start=2):
        out = run_dir / "notebooks" / f"03_again_{i}.ipynb"
        params = {"data_dir": str(demo_run["processed data"]), "work_dir": str(run_dir / "monitoring"), "epochs": 3,
                  "overfit_epochs": 4}
        if learning_rate is not None:
            params["learning_rate"] = learning_rate
        course.execute("03_monitoring", out, params, log=lambda m: None)
        assert not errors_in(out), errors_in(out)
    out = run_dir / "notebooks" / "04_again.ipynb"
    course.execute("04_reporting", out, {"output_html": str(run_dir / "report_again.html"),
                                         "metrics_path": str(demo_run["metrics"])}, log=lambda m: None)
    assert not errors_in(out) and (run_dir / "report_again.html").stat().st_size > 0
    out = run_dir / "notebooks" / "05_again.ipynb"
    course.execute("05_performance", out, {"work_dir": str(run_dir / "performance"), "rows": 20_000, "repeats": 1,
                                           "try_compile": False, "ddp_processes": 0}, log=lambda m: None)
    assert not errors_in(out), errors_in(out)
    after = {p.parent for p in run_dir.rglob("metrics.json")}
    assert before <= after and len(after) > len(before)  # new runs beside the old ones, none deleted
