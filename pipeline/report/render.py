"""The report as one file: the section list, the report notebook executed with papermill and rendered with
nbconvert into one self-contained HTML file (written atomically, an --output checked before a kernel starts)."""
from __future__ import annotations

import errno
import os
import re
import tempfile
from importlib import resources
from pathlib import Path

from pipeline import fileio
from pipeline.errors import DataError
from pipeline.report.charts import (section_learning_curves, section_learning_rate, section_overfitting,
                                    section_system, section_test, section_throughput)
from pipeline.report.loading import load_metrics
from pipeline.report.tuning import load_tuning
from pipeline.report.sections import (section_data, section_events, section_hyperparameters,
                                      section_reproducibility, section_summary, section_worth_it)

TEMPLATES = resources.files("pipeline") / "templates"

SECTIONS = [("Is the network worth it?", section_worth_it), ("Run summary", section_summary), ("Hyperparameters", section_hyperparameters), ("Data", section_data),
            ("Learning curves", section_learning_curves), ("Learning-rate schedule", section_learning_rate),
            ("Overfitting analysis", section_overfitting), ("Test evaluation", section_test),
            ("Throughput and epoch times", section_throughput), ("System resources", section_system),
            ("Resume and interruption events", section_events), ("Reproducibility", section_reproducibility)]


def show(section_html: str) -> None:
    """Display a section in a notebook (what the report notebook's cells call)."""
    from IPython.display import HTML, display

    display(HTML(section_html))


# --------------------------------------------------------------------------------------------- generate
def execute_report_notebook(metrics_path: Path, compare: list[Path], executed_path: Path, *,
                            title: str = "Training report", tuning: Path | None = None) -> None:
    from pipeline import nbexec

    nbexec.execute_notebook(TEMPLATES / "report.ipynb", executed_path,
                            {"metrics_path": str(metrics_path.resolve()),
                             "compare_paths": [str(p.resolve()) for p in compare], "title": title,
                             "tuning_path": str(tuning.resolve()) if tuning else ""},
                            cwd=executed_path.parent)


def render_html(executed_path: Path) -> str:
    """Executed notebook -> one self-contained HTML string (no inputs, no prompts, no CDN)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATES)], template_name="report", exclude_input=True,
                            exclude_input_prompt=True, exclude_output_prompt=True)
    notebook = nbformat.read(str(executed_path), as_version=4)
    notebook.metadata.pop("widgets", None)  # widget state would pull its renderer from a CDN
    body, _ = exporter.from_notebook_node(notebook)
    # JupyterLab's stylesheet cites its sources in comments; drop them so the file names no remote URL at all
    return re.sub(r"(<style[^>]*>)(.*?)(</style>)",
                  lambda m: m.group(1) + re.sub(r"/\*.*?\*/", "", m.group(2), flags=re.S) + m.group(3),
                  body, flags=re.S)


def generate(metrics: Path | str, output: Path | str, *, compare: list[Path | str] | None = None,
             executed_notebook: Path | str | None = None, title: str = "Training report",
             tuning: Path | str | None = None) -> Path:
    """Execute the report notebook and write one standalone HTML file (atomically). `tuning`: a tuning.json
    (solutions/tune.py) whose section the report gains."""
    metrics = Path(metrics)
    compare = [Path(p) for p in compare or []]
    for path in [metrics, *compare]:
        load_metrics(path)  # fail fast, with a clear message, before starting a kernel
    tuning = Path(tuning) if tuning else None
    if tuning is not None:
        load_tuning(tuning)
    output = Path(output)
    check_output(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="report-") as tmp:
            executed = Path(executed_notebook) if executed_notebook else Path(tmp) / "report.ipynb"
            executed.parent.mkdir(parents=True, exist_ok=True)
            execute_report_notebook(metrics, compare, executed, title=title, tuning=tuning)
            fileio.atomic_write_bytes(output, render_html(executed).encode("utf-8"))
    except OSError as exc:  # a full disk, a read-only file system: the earlier report (if any) is untouched
        where = Path(exc.filename).parent if getattr(exc, "filename", None) else output.parent
        raise DataError(f"{output}: could not be written ({_os_reason(exc)}, in {where}); an earlier report there "
                        "is unchanged: free some space or choose another --output") from None
    return output


def check_output(output: Path) -> None:
    """Refuse, before a kernel starts, an --output that is a folder, lies under a file, or cannot be written."""
    ancestor = next((p for p in (output, *output.parents) if os.path.lexists(p)), Path("."))
    if ancestor == output and output.is_dir():
        raise DataError(f"{output}: is a folder; pass a file name like report.html to --output")
    if ancestor != output and not ancestor.is_dir():
        raise DataError(f"{output}: cannot be made, because {ancestor} is a file; choose another --output")
    folder = output.parent if ancestor == output else ancestor
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"{output}: cannot write in {folder} ({_os_reason(PermissionError(errno.EACCES, ''), folder)});"
                        " choose another --output")


def _os_reason(exc: OSError, folder: Path | None = None) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if exc.errno == errno.EFBIG:
        return "a file grew beyond the size limit"
    try:
        if exc.errno == errno.EROFS or (folder is not None and os.statvfs(folder).f_flag & os.ST_RDONLY):
            return "a read-only file system"
    except OSError:
        pass
    if exc.errno == errno.EACCES:
        return "permission denied"
    return exc.strerror or str(exc)
