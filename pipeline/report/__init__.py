"""A standalone HTML training report, executed with papermill and rendered with nbconvert.

    python solutions/generate_report.py --metrics checkpoints/metrics.json --output training_report.html

`generate` runs the report notebook (`pipeline/templates/report.ipynb`) with the metrics path as a
papermill parameter, then renders it with a template that drops code cells and every script or font
from a CDN. Each section returns an HTML string: every value that came from data or config is
escaped, figures are embedded as PNG data URIs, so the file opens offline and cannot be injected into.

A metrics.json is checked field by field when it is loaded (`normalise`): a value of the wrong type (a string
where a number belongs) is left out and listed in the summary, never a traceback. Every section scales with
the run: above `MANY_CLASSES` classes the confusion matrix shows the largest classes without per-cell labels
and per-class tables show the extremes; curves are thinned to `MAX_POINTS` points.

    checks.py    metrics.json checked field by field (normalise), thin
    loading.py   RunData, load_metrics, load_run
    helpers.py   esc, fmt (the one number format), table, note, figure_html
    sections.py  verdict, summary, hyperparameters, data, events, reproducibility, comparison
    tuning.py    the tuning section (tuning.json from solutions/tune.py): history, importances, tuned trees
    charts.py    learning curves, learning rate, overfitting, test evaluation, throughput, system
    render.py    SECTIONS, show, generate (papermill + nbconvert), check_output
"""
from pipeline.report.charts import (confusion_figure, largest_classes, overfitting_analysis, per_class_table,
                                    section_learning_curves, section_learning_rate, section_overfitting,
                                    section_system, section_test, section_throughput)
from pipeline.report.checks import MANY_CLASSES, MAX_CURVES, MAX_POINTS, normalise, thin
from pipeline.report.helpers import COLOURS, esc, figure_html, fmt, headline_metric, note, table
from pipeline.report.loading import RunData, load_metrics, load_run
from pipeline.report.render import (SECTIONS, TEMPLATES, check_output, execute_report_notebook, generate,
                                    render_html, show)
from pipeline.report.sections import (BASELINE_NAMES, problems_note, section_comparison, section_data,
                                      section_events, section_hyperparameters, section_reproducibility,
                                      section_summary, section_worth_it, some_names)
from pipeline.report.tuning import load_tuning, section_tuning

__all__ = ["BASELINE_NAMES", "COLOURS", "MANY_CLASSES", "MAX_CURVES", "MAX_POINTS", "RunData", "SECTIONS", "TEMPLATES",
           "check_output", "confusion_figure", "esc", "execute_report_notebook", "figure_html", "fmt", "generate",
           "headline_metric", "largest_classes", "load_metrics", "load_tuning", "load_run", "normalise", "note",
           "overfitting_analysis", "per_class_table", "problems_note", "render_html", "section_comparison",
           "section_data", "section_events", "section_hyperparameters", "section_learning_curves",
           "section_learning_rate", "section_overfitting", "section_reproducibility", "section_summary",
           "section_system", "section_test", "section_throughput", "section_tuning", "section_worth_it", "show",
           "some_names", "table", "thin"]
