"""The course around the package: paths for notebooks, the papermill demo and sweeps, and the exercises.

    python -m pipeline.course demo --params params/demo.yaml --run-dir runs/demo     # `make demo`
    python -m pipeline.course sweep --learning-rates 0.0003,0.001,0.003              # `make sweep`
    python -m pipeline.course exercises [--check]                                   # `make exercises`
    python -m pipeline.course check 01                                               # `make check EX=01`

Notebooks never trust the working directory (papermill uses the shell's, JupyterLab the notebook's folder):
their path parameters default to "" and `resolve()` anchors them at the repository root. Every execution of a
lesson trains into a folder of its own (`new_run_dir`), named after its settings, so a lesson runs again in the
same place, with the same or other parameters, without touching an earlier run.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from pipeline import fileio
from pipeline.errors import ConfigError, PipelineError
from pipeline.rundir import METRICS, METRICS_LOG, RunDir

NOTEBOOKS = ("01_data_preparation", "02_training_pipeline", "03_monitoring", "04_reporting", "05_performance")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


# ------------------------------------------------------------------------------------------------ paths
def repo_root() -> Path:
    """The checkout this package was installed from (editable install), found without the cwd."""
    here = Path(__file__).resolve().parents[1]
    if (here / "pyproject.toml").is_file() and (here / "notebooks").is_dir():
        return here
    raise ConfigError(f"cannot find the course checkout above {here}; install it with `pip install -e .` "
                      "from the repository root, or pass absolute paths as parameters")


def resolve(path: str | os.PathLike | None, default: str) -> Path:
    """A notebook parameter as an absolute path: relative paths and the empty default are rooted at the repo."""
    value = Path(path) if path else Path(default)
    return value if value.is_absolute() else repo_root() / value


def tracking_uri(value: str | None = None) -> str:
    """MLflow store for notebooks: the given URI, $MLFLOW_TRACKING_URI, else mlflow.db at the repo root
    (the store `make mlflow-ui` opens)."""
    return value or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def run_label(**settings: Any) -> str:
    """A folder name from the settings that define a run: `run_label(lr=0.001, bs=32, h="256,128")` ->
    'lr0.001-bs32-h256x128' (short keys are the caller's choice; commas and slashes become 'x' and '_')."""
    def text(value: Any) -> str:
        value = f"{value:g}" if isinstance(value, float) else str(value)
        return re.sub(r"[^A-Za-z0-9.+-]", "_", value.replace(",", "x").replace(" ", ""))

    return "-".join(f"{key}{text(value)}" for key, value in settings.items()) or "run"


def new_run_dir(base: Path | str, label: str = "run") -> Path:
    """Create and return `base/label-NNN`, numbered one past every earlier execution's folder.

    Each execution of a lesson gets a fresh folder: an earlier run is never resumed by surprise, refused for
    other settings, or deleted, and its logs never mix with the new run's (mkdir is atomic, so two kernels
    started at once still get different folders)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(label) + r"-(\d+)$")
    taken = [int(m.group(1)) for p in base.iterdir() if (m := pattern.match(p.name))]
    number = max(taken, default=0) + 1
    while True:
        folder = base / f"{label}-{number:03d}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1


def latest_run(base: Path | str) -> Path:
    """The run folder under `base` (or `base` itself) whose metrics.json was written last."""
    base = Path(base)
    found = [p.parent for p in [RunDir(base).metrics, *base.glob(f"*/{METRICS}")] if p.is_file()]
    if not found:
        raise ConfigError(f"{base}: no training run here (no metrics.json in it or its subfolders); run "
                          "notebook 02 first, or pass the path of a metrics.json")
    return max(found, key=lambda folder: RunDir(folder).metrics.stat().st_mtime_ns)


def launch_training(data_dir: Path, save_dir: Path, **flags: Any) -> subprocess.Popen:
    """Start solutions/train_pipeline.py in the background (as a learner would in another terminal)."""
    command = [sys.executable, str(repo_root() / "solutions" / "train_pipeline.py"), "--data-dir", str(data_dir),
               "--save-dir", str(save_dir)]
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is False and name in ("mlflow", "tensorboard"):
            command.append(f"--no-{name}")
        elif value is not False and value is not None:
            command += [flag, str(value)]
    if not Path(save_dir).parent.exists():
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    log_path = Path(save_dir).parent / f"{Path(save_dir).name}.out"  # not with_suffix: "lr0.001-..." has a dot
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def wait_for_epochs(log_dir: Path, epochs: int, process: subprocess.Popen | None = None, timeout: float = 300) -> int:
    """Block until the run in `log_dir` logged `epochs` epochs (or its process ended); returns epochs seen."""
    from pipeline import fileio

    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = sum(1 for r in fileio.read_jsonl(Path(log_dir) / METRICS_LOG) if r.get("type") == "epoch")
        if seen >= epochs or (process is not None and process.poll() is not None):
            break
        time.sleep(0.1)
    return seen


# --------------------------------------------------------------------------------------------- papermill
def load_params(path: Path) -> dict[str, Any]:
    values = fileio.read_yaml_mapping(path, what="parameters file", example="common: {epochs: 4}")
    unknown = set(values) - {"common", *NOTEBOOKS}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; use 'common' or a notebook name "
                          f"({', '.join(NOTEBOOKS)})")
    return values


@contextlib.contextmanager
def kernel_environment() -> Iterator[None]:
    """While a kernel starts (it copies os.environ), drop an MPLBACKEND other than the inline one.

    MPLBACKEND=Agg, exported by a shell or a Makefile, reaches every kernel started from it, and there it makes
    `plt.show()` draw nothing: the executed notebook would hold no figure."""
    backend = os.environ.get("MPLBACKEND")
    if backend is None or "inline" in backend:
        yield
        return
    del os.environ["MPLBACKEND"]
    try:
        yield
    finally:
        os.environ["MPLBACKEND"] = backend


def execute(notebook: str, output: Path, parameters: dict[str, Any], *, log: Any = print) -> float:
    """Run one course notebook with papermill; returns the seconds it took."""
    import papermill

    from pipeline import nbexec

    started = time.monotonic()
    names = _parameter_names(notebook)
    parameters = dict(parameters)
    check_parameters(notebook, parameters, names)
    if "progress" in names:
        parameters.setdefault("progress", "off")  # tqdm's notebook widget freezes at 0% under papermill
    for key in ("show_tensorboard",):
        if key in names:
            parameters.setdefault(key, False)  # would leave a server running after the notebook ends
    log(f"  running notebooks/{notebook}.ipynb -> {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with kernel_environment():
            nbexec.execute_notebook(repo_root() / "notebooks" / f"{notebook}.ipynb", output, parameters,
                                    cwd=output.parent)
    except papermill.PapermillExecutionError as exc:
        raise PipelineError(f"notebooks/{notebook}.ipynb failed in cell {exc.exec_count} ({exc.ename}: "
                            f"{exc.evalue}); the executed notebook with the error is {output}") from None
    return time.monotonic() - started


def demo(params_path: Path, run_dir: Path, *, log: Any = print) -> dict[str, Path]:
    """The whole course, 01 -> 05, on the bundled data; returns where every artefact is."""
    params = load_params(params_path)
    run_dir = resolve(str(run_dir), "runs/demo")
    common = dict(params.get("common") or {})
    runs = run_dir / "checkpoints"  # notebook 02 trains into a new subfolder of it each time it runs
    paths = {"processed data": run_dir / "processed_data", "training run (checkpoints, logs)": runs,
             "metrics": RunDir(runs).metrics,
             "report": resolve(common.pop("report", ""), "reports/training_report.html"),
             "executed notebooks": run_dir / "notebooks"}
    data_dir = str(paths["processed data"])
    per_notebook = {
        "01_data_preparation": {"output_dir": data_dir},
        "02_training_pipeline": {"data_dir": data_dir, "save_dir": str(runs), "work_dir": str(run_dir)},
        "03_monitoring": {"data_dir": data_dir, "work_dir": str(run_dir / "monitoring")},
        "04_reporting": {"output_html": str(paths["report"])},  # metrics_path: once 02 has trained
        "05_performance": {"work_dir": str(run_dir / "performance")},
    }
    total = 0.0
    log(f"course demo: {params_path} -> {run_dir}")
    for notebook in NOTEBOOKS:
        parameters = {**{k: v for k, v in common.items() if k in _parameter_names(notebook)},
                      **per_notebook[notebook], **(params.get(notebook) or {})}
        total += execute(notebook, paths["executed notebooks"] / f"{notebook}.ipynb", parameters, log=log)
        if notebook == "02_training_pipeline":  # the new subfolder it trained into is the run to report
            paths["training run (checkpoints, logs)"] = latest_run(runs)
            paths["metrics"] = RunDir(paths["training run (checkpoints, logs)"]).metrics
            per_notebook["04_reporting"]["metrics_path"] = str(paths["metrics"])
    log(f"done in {total:.0f}s. Artefacts:")
    for name, path in paths.items():
        log(f"  {name:34s} {path}")
    root = repo_root()
    log("Next:")
    log(f"  open the report       xdg-open {paths['report']}   (or any browser; it needs no network)")
    log("  JupyterLab            make lab          -> http://127.0.0.1:8888/lab/tree/notebooks (token printed by Jupyter)")
    log(f"  MLflow UI             make mlflow-ui    -> http://127.0.0.1:5000   (store: {root / 'mlflow.db'})")
    log(f"  TensorBoard           make tensorboard  -> http://127.0.0.1:6006   (logs under {root / 'runs'})")
    log(f"  live monitor          python solutions/monitor_training.py --log-dir {paths['training run (checkpoints, logs)'] / 'logs'} --once")
    return paths


def check_parameters(notebook: str, parameters: dict[str, Any], declared: set[str]) -> None:
    """Papermill writes each parameter into the notebook as Python source (`name = value`): a params file is
    data, so every name must be one the notebook's parameters cell declares and every value inert (None, a
    boolean, number or text, or lists and mappings of those)."""
    for name, value in parameters.items():
        if not isinstance(name, str) or name not in declared:
            close = difflib.get_close_matches(str(name), sorted(declared), n=1)
            raise ConfigError(f"notebooks/{notebook}.ipynb has no parameter {str(name)[:60]!r}"
                              + (f" (did you mean {close[0]}?)" if close else "")
                              + f"; its parameters are: {', '.join(sorted(declared))}")
        if not _inert(value):
            raise ConfigError(f"notebooks/{notebook}.ipynb parameter {name}: {type(value).__name__} values are not "
                              "accepted; use a number, text, true/false, or a list or mapping of those")


def _inert(value: Any, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return not isinstance(value, float) or math.isfinite(value)
    if isinstance(value, list):
        return all(_inert(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _inert(v, depth + 1) for k, v in value.items())
    return False


def _parameter_names(notebook: str) -> set[str]:
    import nbformat

    nb = nbformat.read(str(repo_root() / "notebooks" / f"{notebook}.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return set(re.findall(r"^(\w+)\s*=", cell.source, flags=re.M))


def sweep(params_path: Path, learning_rates: list[float], run_dir: Path, *, log: Any = print) -> Path:
    """Notebook 02 once per learning rate (papermill parameters), then one comparison report."""
    from pipeline import report

    params = load_params(params_path)
    run_dir = resolve(str(run_dir), "runs/sweep")
    common = dict(params.get("common") or {})
    common.pop("report", None)
    data_dir = run_dir / "processed_data"
    execute("01_data_preparation", run_dir / "notebooks" / "01_data_preparation.ipynb",
            {**(params.get("01_data_preparation") or {}), "output_dir": str(data_dir), "show_plots": False}, log=log)
    metrics = []
    for lr in learning_rates:
        name = f"lr_{lr:g}"
        save_dir = run_dir / name
        execute("02_training_pipeline", run_dir / "notebooks" / f"02_training_pipeline_{name}.ipynb",
                {**(params.get("02_training_pipeline") or {}), "data_dir": str(data_dir), "save_dir": str(save_dir),
                 "learning_rate": lr, "run_name": f"sweep-{name}", "demo_kill_resume": False}, log=log)
        metrics.append(RunDir(latest_run(save_dir)).metrics)
    output = run_dir / "sweep_report.html"
    report.generate(metrics[0], output, compare=metrics[1:], title="Learning-rate sweep")
    log(f"sweep done: {len(metrics)} runs; comparison report {output}")
    return output


# --------------------------------------------------------------------------------------------- exercises
def stub_source(source: str, exercise: str) -> str:
    """Replace each BEGIN/END SOLUTION block with a friendly stub that raises, keeping its indentation."""
    lines, out, inside = source.splitlines(), [], False
    for line in lines:
        stripped = line.strip()
        if stripped == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# YOUR CODE HERE (then run the check cell below)")
            out.append(f'{indent}raise NotImplementedError("{exercise}: not solved yet - replace this line with '
                       'your code")')
            inside = True
        elif stripped == END:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ConfigError(f"{exercise}: '{BEGIN}' without '{END}'")
    return "\n".join(out)


def make_exercise(solution: Any) -> Any:
    """The learner's notebook from a solved one: solutions stubbed, every output and execution count cleared."""
    notebook = copy.deepcopy(solution)
    number = 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if "exercise" in cell.metadata.get("tags", []):
            number += 1
            if BEGIN not in cell.source:
                raise ConfigError(f"exercise cell {number} has no '{BEGIN}' block")
            cell.source = stub_source(cell.source, f"Exercise {number}")
    return notebook


