"""HTML and figure helpers of the report: escaping, one number format, tables, notes, embedded PNG figures."""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from pipeline.report.loading import RunData

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """The report's one number format: whole numbers with thousands separators; other numbers with 3 decimals
    (0.924, 12.346), 3 significant digits below 0.001 (0.000123), none from 10,000 up (12,346)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 1e4:
            return f"{value:,.0f}"
        return f"{value:.3f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3g}"
    return esc(value)


def fmt_interval(interval: Any) -> str:
    """[low, high] in the one number format, or "" when there is no interval."""
    if not (isinstance(interval, list) and len(interval) == 2 and all(isinstance(v, (int, float)) for v in interval)):
        return ""
    return f"[{fmt(float(interval[0]))}, {fmt(float(interval[1]))}]"


def with_interval(value: Any, interval: Any) -> str:
    """A score and, when known, its interval: "0.989 [0.951, 1.000]"."""
    shown = fmt(float(value) if isinstance(value, int) and not isinstance(value, bool) else value)
    bounds = fmt_interval(interval)
    return f"{shown} {bounds}" if bounds else shown


PROJECT_ROOT = Path(__file__).resolve().parents[2]


def shown_path(value: Any, root: Path = PROJECT_ROOT) -> Any:
    """A machine path as a reader can use it: relative to the project root, else under `~`, else as written.
    Anything that is not an absolute path comes back unchanged."""
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    path = Path(value)
    for base, prefix in ((root, ""), (Path.home(), "~/")):
        try:
            return prefix + str(path.relative_to(base)) if path != base else (prefix.rstrip("/") or ".")
        except ValueError:
            continue
    return value


def table(rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None, *, cls: str = "kv") -> str:
    """An HTML table; every cell is escaped (numbers are formatted)."""
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}">{head}{body}</table>'


class Html(str):
    """Markup built here from escaped parts (a link): `table` puts it in a cell as it is."""


def _cell(value: Any) -> str:
    if isinstance(value, Html):
        return str(value)
    return esc(value) if isinstance(value, str) else fmt(value)


def note(text: str, kind: str = "info") -> str:
    return f'<p class="note {kind}">{esc(text)}</p>'


def figure_html(figure: Any, alt: str) -> str:
    """A matplotlib figure as an embedded PNG (no file, no URL)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="figure" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _plt() -> Any:
    """pyplot, configured for report figures (each is rendered to PNG and closed by `figure_html`)."""
    import matplotlib.pyplot as plt

    plt.rcParams["text.parse_math"] = False  # a class named "$x$" is text, not TeX
    plt.rcParams["figure.figsize"] = (7.5, 3.4)
    return plt


def _duration(start: str | None, end: str | None) -> str:
    from datetime import datetime

    if not start or not end:
        return "—"
    try:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):  # not ISO times, or one with a time zone and one without
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


def headline_metric(run: RunData) -> tuple[str, float | None]:
    """Balanced accuracy (a majority-class model scores 1/classes, not the majority's share) or R²."""
    test = run.metrics.get("test") or {}
    key = "balanced_accuracy" if run.task == "classification" else "r2"
    return key, test.get(key)
