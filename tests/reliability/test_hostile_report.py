"""The report renders whatever a metrics.json holds (wrong types are left out and listed, never a traceback), says
plainly when a file cannot be read or written, and scales: a 500-class run renders in seconds."""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from faults import ROOT, fill, permissions_apply, script, tmpfs

from pipeline import fileio, report

sys.path.insert(0, str(ROOT / "solutions"))
import generate_report  # noqa: E402


def synthetic_metrics(n_classes: int = 3, n_epochs: int = 4, *, task: str = "classification", seed: int = 0) -> dict:
    """A metrics.json shaped like the trainer's, for any number of classes and epochs (no training needed)."""
    rng = np.random.default_rng(seed)
    classes = [f"c{i:03d}" for i in range(n_classes)]
    epochs = [{"epoch": e, "step": 10 * e, "train_loss": 1 / e, "val_loss": 1.2 / e + 0.01 * e, "val_accuracy": 0.5,
               "val_f1_macro": 0.4, "val_r2": 0.3, "lr": 0.001 * 0.99 ** e, "epoch_seconds": 0.5,
               "samples_per_second": 1000.0 + e, "data_seconds": 0.01, "compute_seconds": 0.49}
              for e in range(1, n_epochs + 1)]
    metrics = {"schema_version": 1,
               "run": {"name": "synthetic", "status": "completed", "started_at": "2026-01-01T00:00:00+00:00",
                       "ended_at": "2026-01-01T00:01:00+00:00", "device": "cpu", "amp": "off", "message": "done",
                       "resumed": [{"time": "2026-01-01T00:00:30+00:00", "checkpoint": "last.pt", "epoch": 1,
                                    "step": 10}],
                       "mlflow": None, "versions": {"pipeline": "0.2.0", "torch": "2"}},
               "config": {"epochs": n_epochs, "learning_rate": 0.001, "hidden_sizes": [64, 32], "seed": 1,
                          "scheduler": "cosine"},
               "data": {"task": task, "target": "label" if task == "classification" else "y",
                        "classes": classes if task == "classification" else None, "n_features": 5,
                        "original_features": ["a", "b"], "rows": {"train": 700, "val": 100, "test": 200},
                        "class_counts": ({split: rng.integers(1, 50, n_classes).tolist() for split in
                                          ("train", "val", "test")} if task == "classification" else None),
                        "source": "x.csv", "source_sha256": "0" * 64, "data_sha256": "1" * 64},
               "epochs": epochs,
               "best": {"epoch": max(1, n_epochs - 1), "metric": "val_loss", "value": 0.2},
               "system": {"samples": 3, "cpu_percent_mean": 50.0, "gpus": {}},
               "baselines": {"train_rows": 700, "of_train_rows": 700,
                             "hist_gradient_boosting": {"balanced_accuracy": 0.6, "accuracy": 0.6, "r2": 0.5,
                                                        "fit_seconds": 1.0},
                             "linear": {"balanced_accuracy": 0.5, "accuracy": 0.5, "r2": 0.4, "fit_seconds": 0.1}}}
    if task == "classification":
        matrix = rng.integers(0, 3, (n_classes, n_classes)) + np.diag(rng.integers(5, 40, n_classes))
        support = matrix.sum(axis=1)
        grid = np.linspace(0, 1, 200).round(5).tolist()
        metrics["test"] = {"loss": 0.5, "accuracy": 0.6, "balanced_accuracy": 0.6, "f1_macro": 0.55, "roc_auc": 0.8,
                           "confusion_matrix": matrix.tolist(),
                           "per_class": {name: {"precision": 0.5, "recall": 0.6, "f1": float(rng.random()),
                                                "support": int(support[i])} for i, name in enumerate(classes)},
                           "roc_curves": {name: {"fpr": grid, "tpr": np.sqrt(grid).round(5).tolist()}
                                          for name in classes}}
    else:
        y = rng.normal(size=2000)
        metrics["test"] = {"loss": 0.2, "rmse": 0.4, "mae": 0.3, "r2": 0.7,
                           "predictions": {"y_true": y.tolist(), "y_pred": (y + rng.normal(0, 0.3, 2000)).tolist()}}
    return metrics


SYSTEM = [{"type": "system", "time": 1000.0 + i, "cpu_percent": 50.0, "process_cpu_percent": 40.0, "rss_mb": 500.0,
           "ram_used_mb": 2000.0, "gpus": [{"index": 0, "util_percent": 90.0, "temperature_c": 60.0}]} for i in range(5)]
EVENTS = [{"type": "status", "status": "completed", "message": "done"}]


def render_all(run: report.RunData, others: list[report.RunData] = ()) -> str:
    parts = [section(run) for _, section in report.SECTIONS]
    parts.append(report.section_comparison([run, *others]))
    return "".join(parts)


