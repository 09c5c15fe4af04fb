"""TensorBoard's event files read back the way TensorBoard reads them (its EventAccumulator): the Keras layout
(train/ and validation/ runs with the same epoch_* tags, so one chart overlays them), epoch metrics against the
epoch, step metrics against the global step, no constant or duplicate tags, typed hparams in the run's own
folder, and a resumed run with every point once."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline import fileio, tracking, train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import metadata as hparams_metadata  # noqa: E402

RUN = dict(mlflow=False, system_interval=0.05, progress="off", log_every=2, baselines=False)
SYSTEM = {"system/cpu_percent", "system/process_cpu_percent", "system/ram_used_mb", "system/ram_percent",
          "system/rss_mb"}


def _train(data_dir: Path, save_dir: Path, epochs: int) -> None:
    train.run(train.make_config(dict(data_dir=str(data_dir), save_dir=str(save_dir), epochs=epochs, **RUN)),
              log=lambda m: None)


def _read(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def _points(events: EventAccumulator) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _run_folders(logs: Path) -> set[str]:
    """Every folder TensorBoard would list as a run (one holding an event file), relative to logs/."""
    return {str(p.parent.relative_to(logs)) for p in logs.rglob("events.out.tfevents.*")}


def _log(save_dir: Path, kind: str) -> list[dict]:
    return [r for r in fileio.read_jsonl(save_dir / "logs" / "metrics.jsonl") if r["type"] == kind]


def _next_second() -> None:
    """TensorBoard reads a folder's event files in name order: start time in whole seconds, host, pid, and a
    counter that is not zero-padded. A real resume is a later process; in a test's process, the next second."""
    time.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))


def _check_run(save_dir: Path, epochs: int) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """What every run must satisfy, whether or not it was resumed; returns the points by folder."""
    logs = save_dir / "logs"
    assert _run_folders(logs) == {".", "train", "validation", "test"}  # no hparams/ or timestamped folder
    runs = {name: _points(_read(logs / name)) for name in (".", "train", "validation", "test")}

    # train and validation of one metric: the same tag in two runs -> one chart with two lines
    assert {"epoch_loss", "epoch_learning_rate", "epoch_seconds", "epoch_samples_per_second"} <= set(runs["train"])
    assert {"epoch_loss", "epoch_accuracy", "epoch_f1_macro"} <= set(runs["validation"])
    assert not any(tag.startswith("epoch_val") or tag == "epoch_epoch" for tag in runs["validation"])

    # epoch metrics against the epoch, one point each, the values of the JSONL log
    entries = _log(save_dir, "epoch")
    assert [r["epoch"] for r in entries] == list(range(1, epochs + 1))
    for name in ("train", "validation"):
        for tag, points in runs[name].items():
            assert [step for step, _ in points] == list(range(1, epochs + 1)), (name, tag)
    assert runs["train"]["epoch_loss"] == [(r["epoch"], pytest.approx(r["train_loss"])) for r in entries]
    assert runs["validation"]["epoch_loss"] == [(r["epoch"], pytest.approx(r["val_loss"])) for r in entries]
    assert runs["validation"]["epoch_accuracy"] == [(r["epoch"], pytest.approx(r["val_accuracy"])) for r in entries]

    # step metrics against the global step, under batch_*; resources under system/*; nothing else up there
    steps = _log(save_dir, "step")
    assert runs["."]["batch_loss"] == [(r["step"], pytest.approx(r["loss"])) for r in steps]
    assert [step for step, _ in runs["."]["batch_loss"]] == list(range(2, 8 * epochs + 1, 2))  # 8 batches/epoch
    assert set(runs["."]) - SYSTEM == {"batch_loss", "batch_learning_rate"}
    assert SYSTEM <= set(runs["."])  # sampled every 0.05 s, so each has points; no ram_total_mb (a constant)

    # the test scores: one point each, at the epoch whose weights were scored
    summary = fileio.read_json(save_dir / "metrics.json")
    best_epoch = summary["best"]["epoch"]
    assert runs["test"]["epoch_accuracy"] == [(best_epoch, pytest.approx(summary["test"]["accuracy"]))]
    assert all(len(points) == 1 for points in runs["test"].values())
    return runs


def test_tags_overlay_train_and_validation_and_plot_epochs_against_the_epoch(penguins_dir: Path, tmp_path: Path):
    _train(penguins_dir, tmp_path / "s", epochs=2)
    _check_run(tmp_path / "s", epochs=2)


