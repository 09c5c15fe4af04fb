"""Scale-out: torchrun with DistributedDataParallel on gloo (CPU), exact resume, one writer, one MLflow run."""
from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipeline import checkpoint, data, distributed, fileio

from conftest import ROOT, make_classification_csv, script_env
from test_train import assert_same_training, strict_json

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
LAUNCH = [sys.executable, "-m", "pipeline.launch", "--standalone"]  # torchrun, ending as the project's CLIs end


@pytest.fixture(scope="module")
def ddp_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("ddp")
    out = base / "prepared"
    data.prepare_dataset(make_classification_csv(base / "ddp.csv", rows=12000, seed=11, n_numeric=10), out, seed=4)
    return out


def _args(data_dir: Path, save_dir: Path, epochs: int = 4, *extra: str) -> list[str]:
    return [str(ROOT / "solutions" / "train_pipeline.py"), "--data-dir", str(data_dir), "--epochs", str(epochs),
            "--batch-size", "32", "--learning-rate", "0.002", "--save-dir", str(save_dir), "--no-mlflow",
            "--system-interval", "0.5", "--log-every", "1", "--no-baselines", *extra]


def _torchrun(nproc: int, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, f"--nproc_per_node={nproc}", *args], capture_output=True, text=True,
                          env=script_env(), timeout=600, **kwargs)


def _steps(save_dir: Path) -> int:
    return sum(1 for r in fileio.read_jsonl(save_dir / "logs" / "metrics.jsonl") if r.get("type") == "step")


def _kill_job(pid: int) -> None:
    """SIGKILL torchrun and every worker at once (as losing the machine would). The workers run in sessions
    of their own, so killing torchrun's process group would leave them running."""
    parent = psutil.Process(pid)
    for process in [parent, *parent.children(recursive=True)]:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _steps_per_epoch(save_dir: Path) -> int:
    return next(r for r in fileio.read_jsonl(save_dir / "logs" / "metrics.jsonl") if r["type"] == "run")[
        "steps_per_epoch"]


def _last_step(save_dir: Path) -> int:
    try:
        return checkpoint.load_checkpoint(save_dir / "last.pt")["state"]["global_step"]
    except Exception:  # not written yet, or being replaced
        return 0