class FakeAxes:
    """Stands in for a matplotlib Axes: accepts every call, and checks that what would be drawn is numbers
    (what matplotlib needs), so the property tests run hundreds of reports in seconds."""
    NUMERIC = {"plot": None, "scatter": (0, 1), "bar": (0, 1), "barh": (1,), "text": (0, 1), "axvline": (0,),
               "axhline": (0,), "imshow": (0,), "stackplot": None, "set_xticks": (0,), "set_yticks": (0,)}

    def __getattr__(self, name):
        def call(*args, **kwargs):
            for i in (range(len(args)) if self.NUMERIC.get(name, ()) is None else self.NUMERIC.get(name, ())):
                if i < len(args):
                    np.asarray(args[i], dtype=float)  # raises for text, ragged lists, dicts
            if "bottom" in kwargs:
                np.asarray(kwargs["bottom"], dtype=float)
            return (0.0, 1.0) if name.startswith("get_") else FakeAxes() if name == "twinx" else None
        return call


class FakePyplot:
    rcParams: dict = {}

    def subplots(self, nrows=1, ncols=1, **kwargs):
        axes = [FakeAxes() for _ in range(nrows * ncols)]
        return FakeAxes(), axes if len(axes) > 1 else axes[0]


@pytest.fixture
def quick_figures(monkeypatch):
    """Sections call a checking stand-in for pyplot: the real one takes about a second per report here."""
    for module in (report.sections, report.charts):  # the modules whose sections draw figures
        monkeypatch.setattr(module, "_plt", FakePyplot)
        monkeypatch.setattr(module, "figure_html", lambda figure, alt: f'<img alt="{report.esc(alt)}" src="data:,">')


WRONG_TYPES = {
    "string where a number belongs": ("epochs", 1, "val_loss", "abc"),
    "string test metric": ("test", "accuracy", "high"),
    "string best value": ("best", "value", "0.2"),
    "list as run status": ("run", "status", ["completed"]),
    "number as run name": ("run", "name", 5),
    "dict as epoch number": ("epochs", 0, "epoch", {"n": 1}),
    "string epoch number": ("epochs", 2, "epoch", "3"),
    "null data": ("data", None),
    "string run": ("run", "completed"),
    "string classes": ("data", "classes", "abc"),
    "ragged confusion matrix": ("test", "confusion_matrix", [[1, 2], [3]]),
    "string cell in confusion matrix": ("test", "confusion_matrix", 0, 1, "x"),
    "string per-class support": ("test", "per_class", "c001", "support", "many"),
    "ROC points of the wrong type": ("test", "roc_curves", "c000", "fpr", ["a", None, 0.5]),
    "test as a list": ("test", [1, 2]),
    "unknown task": ("data", "task", "clustering"),
    "epochs not a list": ("epochs", {"1": {}}),
    "baselines rows as text": ("baselines", "train_rows", "all"),
    "resumed holding strings": ("run", "resumed", ["yesterday"]),
    "bad times": ("run", "started_at", "not a time"),
    "huge number": ("epochs", 1, "train_loss", 1e300),
    "boolean where a number belongs": ("test", "f1_macro", True),
}


def mutate(metrics: dict, path: tuple) -> dict:
    """Set metrics[path[0]][path[1]]... = path[-1] (a deep copy)."""
    out = copy.deepcopy(metrics)
    *keys, value = path
    target = out
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return out


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_wrong_types_are_left_out_and_listed(case: str, quick_figures):
    run = report.RunData(path=Path("metrics.json"), metrics=mutate(synthetic_metrics(), WRONG_TYPES[case]),
                         system=SYSTEM, events=EVENTS)
    html = render_all(run)
    assert html
    if case not in ("huge number", "number as run name", "bad times"):  # numbers and text where text belongs
        assert run.problems, "a wrong type must be reported"
        assert "value(s) of the wrong type were left out of this report" in report.section_summary(run)


def test_many_wrong_types_at_once_with_real_figures():
    metrics = synthetic_metrics()
    for case in ("string where a number belongs", "string test metric", "string best value", "list as run status",
                 "string cell in confusion matrix", "string per-class support", "ROC points of the wrong type",
                 "baselines rows as text", "huge number", "boolean where a number belongs", "bad times"):
        metrics = mutate(metrics, WRONG_TYPES[case])
    run = report.RunData(path=Path("metrics.json"), metrics=metrics, system=SYSTEM, events=EVENTS)
    assert render_all(run).count("data:image/png;base64,") >= 8
    assert len(run.problems) == 10  # all but the times, which are text; 1e300 is beyond any real value


def test_a_well_formed_metrics_json_comes_back_unchanged():
    metrics = synthetic_metrics(5, 6)
    cleaned, problems = report.normalise(copy.deepcopy(metrics))
    assert problems == [] and cleaned == metrics
    regression = synthetic_metrics(task="regression")
    assert report.normalise(copy.deepcopy(regression)) == (regression, [])


