"""The monitor survives anything a log can hold, refuses impossible flags and unreadable logs with one line, takes
a vanished log folder's final word from metrics.json, and is not fooled by a reused PID."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from faults import ROOT, permissions_apply, script

from pipeline import fileio, monitor

sys.path.insert(0, str(ROOT / "solutions"))
import monitor_training  # noqa: E402

HOST = socket.gethostname()


def run_record(pid: int | object = None, *, when: float | None = None, **extra) -> dict:
    return {"type": "run", "time": time.time() if when is None else when, "pid": os.getpid() if pid is None else pid,
            "host": HOST, "run_name": "r", "epochs": 3, "steps_per_epoch": 2, "start_step": 0, "device": "cpu",
            "monitor_metric": "val_loss", **extra}


def epoch(n: int, **extra) -> dict:
    return {"type": "epoch", "time": time.time(), "step": 2 * n, "epoch": n, "train_loss": 1.0 / n,
            "val_loss": 1.1 / n, "epoch_seconds": 0.5, "samples_per_second": 100.0, "data_seconds": 0.01, **extra}


def everything(view: monitor.RunView) -> list[str]:
    """What the dashboard computes from a view: alerts, the text snapshot, the rich layout."""
    alerts = monitor.detect_alerts(view)
    lines = monitor.snapshot_lines(view, alerts)
    monitor.render_rich(view, alerts)
    view.eta_seconds(), view.best(), view.global_step
    return lines


ODD_RECORDS = {
    "string step": {"type": "step", "step": "ten", "loss": 0.5},
    "string pid": run_record("1234"),
    "negative pid": run_record(-1),
    "pid zero": run_record(0),
    "missing epoch number": {"type": "epoch", "step": 4, "train_loss": 0.3},
    "string epoch number": {"type": "epoch", "step": 4, "epoch": "2", "train_loss": 0.3},
    "string loss": {"type": "step", "step": 3, "loss": "0.5"},
    "null where numbers belong": {"type": "epoch", "step": None, "epoch": 2, "train_loss": None, "val_loss": None,
                                  "epoch_seconds": None, "samples_per_second": None, "data_seconds": None},
    "lists and dicts where numbers belong": {"type": "epoch", "epoch": 2, "step": [1], "train_loss": {"a": 1},
                                             "val_loss": [0.1], "lr": {}, "epoch_seconds": [1, 2]},
    "string time": {"type": "step", "time": "yesterday", "step": 5, "loss": 0.2},
    "huge integers": {"type": "epoch", "epoch": 10 ** 400, "step": 10 ** 300, "train_loss": 10 ** 400},
    "huge step": {"type": "step", "step": 10 ** 18, "loss": 1e308, "time": 1e308},
    "string start_step": run_record(start_step="0"),
    "string epochs total": run_record(epochs="many", steps_per_epoch=[2]),
    "status not a string": {"type": "status", "status": 5, "message": {"a": 1}},
    "unknown type": {"type": ["step"], "step": 1},
    "system sample with wrong types": {"type": "system", "time": time.time(), "cpu_percent": "high", "ram_percent": None,
                                       "gpus": [{"index": "0", "util_percent": "x"}, "gpu", {"index": 0,
                                                                                            "temperature_c": [90]}]},
    "system gpus not a list": {"type": "system", "time": time.time(), "gpus": {"index": 0}},
    "boolean numbers": {"type": "epoch", "epoch": True, "step": False, "train_loss": True},
}


@pytest.mark.parametrize("case", list(ODD_RECORDS))
def test_one_oddly_typed_record_never_ends_the_monitor(case: str, tmp_path: Path, capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    good = [run_record(), epoch(1), {"type": "step", "time": time.time(), "step": 3, "loss": 0.4}]
    target = logs / ("system.jsonl" if case.startswith("system") else "metrics.jsonl")
    fileio.append_jsonl(logs / "metrics.jsonl", good)
    fileio.append_jsonl(target, [ODD_RECORDS[case]])
    fileio.append_jsonl(logs / "metrics.jsonl", [epoch(2)])
    view = monitor.RunFollower(logs).poll()
    lines = everything(view)
    assert lines and view.epochs[-1]["epoch"] in (2, 10 ** 400) or view.epochs
    code = monitor_training.main(["--log-dir", str(logs), "--once"])
    out = capsys.readouterr().out
    assert code in (0, 1, 3, 4) and "status:" in out


@pytest.mark.parametrize("case", ["string pid", "negative pid", "pid zero"])
def test_a_pid_that_is_no_pid_is_a_lost_run_not_a_live_one(case: str, tmp_path: Path):
    logs = tmp_path / "logs"
    logs.mkdir()
    fileio.append_jsonl(logs / "metrics.jsonl", [ODD_RECORDS[case], epoch(1)])
    view = monitor.RunFollower(logs).poll()
    assert view.status == "lost"  # pid 0 would have meant "our own process group": always alive


def test_deeply_nested_and_non_object_lines_are_skipped(tmp_path: Path):
    logs = tmp_path / "logs"
    logs.mkdir()
    with open(logs / "metrics.jsonl", "w") as handle:
        handle.write(json.dumps(run_record()) + "\n")
        handle.write("[" * 100_000 + "]" * 100_000 + "\n")  # deeper than the JSON parser recurses
        handle.write("42\n\"text\"\nnull\n[1, 2]\n{\"no type\": 1}\n")
        handle.write(json.dumps(epoch(1)) + "\n")
    view = monitor.RunFollower(logs).poll()
    assert view.status == "running" and [e["epoch"] for e in view.epochs] == [1]
    everything(view)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                    | st.text(max_size=8), lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=8)
FIELDS = ["type", "time", "step", "epoch", "loss", "train_loss", "val_loss", "val_accuracy", "lr", "epoch_seconds",
          "samples_per_second", "data_seconds", "pid", "host", "epochs", "steps_per_epoch", "start_step", "status",
          "message", "monitor_metric", "device", "run_name", "gpus", "cpu_percent", "ram_percent", "rss_mb",
          "index", "util_percent", "mem_used_mb", "mem_total_mb", "temperature_c"]
TYPES = st.sampled_from(["run", "status", "step", "epoch", "system", "model", None, 3])
RECORD = st.fixed_dictionaries({"type": TYPES}, optional={name: JSON for name in FIELDS[1:]}) | JSON
GPU_SAMPLE = st.fixed_dictionaries({"type": st.just("system"), "time": JSON | st.floats(0, 2e9)},
                                   optional={"gpus": st.lists(st.dictionaries(st.sampled_from(FIELDS[-6:]), JSON) | JSON,
                                                              max_size=3), "ram_percent": JSON, "cpu_percent": JSON})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(RECORD, max_size=12), samples=st.lists(GPU_SAMPLE | RECORD, max_size=6))
def test_random_json_never_raises(records, samples):
    view = monitor.RunView(Path("logs"))
    view.apply(records)
    view.system = [s for s in map(monitor.clean_record, samples) if s and "time" in s]
    everything(view)
    monitor.ascii_chart({"a": [e.get("train_loss") for e in view.epochs]})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(records=st.lists(RECORD, max_size=8))
def test_random_json_through_the_files_never_raises(records, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    with open(logs / "metrics.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")  # NaN and Infinity too: Python's json writes and reads them
    (logs / "system.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    follower = monitor.RunFollower(logs)
    everything(follower.poll())
    everything(follower.poll())


@pytest.mark.parametrize("value", ["1e300", "inf", "0", "-1", "nan", "3601", "soon"])
def test_refresh_out_of_range_is_refused(value: str, tmp_path: Path):
    result = script("monitor_training.py", "--log-dir", tmp_path, "--refresh", value)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --refresh: expected" in result.stderr


def test_refresh_through_the_api_is_checked_too(tmp_path: Path):
    with pytest.raises(monitor.PipelineError, match=r"--refresh must be a number of seconds in \(0, 3600\]"):
        monitor.follow(tmp_path, refresh=1e300)


def test_metrics_jsonl_that_is_a_folder(tmp_path: Path, capsys):
    (tmp_path / "metrics.jsonl").mkdir()
    assert monitor_training.main(["--log-dir", str(tmp_path), "--once"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'metrics.jsonl'}: is a folder, not a file; pass the run's logs folder " \
                  "(SAVE_DIR/logs)\n"


def test_unreadable_metrics_jsonl_as_a_user(tmp_path: Path):
    if not permissions_apply(tmp_path):
        pytest.skip("file permissions do not apply to this process")
    fileio.append_jsonl(tmp_path / "metrics.jsonl", [run_record()])
    (tmp_path / "metrics.jsonl").chmod(0)
    try:
        result = script("monitor_training.py", "--log-dir", tmp_path, "--once", unprivileged=True)
    finally:
        (tmp_path / "metrics.jsonl").chmod(0o644)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "metrics.jsonl: cannot be read (Permission denied)" in result.stderr


def finished_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_logs_deleted_mid_run_then_the_run_completes(tmp_path: Path):
    """The follower saw a running run, logs/ vanished, the process ended: metrics.json has the final word."""
    save = tmp_path / "run"
    logs = save / "logs"
    logs.mkdir(parents=True)
    pid = os.getpid()
    fileio.append_jsonl(logs / "metrics.jsonl", [run_record(pid), epoch(1)])
    follower = monitor.RunFollower(logs)
    assert follower.poll().status == "running"
    for path in logs.iterdir():
        path.unlink()
    logs.rmdir()
    view = follower.poll()
    assert view.status == "running" and "has disappeared" in view.message
    dead = finished_pid()
    follower.view.run["pid"] = dead  # the training process has now exited...
    fileio.atomic_write_json(save / "metrics.json", {"schema_version": 1, "run": {
        "status": "completed", "pid": dead, "message": "3 epochs"}, "epochs": [epoch(1), epoch(2), epoch(3)]})
    view = follower.poll()  # ...after writing metrics.json: completed, not lost
    assert view.status == "completed" and "from metrics.json" in view.message
    everything(view)


def test_logs_deleted_and_the_run_died_is_still_lost(tmp_path: Path):
    save = tmp_path / "run"
    logs = save / "logs"
    logs.mkdir(parents=True)
    fileio.append_jsonl(logs / "metrics.jsonl", [run_record(finished_pid())])
    follower = monitor.RunFollower(logs)
    follower.poll()
    (logs / "metrics.jsonl").unlink()
    fileio.atomic_write_json(save / "metrics.json", {"schema_version": 1, "run": {"status": "running"}})
    assert follower.poll().status == "lost"


def test_monitor_started_after_logs_were_deleted_reads_metrics_json(tmp_path: Path, capsys):
    save = tmp_path / "run"
    save.mkdir()
    fileio.atomic_write_json(save / "metrics.json", {"schema_version": 1, "config": {"epochs": 2}, "run": {
        "status": "early_stopped", "pid": 1, "name": "r"}, "epochs": [epoch(1), {"epoch": "bad"}]})
    assert monitor_training.main(["--log-dir", str(save / "logs"), "--once"]) == 0
    assert "status: EARLY_STOPPED" in capsys.readouterr().out


def test_a_reused_pid_does_not_make_a_dead_run_look_alive(tmp_path: Path):
    """The run's PID now belongs to a process that started after the run record was written."""
    impostor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        logs = tmp_path / "logs"
        logs.mkdir()
        fileio.append_jsonl(logs / "metrics.jsonl", [run_record(impostor.pid, when=time.time() - 60), epoch(1)])
        view = monitor.RunFollower(logs).poll()
        assert view.status == "lost" and str(impostor.pid) in view.message
        assert monitor.process_alive(impostor.pid)  # alive as a process, just not the run's
        assert not monitor.process_alive(impostor.pid, time.time() - 60)
        assert monitor.process_alive(os.getpid(), time.time())  # our own process started before now
    finally:
        impostor.kill()
        impostor.wait()
