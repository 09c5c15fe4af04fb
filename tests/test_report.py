"""Phase 4: the HTML report for every run status and both tasks; no code, no network, nothing injectable."""
from __future__ import annotations

import html.parser
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import data, fileio, report, train

from conftest import ROOT, run_script, script_env

sys.path.insert(0, str(ROOT / "solutions"))
import generate_report  # noqa: E402

ARTIFACTS = ROOT / "build" / "test-artifacts"
HOSTILE_COLUMN = "<script>alert(1)</script>"
HOSTILE_CLASS = "<img src=x onerror=alert(2)>"
FAST = dict(mlflow=False, tensorboard=False, system_interval=0.05, progress="off")


class _Html(html.parser.HTMLParser):
    """Collects what a browser would load or run."""

    def __init__(self):
        super().__init__()
        self.scripts, self.images, self.urls, self.inputs, self.handlers = 0, [], [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for name, value in attrs.items():
            if name in ("src", "href") and value and not value.startswith(("data:", "#")):
                self.urls.append(value)
            if name.startswith("on"):
                self.handlers.append((tag, name))
            if name == "class" and value and ("jp-CodeMirrorEditor" in value or "highlight" in value.split()
                                              or "jp-InputPrompt" in value):
                self.inputs += 1


def check_standalone(path: Path) -> _Html:
    text = path.read_text(encoding="utf-8")
    parsed = _Html()
    parsed.feed(text)
    assert parsed.scripts == 0, "the report must not run or load scripts"
    assert parsed.urls == [], parsed.urls[:5]
    assert not re.search(r"https?://", text), re.search(r".{40}https?://.{40}", text)
    assert "@import" not in text and "url(http" not in text
    assert parsed.inputs == 0, "code cells leaked into the report"
    assert "report.show(" not in text and "metrics_path" not in text and "import " not in text
    assert parsed.images and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    assert parsed.handlers == []
    return parsed


@pytest.fixture(scope="module")
def runs(penguins_dir: Path, regression_dir: Path, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("report_runs")
    out = {}
    for name, extra in {"completed": dict(epochs=4), "one_epoch": dict(epochs=1),
                        "early_stopped": dict(epochs=80, learning_rate=0.05, early_stopping_patience=2),
                        "failed": dict(epochs=3, optimizer="sgd", learning_rate=1e9),
                        "lr_0.01": dict(epochs=4, learning_rate=0.01)}.items():
        train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(base / name), **FAST, **extra)),
                  log=lambda m: None)
        out[name] = base / name / "metrics.json"
    train.run(train.make_config(dict(data_dir=str(regression_dir), save_dir=str(base / "regression"), epochs=4,
                                     **FAST)), log=lambda m: None)
    out["regression"] = base / "regression" / "metrics.json"
    # interrupted: a real SIGINT to a real process
    save = base / "interrupted"
    process = subprocess.Popen([sys.executable, str(ROOT / "solutions" / "train_pipeline.py"), "--data-dir",
                                str(penguins_dir), "--epochs", "500", "--save-dir", str(save), "--no-mlflow",
                                "--batch-size", "8", "--early-stopping-patience", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=script_env())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(r.get("type") == "epoch" for r in
                                                  fileio.read_jsonl(save / "logs" / "metrics.jsonl")):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    out["interrupted"] = save / "metrics.json"
    return out


@pytest.mark.parametrize("status", ["completed", "one_epoch", "early_stopped", "failed", "interrupted", "regression"])
def test_report_for_each_status_and_task(runs: dict[str, Path], status: str, tmp_path: Path):
    metrics = json.loads(runs[status].read_text())
    expected = {"one_epoch": "completed", "regression": "completed", "lr_0.01": "completed"}.get(status, status)
    assert metrics["run"]["status"] == expected
    out = tmp_path / f"{status}.html"
    report.generate(runs[status], out)
    text = out.read_text()
    check_standalone(out)
    for heading in ("Is the network worth it?", "Run summary", "Hyperparameters", "Data", "Learning curves", "Learning-rate schedule",
                    "Overfitting analysis", "Test evaluation", "Throughput and epoch times", "System resources",
                    "Resume and interruption events", "Reproducibility"):
        assert f">{heading}<" in text, heading
    if status in ("failed", "interrupted"):
        assert "No test evaluation: the run ended with status" in text
        assert "No baselines in this run" in text
    else:
        assert "boosted trees (HistGradientBoosting)" in text and "linear model" in text
        verdict = metrics["verdict"]
        assert verdict["outcome"] in ("ahead", "behind", "not distinguishable")
        assert html.escape(verdict["text"], quote=True) in text  # the verdict, decided by the interval
        assert "holds its own" not in text and "95% intervals from a" in text
    if status == "failed":
        assert "non-finite loss" in text
    if status == "interrupted":
        assert "SIGINT" in text
    if status == "regression":
        assert 'alt="predicted versus actual values, and residuals"' in text and ">rmse<" in text
    if status in ("completed", "early_stopped"):
        assert 'alt="confusion matrix and ROC curves on the test split"' in text and ">Chinstrap<" in text


def test_comparison_report_via_cli(runs: dict[str, Path], tmp_path: Path):
    out = tmp_path / "compare.html"
    result = run_script("generate_report.py", "--metrics", runs["completed"], "--compare", runs["lr_0.01"],
                        "--output", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Kernel is running over TCP" not in result.stderr
    text = out.read_text()
    check_standalone(out)
    assert ">Comparison<" in text and 'alt="runs compared"' in text
    header = re.search(r"<th>run</th>(.*?)</tr>", text).group(1)
    assert "<th>learning_rate</th>" in header and "save_dir" not in header
    assert header.count("epochs") == 1 and "<th>epochs run</th>" in header  # one column headed epochs


def test_hostile_strings_are_escaped(tmp_path: Path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({HOSTILE_COLUMN: rng.normal(size=90), "x2": rng.normal(size=90),
                          "kind": rng.choice(["a", "b"], 90),
                          "label": np.where(rng.normal(size=90) > 0, HOSTILE_CLASS, "$\\alpha$")})
    frame.to_csv(tmp_path / "evil.csv", index=False)
    data.prepare_dataset(tmp_path / "evil.csv", tmp_path / "prepared")
    train.run(train.make_config(dict(data_dir=str(tmp_path / "prepared"), save_dir=str(tmp_path / "run"), epochs=2,
                                     run_name="</table><script>alert(3)</script>", **FAST)), log=lambda m: None)
    out = tmp_path / "evil.html"
    assert generate_report.main(["--metrics", str(tmp_path / "run" / "metrics.json"), "--output", str(out),
                                 "--title", "<b>title</b>"]) == 0
    text = out.read_text()
    parsed = check_standalone(out)
    assert parsed.scripts == 0 and parsed.handlers == []
    assert HOSTILE_COLUMN not in text and HOSTILE_CLASS not in text and "<b>title</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;img src=x onerror=alert(2)&gt;" in text
    assert "&lt;/table&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in text


@pytest.mark.parametrize("content, expected", [(None, "no such metrics file"), ("{not json", "not valid JSON"),
                                               ('{"a": 1}', "not a metrics.json")])
def test_bad_metrics_file(tmp_path: Path, capsys, content, expected):
    path = tmp_path / "metrics.json"
    if content is not None:
        path.write_text(content)
    assert generate_report.main(["--metrics", str(path), "--output", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_opens_in_headless_chromium(runs: dict[str, Path], tmp_path: Path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found (CI installs Debian's chromium; `apt-get install chromium` here)")
    out = tmp_path / "report.html"
    report.generate(runs["completed"], out, compare=[runs["lr_0.01"]])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "training_report.png"
    shot.unlink(missing_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Learning curves" in dom.stdout and "Comparison" in dom.stdout  # the browser parsed the whole page
    done = subprocess.run([browser, *flags, "--window-size=1280,3000", f"--screenshot={shot}", out.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.stat().st_size > 50_000, done.stderr[-2000:]
    from PIL import Image  # noqa: F401  (matplotlib brings Pillow)

    with Image.open(shot) as image:
        colours = image.convert("RGB").resize((64, 150)).getcolors(64 * 150)
    assert len(colours) > 20  # a real page with plots, not a blank screen


# ------------------------------------------------------------------ issue 21: the report's rough edges, new fields
def rich_metrics(classes=("no", "yes"), lr=(1e-3, 1e-3, 1e-3)) -> dict:
    """A metrics.json with every field of METRICS_SHAPE (intervals, differences, verdict, best.values, AP, calibration)."""
    epochs = [{"epoch": i + 1, "step": 10 * (i + 1), "train_loss": 1 / (i + 1), "val_loss": 1.1 / (i + 1),
               "val_accuracy": 0.7 + 0.05 * i, "val_balanced_accuracy": 0.6 + 0.05 * i, "val_f1_macro": 0.65,
               "lr": rate, "epoch_seconds": 1.5, "data_seconds": 0.5, "compute_seconds": 1.0,
               "samples_per_second": 100.0} for i, rate in enumerate(lr)]
    k = len(classes)
    return {"schema_version": 1,
            "run": {"name": "rich", "status": "completed", "started_at": "2026-01-01T10:00:00",
                    "ended_at": "2026-01-01T10:00:09", "device": "cpu", "git_commit": "0123abcd" * 5,
                    "mlflow": {"tracking_uri": "http://127.0.0.1:5000", "experiment_id": "7", "run_id": "abc123"}},
            "config": {"learning_rate": 0.01, "epochs": 3, "seed": 42, "data_dir": str(ROOT / "processed_data"),
                       "save_dir": str(Path.home() / "runs" / "a"), "mlflow": True, "scheduler": "none"},
            "data": {"task": "classification", "target": "y", "classes": list(classes), "n_features": 4,
                     "source": str(ROOT / "data" / "train.csv"), "rows": {"train": 100, "val": 20, "test": 30}},
            "epochs": epochs,
            "best": {"epoch": 3, "metric": "val_loss", "value": 0.36666,
                     "values": {"best_epoch": 3, "best_val_loss": 0.36666, "best_val_balanced_accuracy": 0.7}},
            "test": {"loss": 0.31234, "accuracy": 0.9042, "balanced_accuracy": 0.8812, "f1_macro": 0.87,
                     "roc_auc": 0.95, "intervals": {"balanced_accuracy": [0.8123, 0.9456], "accuracy": [0.85, 0.95]},
                     "confusion_matrix": [[10 if i == j else 1 for j in range(k)] for i in range(k)],
                     "per_class": {c: {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 11} for c in classes},
                     "roc_curves": {c: {"fpr": [0, 0.1, 1], "tpr": [0, 0.8, 1]} for c in classes},
                     "average_precision": 0.9312, "calibration": {"brier": 0.0712, "ece": 0.0431, "bins": []}},
            "baselines": {"train_rows": 100, "of_train_rows": 100,
                          "hist_gradient_boosting": {"balanced_accuracy": 0.9, "fit_seconds": 0.2,
                                                     "intervals": {"balanced_accuracy": [0.83, 0.96]},
                                                     "difference": {"balanced_accuracy": {"value": -0.0188,
                                                                                          "interval": [-0.07, 0.03]}}},
                          "linear": {"balanced_accuracy": 0.86, "fit_seconds": 0.01},
                          "failed": {"linear_extra": "did not converge"}},
            "uncertainty": {"method": "bootstrap", "resamples": 1000, "confidence": 0.95, "stratified": True,
                            "seed": 0, "test_rows": 30},
            "verdict": {"metric": "balanced_accuracy", "network": 0.8812, "baseline": "hist_gradient_boosting",
                        "baseline_value": 0.9, "difference": -0.0188, "interval": [-0.07, 0.03],
                        "outcome": "not distinguishable",
                        "text": "boosted trees 0.900 vs network 0.881: not distinguishable on 30 test rows"}}


@pytest.fixture
def rich_run(tmp_path: Path) -> report.RunData:
    path = tmp_path / "run" / "metrics.json"
    path.parent.mkdir()
    path.write_text(json.dumps(rich_metrics()))
    return report.load_run(path)


@pytest.fixture
def no_figures(monkeypatch):
    """The figure calls record their arguments instead of drawing (what is plotted is checked, not pixels)."""
    drawn = []

    class Axes:
        def __getattr__(self, name):
            return lambda *a, **k: drawn.append((name, a, k)) or (0, 1)

    class Plt:
        rcParams: dict = {}

        @staticmethod
        def subplots(nrows=1, ncols=1, **kwargs):
            axes = [Axes() for _ in range(nrows * ncols)]
            return Axes(), axes if len(axes) > 1 else axes[0]

    for module in (report.sections, report.charts):
        monkeypatch.setattr(module, "_plt", lambda: Plt)
        monkeypatch.setattr(module, "figure_html", lambda figure, alt: f'<img alt="{report.esc(alt)}" src="data:,">')
    return drawn


def test_new_metrics_fields_are_displayed(rich_run, no_figures):
    assert rich_run.problems == []  # the new fields are of the expected types, none is dropped
    worth = report.section_worth_it(rich_run)
    assert "not distinguishable on 30 test rows" in worth  # the verdict metrics.json states, not the point estimates
    assert "0.881 [0.812, 0.946]" in worth and "0.900 [0.830, 0.960]" in worth  # intervals beside the scores
    assert "-0.019 [-0.070, 0.030]" in worth  # the paired difference network - baseline and its interval
    assert "95% intervals" in worth and "1,000 resamples" in worth and "did not converge" in worth
    summary = report.section_summary(rich_run)
    assert "at the best epoch: val_balanced_accuracy" in summary and "0.700" in summary
    test = report.section_test(rich_run)
    assert "[0.812, 0.946]" in test and "0.931" in test and "0.071" in test and "0.043" in test
    assert "Brier score" in test and "expected calibration error" in test


def test_old_metrics_without_new_fields_still_render(rich_run, no_figures):
    m = rich_metrics()
    for key in ("verdict", "uncertainty"):
        del m[key]
    for key in ("intervals", "average_precision", "calibration"):
        del m["test"][key]
    del m["best"]["values"]
    run = report.RunData(path=Path("m.json"), metrics=m)
    old_verdict = report.section_worth_it(run)
    assert "point estimates" in old_verdict and "Boosted trees are better" not in old_verdict  # no verdict invented
    assert "Brier" not in report.section_test(run) and "[" not in report.section_test(run).split("<table")[1]


def test_headline_metric_is_plotted_among_validation_curves(rich_run, no_figures):
    report.section_learning_curves(rich_run)
    labels = [k.get("label") for name, _, k in no_figures if name == "plot"]
    assert labels[:2] == ["train", "validation"] and "val_balanced_accuracy" in labels
    assert labels.index("val_balanced_accuracy") < labels.index("val_accuracy")


def test_git_commit_and_mlflow_link(rich_run, tmp_path):
    html_ = report.section_reproducibility(rich_run)
    assert "0123abcd" * 5 in html_
    assert '<a href="http://127.0.0.1:5000/#/experiments/7/runs/abc123">abc123</a>' in html_
    m = rich_metrics()
    m["run"]["mlflow"] = {"tracking_uri": f"sqlite:///{ROOT}/mlflow.db", "experiment_id": "1", "run_id": "r9"}
    local = report.section_reproducibility(report.RunData(path=Path("m.json"), metrics=m))
    assert "<a " not in local and "r9" in local and "make mlflow-ui" in local


def test_machine_paths_are_shown_relative():
    assert report.helpers.shown_path(str(ROOT / "data" / "train.csv")) == "data/train.csv"
    assert report.helpers.shown_path(str(Path.home() / "x" / "y.csv"), root=Path("/nowhere")) == "~/x/y.csv"
    assert report.helpers.shown_path("/elsewhere/z.csv", root=Path("/nowhere")) in ("/elsewhere/z.csv", "~/../z.csv") \
        or Path.home() == Path("/")
    assert report.helpers.shown_path("relative/p.csv") == "relative/p.csv"


def test_data_and_hyperparameters_show_relative_paths_and_changed_settings_first(rich_run, no_figures):
    data_ = report.section_data(rich_run)
    assert "<td>data/train.csv</td>" in data_ and str(ROOT) not in data_
    hp = report.section_hyperparameters(rich_run)
    head, folded = hp.split("<details>")
    assert "changed from the default" in head and "<td>learning_rate</td><td>0.010</td><td>0.001</td>" in head
    assert "<td>seed</td>" not in head  # 42 is the default
    assert "<summary>All 7 settings</summary>" in folded and "<td>seed</td>" in folded
    assert str(ROOT) not in hp and "~/runs/a" in folded


def test_cpu_chart_separates_machine_and_process_and_drops_the_first_zero(no_figures):
    system = [{"type": "system", "time": float(t), "cpu_percent": 50.0, "process_cpu_percent": 0.0 if t == 0 else 150.0,
               "rss_mb": 100.0, "ram_used_mb": 1000.0} for t in range(4)]
    run = report.RunData(path=Path("m.json"), metrics=rich_metrics(), system=system)
    report.section_system(run)
    titles = [k.get("title") for name, _, k in no_figures if name == "set"]
    assert "machine CPU (all cores, 0-100%)" in titles and "training process CPU (100% = one core)" in titles
    process = [a[1] for name, a, k in no_figures if name == "plot" and len(a) == 2 and 150.0 in a[1]]
    assert process == [[150.0, 150.0, 150.0]]  # the first reading (always 0) is left out


def test_one_duration_with_its_parts(rich_run):
    text = report.section_summary(rich_run)
    assert "9.0s: 3 epoch(s) of training 4.500s, the rest start-up, baselines" in text


def test_no_learning_rate_chart_for_a_constant_schedule(no_figures):
    constant = report.RunData(path=Path("m.json"), metrics=rich_metrics())
    assert "A constant learning rate (0.001" in report.section_learning_rate(constant)
    decaying = report.RunData(path=Path("m.json"), metrics=rich_metrics(lr=(1e-3, 5e-4, 1e-4)))
    assert 'alt="learning rate per epoch"' in report.section_learning_rate(decaying)


def test_binary_roc_draws_the_positive_class_only(rich_run, no_figures):
    report.section_test(rich_run)
    roc = [k.get("label") for name, _, k in no_figures if name == "plot" and k.get("label")]
    assert roc == ["yes"]
    no_figures.clear()
    report.section_test(report.RunData(path=Path("m.json"), metrics=rich_metrics(classes=("a", "b", "c"))))
    assert [k.get("label") for name, _, k in no_figures if name == "plot" and k.get("label")] == ["a", "b", "c"]


def test_one_rounding_rule():
    fmt = report.fmt
    assert [fmt(0.924), fmt(0.9042), fmt(12.34567), fmt(0.000123), fmt(12345.6), fmt(3), fmt(0.0)] == \
        ["0.924", "0.904", "12.346", "0.000123", "12,346", "3", "0.000"]


def test_section_order_comparison_first_reproducibility_last():
    cells = ["".join(c["source"]) for c in json.loads((ROOT / "pipeline/templates/report.ipynb").read_text())["cells"]]
    called = [re.search(r"section_(\w+)", c).group(1) for c in cells if "section_" in c]
    assert called[0] == "comparison" and called[1] == "worth_it" and called[-1] == "reproducibility"


def test_comparison_table_has_one_epochs_column(no_figures):
    a = report.RunData(path=Path("a/m.json"), metrics=rich_metrics())
    m = rich_metrics()
    m["config"]["epochs"] = 5
    b = report.RunData(path=Path("b/m.json"), metrics=m)
    header = re.search(r"<tr>(<th>run</th>.*?)</tr>", report.section_comparison([a, b])).group(1)
    cells = re.findall(r"<th>(.*?)</th>", header)
    assert "epochs" in cells and "epochs run" in cells and len(cells) == len(set(cells))


def test_no_empty_difference_column_without_paired_differences(rich_run, no_figures):
    assert "network − model (balanced_accuracy)" in report.section_worth_it(rich_run)
    m = rich_metrics()
    del m["baselines"]["hist_gradient_boosting"]["difference"]
    assert "network − model" not in report.section_worth_it(report.RunData(path=Path("m.json"), metrics=m))