@pytest.mark.slow
def test_report_cli_renders_a_metrics_json_with_wrong_types(tmp_path: Path):
    metrics = tmp_path / "metrics.json"
    bad = mutate(mutate(synthetic_metrics(), ("epochs", 1, "val_loss", "abc")), ("test", "accuracy", "high"))
    metrics.write_text(json.dumps(bad))
    result = script("generate_report.py", "--metrics", metrics, "--output", tmp_path / "r.html", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "r.html").read_text()
    assert "2 value(s) of the wrong type were left out of this report" in text, text[-3000:]
    assert "epochs[1].val_loss" in text and "test.accuracy" in text


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe{", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'"just a string"', "not a metrics.json (schema_version 1)"),
])
def test_unusable_metrics_files(content: bytes, expected: str, tmp_path: Path, capsys):
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    assert generate_report.main(["--metrics", str(path), "--output", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err and len(err) < 500


def test_metrics_path_that_is_a_folder(tmp_path: Path, capsys):
    assert generate_report.main(["--metrics", str(tmp_path), "--output", str(tmp_path / "r.html")]) == 2
    assert "is a folder; pass the metrics.json inside a training --save-dir" in capsys.readouterr().err


@pytest.mark.slow
def test_unreadable_metrics_json_as_a_user(tmp_path: Path):
    if not permissions_apply(tmp_path):
        pytest.skip("file permissions do not apply to this process")
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(synthetic_metrics()))
    path.chmod(0)
    try:
        result = script("generate_report.py", "--metrics", path, "--output", tmp_path / "r.html", unprivileged=True)
    finally:
        path.chmod(0o644)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{path}: cannot be read (Permission denied)" in result.stderr


@pytest.mark.slow
def test_output_under_a_file_a_folder_or_a_read_only_mount(tmp_path: Path, capsys):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(synthetic_metrics()))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    for output, expected in ((a_file / "r.html", f"cannot be made, because {a_file} is a file"),
                             (tmp_path, "is a folder; pass a file name like report.html")):
        assert generate_report.main(["--metrics", str(metrics), "--output", str(output)]) == 2
        assert expected in capsys.readouterr().err
    with tmpfs(tmp_path / "ro", "ro") as mount:
        assert generate_report.main(["--metrics", str(metrics), "--output", str(mount / "r.html")]) == 2
        assert f"cannot write in {mount} (a read-only file system)" in capsys.readouterr().err


