"""Benchmark: how often papermill stalls on lesson 03's dashboard cell, plain and with `pipeline.nbexec`.

    python benchmarks/bench_notebook_stalls.py [--rounds 10] [--plain-timeout 30]

A three-cell notebook reproduces what lesson 03 does: start a training run in the background, wait until it
has finished, then draw `monitor.notebook_dashboard` (ipywidgets) on it. Each round runs it twice, plainly
with `papermill.execute_notebook` and with `nbexec.execute_notebook` (the sliced, nudging kernel client), in
alternating order. A cell's wait is how long the client took for it beyond the kernel's own busy -> reply span (a request the
kernel did not read, or a reply the client did not read). A run counts as stalled when a wait reached one
second. The plain client has `--plain-timeout` as its execution timeout: a poll that times out reads the socket
once more, so a lost reply ends then (a wait of about that long) instead of never, and a lost request fails the
run (counted as failed, as is a run that did not finish).
It takes about 25 s a round on 2 cores.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CELLS = [
    """import time
from pathlib import Path
from pipeline import course, monitor
save_dir = course.new_run_dir(Path(WORK), "stall")
process = course.launch_training(Path(DATA), save_dir, epochs=3, batch_size=64, mlflow=False, tensorboard=False,
                                 no_baselines=True, system_interval=0.5, log_every=2)""",
    """while '"completed"' not in ((save_dir / "metrics.json").read_text() if (save_dir / "metrics.json").exists()
                               else ""):
    time.sleep(0.5)""",
    """view = monitor.notebook_dashboard(save_dir / "logs", refresh=1.0)
print(view.status, process.wait())""",
]

# One run in a child process (a fresh client each time): prints the longest a cell waited beyond its time in the
# kernel (client-side duration minus the kernel's busy -> reply span): a lost request or a lost reply.
CHILD = r"""
import datetime as dt, json, sys
from pathlib import Path
variant, notebook, output, timeout = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
if variant == "plain":
    import papermill
    papermill.execute_notebook(str(notebook), str(output), kernel_name="python3", progress_bar=False,
                               execution_timeout=timeout, cwd=str(notebook.parent))
else:
    from pipeline import nbexec
    nbexec.execute_notebook(notebook, output, {}, cwd=notebook.parent)
def when(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
worst = 0.0
for cell in json.loads(output.read_text())["cells"]:
    kernel, client = cell["metadata"]["execution"], cell["metadata"]["papermill"]
    in_kernel = (when(kernel["shell.execute_reply"]) - when(kernel["iopub.status.busy"])).total_seconds()
    worst = max(worst, client["duration"] - in_kernel)
print(json.dumps({"worst_wait_s": worst}))
"""


def make_notebook(folder: Path, data_dir: Path) -> Path:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    head = f"WORK, DATA = {str(folder / 'runs')!r}, {str(data_dir)!r}\n"
    notebook.cells = [nbformat.v4.new_code_cell(head + CELLS[0])] + [nbformat.v4.new_code_cell(c) for c in CELLS[1:]]
    (folder / "runs").mkdir()
    path = folder / "stall.ipynb"
    nbformat.write(notebook, str(path))
    return path


def run_once(variant: str, notebook: Path, plain_timeout: int) -> float | None:
    """The longest wait of one run's cells beyond their time in the kernel, or None when it did not finish."""
    output = notebook.with_name(f"out-{variant}.ipynb")
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, variant, str(notebook), str(output), str(plain_timeout)],
                              capture_output=True, text=True, timeout=plain_timeout * 3 + 60)
    except subprocess.TimeoutExpired:
        return None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])["worst_wait_s"] if done.returncode == 0 and lines else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--plain-timeout", type=int, default=30, help="the plain client's execution timeout (seconds)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipeline import data

    results: dict[str, list[float | None]] = {"plain": [], "nbexec": []}
    with tempfile.TemporaryDirectory(prefix="bench-stalls-") as tmp:
        folder = Path(tmp)
        data.prepare_dataset(ROOT / "data" / "train.csv", folder / "data", test_split=0.2, val_split=0.1, seed=42)
        notebook = make_notebook(folder, folder / "data")
        for round_ in range(args.rounds):
            order = ("plain", "nbexec") if round_ % 2 == 0 else ("nbexec", "plain")
            for variant in order:
                started = time.monotonic()
                worst = run_once(variant, notebook, args.plain_timeout)
                results[variant].append(worst)
                shown = "did not finish" if worst is None else f"longest wait beyond the kernel's time {worst:.2f} s"
                print(f"round {round_ + 1:2d} {variant:6s} {time.monotonic() - started:5.1f} s  {shown}", flush=True)
    print(f"\n{'client':8s} {'runs':>4s} {'stalled (a wait >= 1 s)':>24s} {'failed':>6s} {'longest wait':>12s}")
    for variant, waits in results.items():
        finished = [w for w in waits if w is not None]
        print(f"{variant:8s} {len(waits):4d} {sum(w >= 1.0 for w in finished):24d} {len(waits) - len(finished):6d} "
              f"{max(finished, default=float('nan')):11.2f}s")

if __name__ == "__main__":
    main()