def _wait_for_new_steps(save_dir: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    before, deadline = _steps(save_dir), time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None and _steps(save_dir) <= before:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference_ddp(ddp_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_reference") / "run"
    done = _torchrun(2, _args(ddp_dir, out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_shards_are_equal_disjoint_and_cover_the_permutation():
    import torch

    permutation = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    shards = [distributed.shard(permutation, distributed.World(rank=r, size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded to equal lengths: DDP needs equal step counts
    assert set(torch.cat(shards).tolist()) == set(range(11))
    assert torch.equal(distributed.shard(permutation, distributed.World()), permutation)


def test_world_of_one_under_torchrun_equals_a_plain_run(ddp_dir: Path, tmp_path: Path):
    plain = subprocess.run([sys.executable, *_args(ddp_dir, tmp_path / "plain", 2)], capture_output=True, text=True,
                           env=script_env(), timeout=600)
    assert plain.returncode == 0, plain.stderr[-2000:]
    one = _torchrun(1, _args(ddp_dir, tmp_path / "one", 2))
    assert one.returncode == 0, one.stderr[-2000:]
    assert_same_training(tmp_path / "plain", tmp_path / "one")
    assert strict_json(tmp_path / "one" / "metrics.json")["run"]["world_size"] == 1


def test_two_processes_train_with_one_writer(ddp_dir: Path, reference_ddp: Path, tmp_path: Path):
    m = strict_json(reference_ddp / "metrics.json")
    assert m["run"]["status"] == "completed" and m["run"]["world_size"] == 2
    assert m["run"]["effective_batch_size"] == 64 and m["config"]["world_size"] == 2
    train_rows = m["data"]["rows"]["train"]
    steps_per_epoch = math.ceil(math.ceil(train_rows / 2) / 32)  # each rank: half the rows, in batches of 32
    assert [e["step"] for e in m["epochs"]] == [steps_per_epoch * k for k in range(1, 5)]
    assert m["test"]["accuracy"] > 0.85  # the metrics are the whole split's (rank 0 scores it all)
    assert sum(map(sum, m["test"]["confusion_matrix"])) == m["data"]["rows"]["test"]
    records = list(fileio.read_jsonl(reference_ddp / "logs" / "metrics.jsonl"))
    assert [r["type"] for r in records].count("run") == 1  # only rank 0 logs
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2, 3, 4]
    assert len(list((reference_ddp / "logs").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in reference_ddp.glob("*.pt")) == ["best.pt", "ckpt-epoch0003.pt",
                                                                   "ckpt-epoch0004.pt", "last.pt"]
    # and it learns as well as one process with the same per-process batch size
    single = subprocess.run([sys.executable, *_args(ddp_dir, tmp_path / "single")], capture_output=True, text=True,
                            env=script_env(), timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    assert m["test"]["accuracy"] >= strict_json(tmp_path / "single" / "metrics.json")["test"]["accuracy"] - 0.03


def test_sigkill_of_the_whole_job_then_rerun_is_exact(ddp_dir: Path, reference_ddp: Path, tmp_path: Path):
    out = tmp_path / "run"
    kills, positions = 0, set()
    for attempt in range(2):
        process = subprocess.Popen([*TORCHRUN, "--nproc_per_node=2", *_args(ddp_dir, out)], env=script_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120  # until this attempt has saved a checkpoint of its own
        start = positions and max(positions) or 0
        while time.monotonic() < deadline and process.poll() is None and (
                not (out / "last.pt").exists() or _last_step(out) <= start):
            time.sleep(0.05)
        _wait_for_new_steps(out, process)  # then into the next epoch
        if process.poll() is None:
            _kill_job(process.pid)
            kills += 1
        process.wait(timeout=60)
        positions.add(_last_step(out))
    assert kills == 2 and len(positions) == 2 and min(positions) > 0, positions
    assert max(positions) < 4 * _steps_per_epoch(out), positions  # killed before the end, not after
    done = _torchrun(2, _args(ddp_dir, out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training(reference_ddp, out)
    assert len(strict_json(out / "metrics.json")["run"]["resumed"]) >= 1


def test_sigterm_to_one_rank_stops_every_rank_at_one_step(ddp_dir: Path, reference_ddp: Path, tmp_path: Path):
    out = tmp_path / "run"
    process = subprocess.Popen([*TORCHRUN, "--nproc_per_node=2", *_args(ddp_dir, out)], env=script_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_new_steps(out, process)
    workers = [p for p in psutil.Process(process.pid).children(recursive=True) if "train_pipeline.py" in " ".join(
        p.cmdline())]
    rank1 = next(p for p in workers if p.environ().get("RANK") == "1")
    rank1.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    state = checkpoint.load_checkpoint(out / "last.pt")["state"]
    assert state["status"] == "interrupted", stderr[-2000:]
    m = strict_json(out / "metrics.json")
    assert m["run"]["status"] == "interrupted" and "SIGTERM" in m["run"]["message"]
    assert m["progress"]["global_step"] == state["global_step"]
    done = _torchrun(2, _args(ddp_dir, out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training(reference_ddp, out)


def test_another_world_size_is_refused(ddp_dir: Path, reference_ddp: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference_ddp, copy)
    done = subprocess.run([sys.executable, *_args(ddp_dir, copy, 6)], capture_output=True, text=True,
                          env=script_env(), timeout=300)
    assert done.returncode == 2
    assert "world_size: checkpoint 2, now 1" in done.stderr and done.stderr.count("error:") == 1
    three = _torchrun(2, _args(ddp_dir, copy, 6, "--learning-rate", "0.01"))
    assert three.returncode != 0 and three.stderr.count("error: ") == 1  # one rank says why, not both


def test_one_mlflow_run_per_training_run(ddp_dir: Path, mlflow_server: str, tmp_path: Path):
    from mlflow import MlflowClient

    args = [a for a in _args(ddp_dir, tmp_path / "s", 2) if a != "--no-mlflow"]
    done = _torchrun(2, args + ["--tracking-uri", mlflow_server, "--experiment-name", "ddp"])
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("ddp")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2"
    assert sorted(p.step for p in client.get_metric_history(runs[0].info.run_id, "val_loss")) == \
        [e["step"] for e in strict_json(tmp_path / "s" / "metrics.json")["epochs"]]


def test_a_rank_that_dies_ends_the_job_and_a_rerun_continues(ddp_dir: Path, reference_ddp: Path, tmp_path: Path):
    out = tmp_path / "run"
    process = subprocess.Popen([*TORCHRUN, "--nproc_per_node=2", *_args(ddp_dir, out)], env=script_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and _last_step(out) == 0:
        time.sleep(0.05)
    workers = [p for p in psutil.Process(process.pid).children(recursive=True)
               if "train_pipeline.py" in " ".join(p.cmdline())]
    next(p for p in workers if p.environ().get("RANK") == "1").kill()
    started = time.monotonic()
    assert process.wait(timeout=120) != 0  # torchrun ends the other rank: no hang
    assert time.monotonic() - started < 120
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in workers)
    done = _torchrun(2, _args(ddp_dir, out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training(reference_ddp, out)


def test_the_launcher_ends_with_the_workers_one_line_and_exit_code(ddp_dir: Path, reference_ddp: Path,
                                                                    tmp_path: Path):
    """torchrun prints ChildFailedError's traceback after a worker's one-line refusal and exits 1;
    `python -m pipeline.launch` leaves the worker's line alone and exits with its code."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference_ddp, copy)
    refused = subprocess.run([*LAUNCH, "--nproc_per_node=2", *_args(ddp_dir, copy, 6, "--learning-rate", "0.01")],
                             capture_output=True, text=True, env=script_env(), timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.count("error: ") == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]


def test_sigterm_to_the_launcher_saves_every_rank_and_exits_143(ddp_dir: Path, reference_ddp: Path, tmp_path: Path):
    out = tmp_path / "run"
    process = subprocess.Popen([*LAUNCH, "--nproc_per_node=2", *_args(ddp_dir, out)], env=script_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_new_steps(out, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143 and "Traceback" not in stderr, stderr[-2000:]
    assert checkpoint.load_checkpoint(out / "last.pt")["state"]["status"] == "interrupted"
    done = subprocess.run([*LAUNCH, "--nproc_per_node=2", *_args(ddp_dir, out)], capture_output=True, text=True,
                          env=script_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training(reference_ddp, out)


def test_a_rank_killed_under_the_launcher_is_named_in_one_line(ddp_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    process = subprocess.Popen([*LAUNCH, "--nproc_per_node=2", *_args(ddp_dir, out)], env=script_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_new_steps(out, process)
    workers = [p for p in psutil.Process(process.pid).children(recursive=True)
               if "train_pipeline.py" in " ".join(p.cmdline())]
    next(p for p in workers if p.environ().get("RANK") == "1").kill()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 137, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "rank 1" in lines[0] and "SIGKILL" in lines[0], stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]


def test_the_monitor_and_the_report_show_the_processes(reference_ddp: Path, tmp_path: Path):
    from pipeline import monitor, report

    view = monitor.RunFollower(reference_ddp / "logs").poll()
    assert "processes: 2 (torchrun)" in monitor.snapshot_lines(view, [])[0]
    page = report.section_summary(report.load_run(reference_ddp / "metrics.json"))
    assert "<td>processes</td><td>2 (effective batch 64)</td>" in page


def test_a_signal_that_lands_during_an_agreement_is_kept_for_the_next_one():
    """Under torchrun a rank spends most of its time inside all-reduces; a SIGTERM handled just after one
    returned used to be overwritten by the agreed "no signal" and lost (the run then completed)."""
    from pipeline import runtime

    interrupt = runtime.Interrupt(shared=True)
    agreed_on = []

    def agree(received):  # what train_one_epoch does: agree on what this rank received
        agreed_on.append(received)
        return None if len(agreed_on) == 1 else received

    interrupt._handle(signal.SIGTERM, None)  # lands while the first all-reduce is under way ...
    assert interrupt.signum is None  # ... and does not act alone: the ranks must agree first
    interrupt.signum = agree(None)  # the value read before the signal landed
    interrupt.signum = agree(interrupt.received)
    assert agreed_on == [None, signal.SIGTERM] and interrupt.signum == signal.SIGTERM
