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
        assert html.escape(verdict["text"][0].upper() + verdict["text"][1:], quote=True) in text  # the verdict first
        assert "holds its own" not in text and "95% bootstrap intervals" in text
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
    assert "<th>setting: learning_rate</th>" in header and "save_dir" not in header
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
