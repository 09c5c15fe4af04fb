"""Phase 3: follow a training run from its log files — a live terminal dashboard and alerts.

    python solutions/monitor_training.py --log-dir checkpoints/logs          # live, until the run ends
    python solutions/monitor_training.py --log-dir checkpoints/logs --once   # one snapshot

Only files under the log folder are read (`metrics.jsonl`, `system.jsonl`), incrementally and tolerantly:
a half-written last line is left for the next poll, a truncated or replaced file is read again from the
start, and every record is checked field by field (`clean_record`) before the view uses it, so a log holding
anything at all (a string step, a list where a loss belongs) never ends the monitor. If the logs vanish, the
run's `metrics.json` beside them says how it ended. `detect_alerts` is pure: it takes the parsed history and
returns what deserves attention.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from pipeline import status as status_lib
from pipeline.errors import PipelineError
from pipeline.monitor.alerts import Alert, detect_alerts
from pipeline.monitor.following import TERMINAL, RunFollower, RunView

MAX_REFRESH_S = 3600.0

def smooth(values: list[float], alpha: float = 0.3) -> list[float]:
    """Exponential moving average (the 'smoothing' slider of TensorBoard)."""
    out: list[float] = []
    for value in values:
        out.append(value if not out else alpha * value + (1 - alpha) * out[-1])
    return out


def ascii_chart(series: dict[str, list[float]], width: int = 60, height: int = 10) -> list[str]:
    """Several series in one text chart; each series gets its own mark. Returns the lines."""
    marks = "*o+x#"
    clean = {name: [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
             for name, values in series.items()}
    clean = {k: v for k, v in clean.items() if v}
    if not clean:
        return ["(no data yet)"]
    low = min(min(v) for v in clean.values())
    high = max(max(v) for v in clean.values())
    # halves: high - low itself can overflow to inf for values near the float limits
    span, half_low = (high / 2 - low / 2) or 1.0, low / 2
    grid = [[" "] * width for _ in range(height)]
    for mark, values in zip(marks, clean.values()):
        n = len(values)
        # one point per column when there are more values than columns, else spread the values out
        points = ([(c, values[c * n // width]) for c in range(width)] if n > width else
                  [(round(i * (width - 1) / max(1, n - 1)), v) for i, v in enumerate(values)])
        for column, value in points:
            row = height - 1 - int(round((value / 2 - half_low) / span * (height - 1)))
            grid[row][column] = mark
    lines = [f"{high:>9.4g} |" + "".join(grid[0])]
    lines += ["          |" + "".join(row) for row in grid[1:-1]]
    lines.append(f"{low:>9.4g} |" + "".join(grid[-1]))
    lines.append("           " + "  ".join(f"{m} {name}" for m, name in zip(marks, clean)))
    return lines


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds < 1e9:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _shown(value: float | None, spec: str) -> str:
    """A number formatted with `spec`, or '?' when there is none (a field missing from the log)."""
    return "?" if value is None else format(value, spec)


def snapshot_lines(view: RunView, alerts: list[Alert], width: int = 60) -> list[str]:
    """The dashboard as plain text lines (used for --once, pipes, and inside the rich layout)."""
    world = (view.run or {}).get("world_size")
    lines = [f"run: {(view.run or {}).get('run_name', '?')}   status: {view.status.upper()}"
             + (f"   device: {view.run.get('device')}" if view.run else "")
             + (f"   processes: {world} (torchrun)" if isinstance(world, int) and world > 1 else "")]
    if view.message:
        lines.append(f"  {view.message}")
    if view.run is None:
        lines.append(f"waiting for a run to write {view.log_dir / 'metrics.jsonl'} ...")
        return lines
    epoch = view.epochs[-1]["epoch"] if view.epochs else 0
    total = view.total_epochs or 0
    spe = view.steps_per_epoch or 1
    done = min(1.0, max(0.0, view.global_step / max(1, total * spe)))  # a log can claim any step
    bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
    lines.append(f"progress: [{bar}] {100 * done:5.1f}%  epoch {epoch}/{total}  step {view.global_step}/{total * spe}"
                 + (f"  ETA {_duration(view.eta_seconds())}" if view.status == "running" else ""))
    if view.epochs:
        last = view.epochs[-1]
        shown = [f"{k} {last[k]:.4g}" for k in ("train_loss", "val_loss", "val_accuracy", "val_f1_macro", "val_rmse",
                                                 "val_r2", "lr") if isinstance(last.get(k), (int, float))]
        lines.append("latest: " + "  ".join(shown))
        lines.append(f"speed: {_shown(last.get('samples_per_second'), ',.0f')} samples/s, "
                     f"{_shown(last.get('epoch_seconds'), '.2f')}s/epoch "
                     f"(data wait {_shown(last.get('data_seconds'), '.2f')}s)")
    best = view.best()
    if best:
        lines.append(f"best: {best[1]} {best[2]:.4g} at epoch {best[0]}")
    lines.append("")
    lines.append("loss per epoch:")
    lines += ascii_chart({"train_loss": [e.get("train_loss") for e in view.epochs],
                          "val_loss": [e.get("val_loss") for e in view.epochs]}, width=width, height=8)
    if view.system:
        s = view.system[-1]
        lines.append("")
        lines.append(f"system: CPU {_shown(s.get('cpu_percent'), '.0f')}% (process "
                     f"{_shown(s.get('process_cpu_percent'), '.0f')}%)  RAM {_shown(s.get('ram_percent'), '.0f')}%  "
                     f"RSS {_shown(s.get('rss_mb'), ',.0f')} MB")
        for gpu in s.get("gpus", []):
            parts = [f"GPU {gpu['index']} {gpu.get('name', '')}"]
            if "util_percent" in gpu:
                parts.append(f"util {_shown(gpu['util_percent'], '.0f')}%")
            if "mem_used_mb" in gpu:
                parts.append(f"mem {_shown(gpu['mem_used_mb'], ',.0f')}/{_shown(gpu.get('mem_total_mb'), ',.0f')} MB")
            if "temperature_c" in gpu:
                parts.append(f"{_shown(gpu['temperature_c'], '.0f')} °C")
            if "power_w" in gpu:
                parts.append(f"{_shown(gpu['power_w'], '.0f')} W")
            lines.append("  " + "  ".join(parts))
    if view.skipped:
        lines.append(f"(skipped {view.skipped:,} log record(s) that were not usable: not an object, or without "
                     "their step or epoch number)")
    lines.append("")
    lines += [f"ALERT [{a.severity}] {a.name}: {a.message}" for a in alerts] or ["alerts: none"]
    return lines


def render_rich(view: RunView, alerts: list[Alert]) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    colour = {"running": "cyan", "completed": "green", "early_stopped": "green", "failed": "red",
              "interrupted": "yellow", "lost": "red", "waiting": "white"}.get(view.status, "white")
    body = Text("\n".join(snapshot_lines(view, [], width=70)))
    parts: list[Any] = [Panel(body, title=f"[bold {colour}]{view.status.upper()}[/]", border_style=colour)]
    if alerts:
        alert_text = Text()
        for a in alerts:
            alert_text.append(f"{a.name}: ", style="bold red" if a.severity == "critical" else "bold yellow")
            alert_text.append(a.message + "\n")
        parts.append(Panel(alert_text, title="alerts", border_style="red"))
    return Group(*parts)


def follow(log_dir: Path, *, refresh: float = 2.0, once: bool = False, console: Any = None,
           max_wait_s: float | None = None) -> int:
    """Show the run until it ends (or once). Returns an exit code reflecting the run's status."""
    from rich.console import Console
    from rich.live import Live

    if not (isinstance(refresh, (int, float)) and 0 < refresh <= MAX_REFRESH_S):
        raise PipelineError(f"--refresh must be a number of seconds in (0, {MAX_REFRESH_S:.0f}], not {refresh!r}")
    console = console or Console()
    follower = RunFollower(log_dir)
    view = follower.poll()
    if follower.problem:
        raise PipelineError(f"{follower.problem}; pass the run's logs folder (SAVE_DIR/logs)")
    if once:
        for line in snapshot_lines(view, detect_alerts(view)):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return status_lib.monitor_exit_code(view.status)
    started = time.monotonic()
    if not console.is_terminal:  # piped: a plain line per change, no screen redraws
        last_key = None
        while True:
            view = follower.poll()
            key = (view.status, len(view.epochs), view.global_step // 50)
            if key != last_key:
                alerts = detect_alerts(view)
                latest = snapshot_lines(view, alerts)
                console.print(" | ".join(l for l in latest[:4] if l), markup=False, highlight=False, soft_wrap=True)
                for alert in alerts:
                    console.print(f"ALERT {alert.name}: {alert.message}", markup=False, highlight=False, soft_wrap=True)
                last_key = key
            if view.status in TERMINAL or (max_wait_s and time.monotonic() - started > max_wait_s):
                break
            time.sleep(refresh)
    else:
        with Live(render_rich(view, detect_alerts(view)), console=console, refresh_per_second=4,
                  screen=False) as live:
            while view.status not in TERMINAL:
                if max_wait_s and time.monotonic() - started > max_wait_s:
                    break
                time.sleep(refresh)
                view = follower.poll()
                live.update(render_rich(view, detect_alerts(view)))
    for line in snapshot_lines(view, detect_alerts(view))[:3]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return status_lib.monitor_exit_code(view.status)


# ------------------------------------------------------------------------------------ notebook dashboard
def notebook_dashboard(log_dir: Path, *, refresh: float = 2.0, timeout_s: float = 600.0) -> RunView:
    """A live ipywidgets + matplotlib dashboard in a notebook cell; returns when the run ends."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    follower = RunFollower(Path(log_dir))
    header = widgets.HTML()
    progress = widgets.FloatProgress(min=0.0, max=1.0, description="progress")
    plot = widgets.Output()
    alerts_box = widgets.HTML()
    display(widgets.VBox([header, progress, plot, alerts_box]))
    started = time.monotonic()
    while True:
        view = follower.poll()
        total = (view.total_epochs or 1) * (view.steps_per_epoch or 1)
        progress.value = min(1.0, view.global_step / total)
        import html

        header.value = (f"<b>{html.escape(view.status.upper())}</b> — epoch "
                        f"{view.epochs[-1]['epoch'] if view.epochs else 0}/{view.total_epochs or '?'}, "
                        f"ETA {_duration(view.eta_seconds())}")
        alerts_box.value = "<br>".join(f"⚠ <b>{html.escape(a.name)}</b>: {html.escape(a.message)}"
                                       for a in detect_alerts(view)) or "no alerts"
        with plot:
            plot.clear_output(wait=True)
            figure = plot_run(view)
            plt.show()
            plt.close(figure)
        if view.status in TERMINAL or time.monotonic() - started > timeout_s:
            return view
        time.sleep(refresh)


def plot_run(view: RunView) -> Any:
    """Loss curves, the validation metric and CPU/RSS over time, as one matplotlib figure."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    epochs = [e["epoch"] for e in view.epochs]
    axes[0].plot(epochs, [e.get("train_loss") for e in view.epochs], label="train")
    if any("val_loss" in e for e in view.epochs):
        axes[0].plot(epochs, [e.get("val_loss") for e in view.epochs], label="validation")
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    metric = next((k for k in ("val_accuracy", "val_r2") if view.epochs and k in view.epochs[-1]), None)
    if metric:
        axes[1].plot(epochs, [e.get(metric) for e in view.epochs], color="tab:green")
        axes[1].set(title=metric, xlabel="epoch")
    if view.system:
        t0 = view.system[0]["time"]
        times = [s["time"] - t0 for s in view.system]
        axes[2].plot(times, [s.get("cpu_percent") for s in view.system], label="CPU %")
        ax2 = axes[2].twinx()
        ax2.plot(times, [s.get("rss_mb") for s in view.system], color="tab:red", label="RSS MB")
        axes[2].set(title="resources", xlabel="seconds")
    figure.tight_layout()
    return figure