def generate_exercises(check_only: bool = False, *, log: Any = print) -> list[Path]:
    """Write exercises/NN_*.ipynb from solutions/NN_*.ipynb; with check_only, return the ones that differ."""
    import nbformat

    root = repo_root()
    stale = []
    for solution_path in sorted((root / "solutions").glob("[0-9][0-9]_*.ipynb")):
        exercise = make_exercise(nbformat.read(str(solution_path), as_version=4))
        text = nbformat.writes(exercise) + "\n"
        target = root / "exercises" / solution_path.name
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        stale.append(target)
        if not check_only:
            target.parent.mkdir(exist_ok=True)
            target.write_text(text, encoding="utf-8")
            log(f"wrote {target.relative_to(root)}")
    return stale


def run_nbval(notebook: Path, *, timeout: int = 600) -> list[dict[str, Any]]:
    """Run nbval (lax) on a notebook; per code cell: index, tags, passed, error line."""
    import nbformat
    import xml.etree.ElementTree as ET

    nb = nbformat.read(str(notebook), as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", str(notebook), "-p", "no:cacheprovider", "-q",
                        f"--junitxml={junit}", "--timeout", str(timeout), "--rootdir", str(notebook.parent)],
                       capture_output=True, text=True, timeout=timeout + 60, cwd=notebook.parent,
                       env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"})  # see kernel_environment
        cases = list(ET.parse(junit).iter("testcase")) if junit.exists() else []
    results = []
    for case in cases:
        match = re.search(r"Cell (\d+)", case.get("name", ""))
        if not match:
            continue
        index = int(match.group(1))
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        text = re.sub(r"\x1b\[[0-9;]*m|#x1B\[[0-9;]*m", "", failure.text or "") if failure is not None else ""
        error = next((line.strip() for line in reversed(text.splitlines()) if re.match(r"\s*\w+(Error|Exception)", line)), "")
        results.append({"index": index, "tags": list(code_cells[index].metadata.get("tags", [])),
                        "passed": failure is None, "error": error})
    return results


