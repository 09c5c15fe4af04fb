"""Follow a training run from its log files: a live terminal dashboard and alerts.

    python solutions/monitor_training.py --log-dir checkpoints/logs          # live, until the run ends
    python solutions/monitor_training.py --log-dir checkpoints/logs --once   # one snapshot

    following.py  RunView, RunFollower: the run's state read from its logs (pipeline.logs tails and cleans them)
    alerts.py     Alert, detect_alerts, detect_overfitting: what deserves attention (pure)
    display.py    smooth, ascii_chart, snapshot_lines, follow, notebook_dashboard, plot_run
"""
from pipeline.errors import PipelineError
from pipeline.logs import JsonlTail, clean_record
from pipeline.monitor.alerts import Alert, detect_alerts, detect_overfitting
from pipeline.monitor.display import (MAX_REFRESH_S, ascii_chart, follow, notebook_dashboard, plot_run,
                                      render_rich, smooth, snapshot_lines)
from pipeline.monitor.following import TERMINAL, RunFollower, RunView, process_alive

__all__ = ["Alert", "PipelineError", "JsonlTail", "MAX_REFRESH_S", "RunFollower", "RunView", "TERMINAL", "ascii_chart", "clean_record",
           "detect_alerts", "detect_overfitting", "follow", "notebook_dashboard", "plot_run", "process_alive",
           "render_rich", "smooth", "snapshot_lines"]
