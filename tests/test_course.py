"""The course: nbval in both directions, the exercise generator, notebook hygiene, the papermill chain, a
sweep, the Makefile's environment, and `make lab` serving lessons, exercises and solutions."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from pipeline import course

from conftest import ROOT, free_port

SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
EXERCISES = sorted((ROOT / "exercises").glob("[0-9][0-9]_*.ipynb"))
ALL_NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + SOLUTIONS + EXERCISES


def test_every_phase_has_notebook_solution_and_exercise():
    phases = {p.name[:2] for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert phases == {"01", "02", "03", "04", "05"}
    assert {p.name for p in SOLUTIONS} == {p.name for p in EXERCISES}
    assert {p.name[:2] for p in SOLUTIONS} == {"01", "02", "03", "04", "05"}


@pytest.mark.parametrize("notebook", SOLUTIONS, ids=lambda p: p.name)
def test_solutions_pass_nbval(notebook: Path):
    results = course.run_nbval(notebook)
    assert results and all(r["passed"] for r in results), [r for r in results if not r["passed"]]
    assert sum("check" in r["tags"] for r in results) >= 2


@pytest.mark.parametrize("notebook", EXERCISES, ids=lambda p: p.name)
def test_exercises_fail_every_check_for_the_stub_reason(notebook: Path):
    results = course.run_nbval(notebook)
    checks = [r for r in results if "check" in r["tags"]]
    others = [r for r in results if "check" not in r["tags"]]
    assert len(checks) >= 2
    for r in checks:
        assert not r["passed"], f"check cell {r['index']} passes unsolved: it cannot catch a wrong answer"
        assert r["error"].startswith("NotImplementedError: Exercise "), r
    assert all(r["passed"] for r in others), [r for r in others if not r["passed"]]


def test_exercises_are_generated_from_solutions():
    assert course.generate_exercises(check_only=True) == [], "run `make exercises` and commit the result"


def test_stub_keeps_indentation_and_removes_the_answer():
    source = "def f(x):\n    '''doc'''\n    ### BEGIN SOLUTION\n    return x * 42\n    ### END SOLUTION\n"
    stubbed = course.stub_source(source, "Exercise 7")
    assert "42" not in stubbed and "'''doc'''" in stubbed
    assert '    raise NotImplementedError("Exercise 7: not solved yet' in stubbed
    namespace: dict = {}
    exec(stubbed, namespace)
    with pytest.raises(NotImplementedError, match="Exercise 7"):
        namespace["f"](1)
    with pytest.raises(Exception, match="without"):
        course.stub_source("### BEGIN SOLUTION\nx = 1\n", "Exercise 1")


@pytest.mark.parametrize("notebook", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_hygiene(notebook: Path):
    nb = nbformat.read(str(notebook), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "committed with outputs"
    assert "widgets" not in nb.metadata
    if notebook.parent.name == "notebooks":
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, "exactly one cell tagged `parameters`"
        assert "os.getcwd" not in nb_source(nb) and "Path.cwd" not in nb_source(nb)
    verify = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", str(notebook)], capture_output=True,
                            text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def nb_source(nb) -> str:
    return "\n".join(c.source for c in nb.cells)


def test_make_check_reports_each_check(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "pipeline.course", "check", "04"], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 1
    assert "check 1: FAILED  NotImplementedError: Exercise 1" in result.stdout
    assert "0/5 checks pass" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "pipeline.course", "check", "09"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no exercises/09_*.ipynb" in bad.stderr


def test_papermill_chain_01_to_04(demo_run: dict[str, Path]):
    """What `make demo` runs, from another working directory, on smoke parameters."""
    for name in course.NOTEBOOKS:
        executed = nbformat.read(str(demo_run["executed notebooks"] / f"{name}.ipynb"), as_version=4)
        errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, (name, errors[:1])
        assert executed.metadata["papermill"]["parameters"]
    metrics = json.loads(demo_run["metrics"].read_text())
    assert metrics["run"]["status"] == "completed" and len(metrics["epochs"]) == 4
    assert (demo_run["processed data"] / "schema.json").is_file()
    html = demo_run["report"].read_text()
    assert "Learning curves" in html and "<script" not in html
    nb02 = nbformat.read(str(demo_run["executed notebooks"] / "02_training_pipeline.ipynb"), as_version=4)
    text = "".join(o.get("text", "") for c in nb02.cells for o in c.get("outputs", []))
    assert "run-001: killed after" in text and "status: completed | epochs: 8 | resumed: [{" in text
    assert "epoch 4/4" in text and "it/s" not in text  # one line per epoch, no progress bar under papermill
    nb03 = nbformat.read(str(demo_run["executed notebooks"] / "03_monitoring.ipynb"), as_version=4)
    assert "[warning] overfitting" in "".join(o.get("text", "") for c in nb03.cells for o in c.get("outputs", []))


def test_sweep_runs_notebook_02_per_learning_rate(tmp_path: Path):
    params = tmp_path / "p.yaml"
    params.write_text("02_training_pipeline:\n  epochs: 2\n")
    output = course.sweep(params, [0.001, 0.01], tmp_path / "sweep", log=lambda m: None)
    html = output.read_text()
    assert "sweep-lr_0.001" in html and "sweep-lr_0.01" in html and ">Comparison<" in html
    assert "<th>learning_rate</th>" in html


def test_makefile_exports_no_mplbackend():
    """Kernels started under make (demo, lab, check) inherit make's environment: Agg there draws no figure."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    shown = subprocess.run(["make", "--no-print-directory", "-s", "--eval", "show-mplbackend: ; @echo \"[$$MPLBACKEND]\"",
                            "show-mplbackend"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "[]", f"the Makefile exports MPLBACKEND: {shown.stdout.strip()}"