def test_hparams_are_typed_and_live_in_the_runs_own_folder(penguins_dir: Path, tmp_path: Path):
    _train(penguins_dir, tmp_path / "s", epochs=1)
    root = _read(tmp_path / "s" / "logs")
    content = root.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    assert set(content) == {hparams_metadata.SESSION_START_INFO_TAG, hparams_metadata.SESSION_END_INFO_TAG}
    written = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]).hparams
    sent = _log(tmp_path / "s", "run")[0]["hparams"]  # what the engine handed the sinks
    assert set(written) == {k for k, v in sent.items() if v is not None}
    kind = {bool: "bool_value", int: "number_value", float: "number_value", str: "string_value"}
    for name, value in written.items():
        expected = sent[name]
        assert value.WhichOneof("kind") == kind.get(type(expected), "string_value"), name
    assert written["batch_size"].number_value == 32 and isinstance(sent["batch_size"], int)
    assert written["learning_rate"].number_value == pytest.approx(sent["learning_rate"])
    assert written["deterministic"].bool_value is sent["deterministic"]
    assert written["optimizer"].string_value == sent["optimizer"]
    assert written["hidden_sizes"].string_value == fileio.dumps_strict(sent["hidden_sizes"])  # a list, as JSON
    assert {type(v) for v in sent.values()} >= {bool, int, float, str}  # the check above covered every type


def test_a_resumed_run_has_every_point_once(penguins_dir: Path, tmp_path: Path):
    save = tmp_path / "s"
    _train(penguins_dir, save, epochs=2)
    first = _check_run(save, epochs=2)
    _next_second()
    _train(penguins_dir, save, epochs=4)  # the same command with more epochs: continues from last.pt
    assert len(list((save / "logs" / "train").glob("events.out.tfevents.*"))) == 2  # really a second process
    runs = _check_run(save, epochs=4)  # steps 1..4 once each, batch_loss 2..32 once each, one test point
    assert runs["validation"]["epoch_loss"][:2] == first["validation"]["epoch_loss"]  # the first two kept


def test_a_resume_purges_what_came_after_the_checkpoint_by_each_folders_axis(tmp_path: Path):
    """A killed run logged epoch 3 (and steps up to 26) after its last checkpoint at epoch 2 / step 16: the
    resumed process makes them again and TensorBoard shows only the new ones."""
    logs = tmp_path / "logs"
    killed = tracking.TensorBoardSink(logs)
    killed.log_event({"type": "run", "start_epoch": 0, "start_step": 0, "hparams": {}})
    for step in range(2, 27, 2):
        killed.log_dict({"loss": 9.0, "lr": 0.1, "epoch": 1}, step, "step")
    for epoch in (1, 2, 3):
        killed.log_dict({"epoch": epoch, "train_loss": 9.0 + epoch, "val_loss": 9.0 + epoch}, 8 * epoch, "epoch")
    killed.log_dict({"test_loss": 9.0}, 24, "test")  # as if it had finished before (a resume that extends it)
    killed.close("interrupted")
    _next_second()

    resumed = tracking.TensorBoardSink(logs, purge_step=17)  # what open_tracker passes after step 16
    resumed.log_event({"type": "run", "start_epoch": 2, "start_step": 16, "hparams": {}})
    for step in range(18, 33, 2):
        resumed.log_dict({"loss": 1.0, "lr": 0.1, "epoch": 3}, step, "step")
    for epoch in (3, 4):
        resumed.log_dict({"epoch": epoch, "train_loss": float(epoch), "val_loss": float(epoch)}, 8 * epoch, "epoch")
    resumed.log_dict({"best_epoch": 4}, 32, "best")
    resumed.log_dict({"test_loss": 0.5, "test_loss_ci_low": 0.4, "test_loss_ci_high": 0.6}, 32, "test")
    resumed.close("completed")

    for run in ("train", "validation"):
        assert _points(_read(logs / run))["epoch_loss"] == [(1, 10.0), (2, 11.0), (3, 3.0), (4, 4.0)]
    root = _points(_read(logs))
    assert root["batch_loss"] == [(s, 9.0) for s in range(2, 17, 2)] + [(s, 1.0) for s in range(18, 33, 2)]
    assert _points(_read(logs / "test")) == {"epoch_loss": [(4, 0.5)]}  # the old score gone, no intervals


def test_constant_and_bookkeeping_values_are_not_plotted(tmp_path: Path):
    sink = tracking.TensorBoardSink(tmp_path / "logs")
    sink.log_dict({"time": 1.0, "cpu_percent": 5.0, "ram_total_mb": 1024.0,
                   "gpus": [{"index": 0, "name": "X", "util_percent": 50.0, "mem_total_mb": 80.0}]}, 3, "system")
    sink.log_dict({"best_epoch": 1, "best_val_loss": 0.1}, 3, "best")
    sink.close("completed")
    assert set(_points(_read(tmp_path / "logs"))) == {"system/cpu_percent", "system/gpu0_util_percent"}
    assert _run_folders(tmp_path / "logs") == {"."}