@pytest.mark.slow
def test_full_disk_while_rendering_keeps_the_earlier_report(tmp_path: Path, monkeypatch, capsys):
    """The kernel is skipped (it is not what fills the disk); the real write of a 2 MB report meets a full tmpfs."""
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(synthetic_metrics()))
    monkeypatch.setattr(report.render, "execute_report_notebook", lambda *a, **k: None)
    monkeypatch.setattr(report.render, "render_html", lambda executed: "<p>" + "x" * 2_000_000 + "</p>")
    with tmpfs(tmp_path / "small", "size=1m") as mount:
        earlier = mount / "r.html"
        earlier.write_text("<p>the earlier report</p>")
        assert generate_report.main(["--metrics", str(metrics), "--output", str(earlier)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "could not be written (no space left on the device" in err, err
        assert earlier.read_text() == "<p>the earlier report</p>"
        assert sorted(p.name for p in mount.iterdir()) == ["r.html"]  # no temporary file left


# ------------------------------------------------------------------------------------------ random JSON
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                    | st.text(max_size=6), lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=6)
TEMPLATES = [synthetic_metrics(3, 4), synthetic_metrics(task="regression", n_epochs=3)]


def paths(value, prefix=()):
    """Every path into a JSON value (dict keys and list positions)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:3]):
            yield from paths(item, (*prefix, i))


ALL_PATHS = [[p for p in paths(t) if p] for t in TEMPLATES]


@st.composite
def damaged_metrics(draw):
    which = draw(st.sampled_from([0, 1]))
    metrics = copy.deepcopy(TEMPLATES[which])
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS[which]))
        try:
            metrics = mutate(metrics, (*path, draw(JSON)))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed this path
    return metrics


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(metrics=damaged_metrics(), system=st.lists(JSON, max_size=3), events=st.lists(JSON, max_size=3))
def test_sections_never_raise_on_damaged_metrics(metrics, system, events, quick_figures):
    run = report.RunData(path=Path("m.json"), metrics=metrics, system=[*SYSTEM[:2], *system], events=events)
    assert render_all(run, [report.RunData(path=Path("o.json"), metrics=TEMPLATES[0])])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(metrics=JSON | st.dictionaries(st.sampled_from(["run", "data", "epochs", "test", "best", "config", "system",
                                                         "baselines", "schema_version"]), JSON))
def test_sections_never_raise_on_random_json(metrics, quick_figures):
    run = report.RunData(path=Path("m.json"), metrics=metrics)
    assert render_all(run)


# ------------------------------------------------------------------------------------------------ scale
def test_a_500_class_run_renders_in_seconds():
    run = report.RunData(path=Path("m.json"), metrics=synthetic_metrics(500, 300), system=SYSTEM * 400, events=EVENTS)
    started = time.perf_counter()
    timings = {}
    for name, section in report.SECTIONS:
        began = time.perf_counter()
        section(run)
        timings[name] = time.perf_counter() - began
    elapsed = time.perf_counter() - started
    assert elapsed < 20, timings
    html = report.section_test(run)
    assert "500 classes: the 10 with the lowest F1" in html and "The most frequent confusions" in html
    assert html.count("<tr>") < 60  # top-k tables, not 500 rows


def test_long_runs_are_thinned():
    run = report.RunData(path=Path("m.json"), metrics=synthetic_metrics(3, 20_000), system=SYSTEM)
    started = time.perf_counter()
    for _, section in report.SECTIONS:
        section(run)
    assert time.perf_counter() - started < 20
    assert len(report.thin(20_000)) <= report.MAX_POINTS + 2 and report.thin(5) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_a_500_class_report_through_the_cli(tmp_path: Path):
    metrics = tmp_path / "metrics.json"
    fileio.atomic_write_json(metrics, synthetic_metrics(500, 100))
    started = time.monotonic()
    result = script("generate_report.py", "--metrics", metrics, "--output", tmp_path / "r.html", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 90  # was: killed after 900 s
    assert math.isfinite((tmp_path / "r.html").stat().st_size)


def test_the_verdict_intervals_and_calibration_are_shown_and_checked():
    """The fields the bootstrap adds (intervals, paired differences, verdict, calibration, PR curves) render, and a
    well-formed file with them comes back without a single 'wrong type' line."""
    metrics = synthetic_metrics()
    metrics["test"]["intervals"] = {"balanced_accuracy": [0.55, 0.66], "accuracy": [0.54, 0.65]}
    metrics["test"]["average_precision"] = 0.71
    metrics["test"]["calibration"] = {"brier": 0.2, "ece": 0.04, "of": "top class",
                                      "bins": [{"low": 0.5, "high": 0.6, "count": 10, "confidence": 0.55,
                                                "observed": 0.5}]}
    metrics["test"]["pr_curves"] = {"c001": {"recall": [0.0, 0.5, 1.0], "precision": [1.0, 0.8, 0.3], "share": 0.3}}
    metrics["baselines"]["linear"]["intervals"] = {"balanced_accuracy": [0.44, 0.56]}
    metrics["baselines"]["linear"]["difference"] = {"balanced_accuracy": {"value": 0.1, "interval": [0.02, 0.18]}}
    metrics["baselines"]["failed"] = {"hist_gradient_boosting": "ValueError: broadcast"}
    del metrics["baselines"]["hist_gradient_boosting"]
    metrics["uncertainty"] = {"method": "bootstrap", "resamples": 1000, "confidence": 0.95, "stratified": True,
                              "paired": True, "seed": 1, "test_rows": 200, "skipped": []}
    metrics["verdict"] = {"metric": "balanced_accuracy", "network": 0.6, "baseline": "linear", "baseline_value": 0.5,
                          "difference": 0.1, "interval": [0.02, 0.18], "outcome": "ahead",
                          "text": "balanced_accuracy: the linear model 0.500, network 0.600; ...: the network is ahead"}
    checked, problems = report.normalise(copy.deepcopy(metrics))
    assert problems == [] and checked == metrics
    run = report.RunData(Path("synthetic"), metrics)
    worth = report.section_worth_it(run)
    assert "balanced_accuracy: the linear model 0.500, network 0.600" in worth and "holds its own" not in worth
    assert "0.550" in worth and "0.660" in worth and "0.440" in worth and "0.560" in worth   # the intervals
    assert "failed: ValueError: broadcast" in worth
    test = report.section_test(run)
    assert "average precision" in test and "expected calibration error" in test and test.count("<img") == 2
    assert 'alt="precision-recall curves and reliability diagram on the test split"' in test
    old = synthetic_metrics()   # a file from before intervals: said plainly, no verdict invented
    assert "point estimates" in report.section_worth_it(report.RunData(Path("old"), old))


def test_a_constant_learning_rate_gets_a_sentence_not_a_chart():
    metrics = synthetic_metrics()
    for e in metrics["epochs"]:
        e["lr"] = 0.001
    html = report.section_learning_rate(report.RunData(Path("c"), metrics))
    assert "<img" not in html and "constant learning rate" in html