def test_make_lab_serves_lessons_exercises_and_solutions(tmp_path: Path):
    """`make lab` itself (set-up skipped): the repository root is served, and it opens on the lessons."""
    port, token = free_port(), "course-smoke-token"
    venv = Path(sys.executable).parent.parent
    command = ["make", "--no-print-directory", "-o", "setup", "-o", f"{venv}/.installed", "lab", f"VENV={venv}",
               f"LAB_ARGS=--port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token}"]
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    log = open(tmp_path / "lab.log", "w")
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def get(path: str):
        return json.load(urllib.request.urlopen(f"{base}{path}?token={token}", timeout=10))

    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=5) as response:
                    status = response.status
                    page = response.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200, (tmp_path / "lab.log").read_text()[-2000:]
        assert "JupyterLab" in page
        assert {"notebooks", "exercises", "solutions"} <= {item["name"] for item in get("/api/contents")["content"]}
        for folder in ("notebooks", "exercises", "solutions"):
            names = {item["name"] for item in get(f"/api/contents/{folder}")["content"]}
            assert "02_training_pipeline.ipynb" in names, (folder, names)
        opened = get("/api/contents/exercises/02_training_pipeline.ipynb")  # a learner's notebook opens
        assert opened["type"] == "notebook" and opened["content"]["cells"]
        opened = get("/api/contents/solutions/02_training_pipeline.ipynb")
        assert opened["type"] == "notebook" and opened["content"]["cells"]

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        with pytest.raises(urllib.error.HTTPError) as redirect:  # the landing page: the lessons' folder
            urllib.request.build_opener(NoRedirect).open(f"{base}/?token={token}", timeout=10)
        assert redirect.value.code in (301, 302) and redirect.value.headers["Location"].startswith("/lab/tree/notebooks")
        assert "python3" in get("/api/kernelspecs")["kernelspecs"]
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
        log.close()


def test_performance_notebook_runs_under_papermill(tmp_path: Path):
    out = tmp_path / "05.ipynb"
    course.execute("05_performance", out, {"rows": 20_000, "repeats": 1, "work_dir": str(tmp_path / "work"),
                                           "try_compile": False}, log=lambda m: None)
    text = "".join(o.get("text", "") for c in nbformat.read(str(out), as_version=4).cells for o in c.get("outputs", []))
    assert "to_numpy() C-contiguous? False" in text and "indexed tensors" in text and "every 50 steps" in text
    assert "transposing 20,000 rows" in text
    # section 5: two processes under torchrun, followed by the monitor, compared with one on the same flags
    assert "world_size 2, effective batch 64, status completed" in text
    assert re.search(r"epoch: one process [0-9.]+s, 2 processes [0-9.]+s -> ", text)
    sync = next(line for line in text.splitlines() if line.startswith("-> ") and ("sync" in line or ".item()" in line))
    if "cpu, " in text:  # on a CPU a .item() waits for nothing: no speed-up may be claimed, and the lesson says why
        assert "not a speed-up" in sync and "faster" not in sync, sync