def check(number: str, *, log: Any = print) -> int:
    """`make check EX=NN`: run the learner's exercise notebook and report each check."""
    root = repo_root()
    found = sorted((root / "exercises").glob(f"{int(number):02d}_*.ipynb"))
    if not found:
        raise ConfigError(f"no exercises/{int(number):02d}_*.ipynb; choose one of "
                          f"{', '.join(p.name[:2] for p in sorted((root / 'exercises').glob('*.ipynb')))}")
    notebook = found[0]
    log(f"checking {notebook.relative_to(root)} with nbval ...")
    results = run_nbval(notebook)
    if not results:
        raise PipelineError(f"{notebook}: nbval ran no cell; is the kernel installed? try `make setup`")
    checks = [r for r in results if "check" in r["tags"]]
    for i, r in enumerate(checks, 1):
        log(f"  check {i}: {'PASSED' if r['passed'] else 'FAILED  ' + r['error']}")
    other = [r for r in results if "check" not in r["tags"] and not r["passed"]]
    for r in other:
        log(f"  cell {r['index']} (not a check) failed: {r['error']}")
    solved = sum(r["passed"] for r in checks)
    log(f"{solved}/{len(checks)} checks pass" + (" - well done!" if solved == len(checks) and not other else ""))
    return 0 if solved == len(checks) and not other else 1


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    from pipeline import cli

    parser = argparse.ArgumentParser(prog="python -m pipeline.course", description="course entry points")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run notebooks 01-05 with papermill")
    p_demo.add_argument("--params", type=Path, default=Path("params/demo.yaml"))
    p_demo.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    p_sweep = sub.add_parser("sweep", help="notebook 02 for several learning rates + a comparison report")
    p_sweep.add_argument("--params", type=Path, default=Path("params/demo.yaml"))
    p_sweep.add_argument("--learning-rates", default="0.0003,0.001,0.003")
    p_sweep.add_argument("--run-dir", type=Path, default=Path("runs/sweep"))
    p_ex = sub.add_parser("exercises", help="regenerate exercises/ from solutions/")
    p_ex.add_argument("--check", action="store_true", help="only report exercises that differ (exit 1)")
    p_check = sub.add_parser("check", help="check a learner's exercise notebook with nbval")
    p_check.add_argument("number")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.command == "demo":
            demo(args.params, args.run_dir)
            return 0
        if args.command == "sweep":
            try:
                rates = [float(v) for v in args.learning_rates.split(",") if v]
            except ValueError:
                raise ConfigError(f"--learning-rates must be comma-separated numbers, not {args.learning_rates!r}") from None
            sweep(args.params, rates, args.run_dir)
            return 0
        if args.command == "exercises":
            stale = generate_exercises(check_only=args.check)
            if args.check and stale:
                print("out of date (run `make exercises`): " + ", ".join(str(p) for p in stale), file=sys.stderr)
                return 1
            return 0
        return check(args.number)

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
