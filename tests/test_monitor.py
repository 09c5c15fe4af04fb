"""Phase 3: resource sampling, tolerant log reading, alerts, and the monitor against a live run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline import fileio, monitor, system, train

from conftest import ROOT, script_env

sys.path.insert(0, str(ROOT / "solutions"))
import monitor_training  # noqa: E402


# ---------------------------------------------------------------------------------------------- sampler
class FakeNvml:
    """An NVML with two GPUs where GPU 1 cannot report power (as on some boards)."""
    NVML_TEMPERATURE_GPU = 0

    class Error(Exception):
        pass

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"Fake GPU"

    def nvmlDeviceGetUtilizationRates(self, h):
        return type("U", (), {"gpu": 40 + h})()

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("M", (), {"used": 2 * 2**30, "total": 16 * 2**30})()

    def nvmlDeviceGetTemperature(self, h, kind):
        return 60 + h

    def nvmlDeviceGetPowerUsage(self, h):
        if h == 1:
            raise self.Error("NVML_ERROR_NOT_SUPPORTED")
        return 150_000


def test_sampler_without_nvml_samples_cpu_and_notes_once():
    samples, notes = [], []
    nvml = system.Nvml(module=type("Missing", (), {"nvmlInit": staticmethod(lambda: (_ for _ in ()).throw(
        RuntimeError("NVML Shared Library Not Found")))})())
    sampler = system.SystemSampler(0.05, samples.append, nvml=nvml, warn=notes.append).start()
    time.sleep(0.3)
    sampler.stop()
    assert len(samples) >= 3 and all("gpus" not in s for s in samples)
    assert samples[0]["rss_mb"] > 0 and 0 <= samples[0]["ram_percent"] <= 100
    assert notes == ["GPU metrics unavailable (RuntimeError: NVML Shared Library Not Found); sampling CPU and memory only"]
    assert sampler.summary["samples"] == len(samples)


def test_real_pynvml_without_gpu_degrades():
    nvml = system.Nvml()
    assert nvml.available is False or nvml.handles  # on a GPU machine this is True with handles
    if not nvml.available:
        assert "sampling CPU and memory only" in nvml.notes[0]


def test_one_failing_gpu_query_loses_only_that_metric():
    notes: list[str] = []
    nvml = system.Nvml(module=FakeNvml())
    sampler = system.SystemSampler(10, lambda s: None, nvml=nvml, warn=notes.append)
    first, second = nvml.sample(), nvml.sample()
    assert first[0] == {"index": 0, "name": "Fake GPU", "util_percent": 40.0, "mem_used_mb": 2048.0,
                        "mem_total_mb": 16384.0, "temperature_c": 60.0, "power_w": 150.0}
    assert "power_w" not in first[1] and first[1]["util_percent"] == 41.0 and second[1]["temperature_c"] == 61.0
    sampler._report_notes()
    assert notes == ["GPU 1: power_w unavailable (Error); other metrics continue"]  # once, not per sample


def test_a_sampler_that_raises_does_not_stop_training(penguins_dir: Path, tmp_path: Path, monkeypatch):
    calls = {"n": 0}

    def broken(process, nvml):
        calls["n"] += 1
        raise OSError("proc is gone")
    monkeypatch.setattr(system, "sample_once", broken)
    with pytest.warns(UserWarning, match="resource sampling failed"):
        result = train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=3,
                                                  mlflow=False, tensorboard=False, system_interval=0.01,
                                                  progress="off")), log=lambda m: None)
    assert result.status == "completed" and calls["n"] >= 1


# ------------------------------------------------------------------------------------------- reading
def test_tail_reader_skips_half_lines_and_survives_rotation(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    tail = monitor.JsonlTail(path)
    assert tail.poll() == ([], False)  # not there yet
    path.write_bytes(b'{"type": "step", "step": 1}\n{"type": "st')
    assert tail.poll() == ([{"type": "step", "step": 1}], False)
    with open(path, "ab") as handle:
        handle.write(b'ep", "step": 2}\n')
    assert tail.poll() == ([{"type": "step", "step": 2}], False)
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(b'{"type": "run"}\n')
    os.replace(replacement, path)  # rotated / rewritten atomically (as on resume)
    assert tail.poll() == ([{"type": "run"}], True)


def test_reader_polls_while_a_writer_appends(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    tail = monitor.JsonlTail(path)
    seen: list[int] = []
    stop = threading.Event()

    def writer():
        for i in range(2000):
            fileio.append_jsonl(path, [{"type": "step", "step": i, "pad": "x" * (i % 97)}])
        stop.set()
    thread = threading.Thread(target=writer)
    thread.start()
    while not stop.is_set():
        seen += [r["step"] for r in tail.poll()[0]]
    thread.join()
    seen += [r["step"] for r in tail.poll()[0]]
    assert seen == list(range(2000))


# -------------------------------------------------------------------------------------------- alerts
def _epochs(train_losses, val_losses):
    return [{"epoch": i + 1, "step": 10 * (i + 1), "train_loss": t, "val_loss": v, "epoch_seconds": 1.0,
             "data_seconds": 0.1} for i, (t, v) in enumerate(zip(train_losses, val_losses))]


def test_overfitting_detector():
    assert monitor.detect_overfitting(_epochs([1, .8, .6, .5], [1, .9, .85, .84])) is None
    assert "val_loss has not improved for 3 epochs" in monitor.detect_overfitting(_epochs([1, .8, .6, .4], [.9, .95, 1, 1.1]))
    assert monitor.detect_overfitting(_epochs([1, .7, .5, .3], [1, .85, .8, .79])) is None  # val still improving
    assert "best 0.8 at epoch 1" in monitor.detect_overfitting(_epochs([1, .7, .5, .3], [.8, .81, .8, .805]))
    # patience is a boundary: 2 epochs since the best is not yet 3
    assert monitor.detect_overfitting(_epochs([1, .8, .6], [.9, .95, 1])) is None
    # validation stalls but training loss does not fall either: not overfitting (underfitting, or a plateau)
    assert monitor.detect_overfitting(_epochs([.5, .5, .6, .7], [.9, .95, 1, 1.1])) is None


def test_one_overfitting_rule_follows_the_monitored_metric_and_its_direction():
    from pipeline import metrics, report

    epochs = _epochs([1, .8, .6, .4, .3], [1.0, .9, .8, .7, .6])  # val_loss keeps falling ...
    for e, acc in zip(epochs, [.70, .90, .88, .87, .86]):         # ... but val_accuracy peaked at epoch 2
        e["val_accuracy"] = acc
    assert monitor.detect_overfitting(epochs, metric="val_loss") is None
    found = monitor.detect_overfitting(epochs, metric="val_accuracy")
    assert found and "best 0.9 at epoch 2" in found
    assert metrics.best_epoch(epochs, "val_accuracy") == (2, .90)  # higher is better: not min()
    analysis = report.overfitting_analysis(epochs, "val_accuracy")
    assert analysis["best_epoch"] == 2 and analysis["verdict"].startswith("Overfitting: " + found)
    assert report.overfitting_analysis(epochs, "val_loss")["best_epoch"] == 5
    view = monitor.RunView(Path("."), run={"monitor_metric": "val_accuracy"}, status="completed", epochs=epochs)
    assert [a.name for a in monitor.detect_alerts(view, 0.0)] == ["overfitting"]
    assert view.best() == (2, "val_accuracy", .90)


def test_status_table_gives_both_exit_codes():
    from pipeline import status

    assert [status.trainer_exit_code(s) for s in ("completed", "early_stopped", "failed")] == [0, 0, 1]
    assert status.trainer_exit_code("interrupted", 15) == 143 and status.trainer_exit_code("interrupted") == 130
    assert [status.monitor_exit_code(s) for s in ("completed", "failed", "interrupted", "lost", "running")] == \
        [0, 1, 3, 4, 0]


def test_alerts_cover_each_condition():
    now = 1000.0
    view = monitor.RunView(Path("."), run={"device": "cuda:0", "monitor_metric": "val_loss"}, status="running",
                           steps=[{"step": 1, "loss": None, "time": 1.0}, {"step": 2, "loss": 0.5, "time": 2.0}],
                           epochs=_epochs([1, .8, .6, .4], [.9, .95, 1, 1.1]), last_event_time=100.0,
                           system=[{"ram_percent": 95.0, "gpus": [{"index": 0, "mem_used_mb": 79_000, "mem_total_mb": 80_000,
                                                                    "temperature_c": 91.0, "util_percent": 5.0}]}] * 6)
    view.epochs[-1]["data_seconds"] = 0.6
    names = [a.name for a in monitor.detect_alerts(view, now)]
    assert names[0] == "non_finite_loss"
    assert set(names) == {"non_finite_loss", "overfitting", "stalled", "input_bound", "memory_pressure", "temperature"}
    calm = monitor.RunView(Path("."), run={"device": "cpu"}, status="running", epochs=_epochs([1, .8], [1, .9]),
                           last_event_time=now - 1, system=[{"ram_percent": 30.0}])
    assert monitor.detect_alerts(calm, now) == []


def test_smoothing_and_chart():
    assert monitor.smooth([1.0, 0.0, 0.0], alpha=0.5) == [1.0, 0.5, 0.25]
    lines = monitor.ascii_chart({"train": [3.0, 2.0, 1.0], "val": [3.0, 2.5, 2.0]}, width=10, height=5)
    assert lines[0].startswith("        3 |") and lines[0][11] in "*o"  # both start at 3
    assert lines[-2] == "        1 |         *"  # train ends at the bottom right
    assert lines[-1].strip() == "* train  o val"


# ------------------------------------------------------------------------------------- against a run
def _train(data_dir: Path, save_dir: Path, epochs: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "solutions" / "train_pipeline.py"), "--data-dir", str(data_dir),
                             "--epochs", str(epochs), "--save-dir", str(save_dir), "--no-mlflow", "--hidden-sizes",
                             "256,256", "--batch-size", "16", "--system-interval", "0.2", "--log-every", "2",
                             "--early-stopping-patience", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env())


def _monitor(log_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "solutions" / "monitor_training.py"), "--log-dir",
                             str(log_dir), "--refresh", "0.2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env())


@pytest.mark.slow
def test_monitor_started_first_follows_the_run_and_exits_with_its_status(penguins_dir: Path, tmp_path: Path):
    save = tmp_path / "run"
    watcher = _monitor(save / "logs")
    time.sleep(1.5)
    assert watcher.poll() is None  # waiting for the run to appear
    trainer = _train(penguins_dir, save, 25)
    assert trainer.wait(timeout=300) == 0
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    assert "status: RUNNING" in out and "status: COMPLETED" in out, out
    assert "Traceback" not in err


@pytest.mark.slow
def test_monitor_reports_a_killed_run_as_lost(penguins_dir: Path, tmp_path: Path):
    save = tmp_path / "run"
    trainer = _train(penguins_dir, save, 400)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(r.get("type") == "epoch" for r in
                                                  fileio.read_jsonl(save / "logs" / "metrics.jsonl")):
        time.sleep(0.1)
    watcher = _monitor(save / "logs")
    time.sleep(1.0)
    trainer.send_signal(signal.SIGKILL)
    trainer.wait(timeout=30)
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 4, (out, err)
    assert "status: LOST" in out and "is gone without a final status" in out


def test_once_snapshot_in_process(penguins_dir: Path, tmp_path: Path, capsys):
    assert monitor_training.main(["--log-dir", str(tmp_path / "nothing"), "--once"]) == 0
    assert "waiting for a run" in capsys.readouterr().out
    train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=3, mlflow=False,
                                     tensorboard=False, system_interval=0.05, progress="off")), log=lambda m: None)
    assert monitor_training.main(["--log-dir", str(tmp_path / "s" / "logs"), "--once"]) == 0
    out = capsys.readouterr().out
    assert "status: COMPLETED" in out and "epoch 3/3" in out and "best: val_loss" in out and "system: CPU" in out
    assert "* train_loss  o val_loss" in out


def test_failed_run_exit_code(tmp_path: Path, capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    fileio.append_jsonl(logs / "metrics.jsonl", [
        {"type": "run", "time": 1.0, "pid": 1, "host": "elsewhere", "epochs": 2, "steps_per_epoch": 2},
        {"type": "step", "time": 2.0, "step": 1, "loss": None},
        {"type": "status", "time": 3.0, "status": "failed", "message": "non-finite loss (nan) in epoch 1"}])
    assert monitor_training.main(["--log-dir", str(logs), "--once"]) == 1
    assert "ALERT [critical] non_finite_loss" in capsys.readouterr().out
