"""The checks of exercises/04_reporting.ipynb, tested in-process: each check must reject plausible wrong
answers (with a message saying what was expected and what came) and accept a correct answer written
differently from the solution. The notebook's cells are exec'd in order with the answer substituted."""
from __future__ import annotations

from exercise_checks import SOLUTIONS, standard_tests

NOTEBOOK = SOLUTIONS / "04_reporting.ipynb"


SCORES = """
    import numpy as np
    def per_class_scores(m):
        d = np.diag(m).astype(float)
        p = np.divide(d, {p_axis}, out=np.zeros_like(d), where={p_axis} > 0)
        r = np.divide(d, {r_axis}, out=np.zeros_like(d), where={r_axis} > 0)
        f = {f1}
        return {{"precision": p, "recall": r, "f1": f}}
    """
HARMONIC = "np.divide(2 * p * r, p + r, out=np.zeros_like(d), where=p + r > 0)"
SECTION = """
    import base64, html, io
    import matplotlib.pyplot as plt
    def figure_section(title, figure):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="{fmt}")
        {close}
        data = {data}
        name = {name}
        return f'<section><h2>{{name}}</h2><img alt="{{name}}" src="data:image/png;base64,{{data}}"></section>'
    """
GOOD_SECTION = dict(fmt="png", close="plt.close(figure)", data='base64.b64encode(buffer.getvalue()).decode("ascii")',
                    name="html.escape(title)")
GAP = """
    def generalisation_gap(records):
        gaps = [(r["epoch"], {gap}) for r in records]
        best = min(records, key=lambda r: r["val_loss"])
        last, previous = records[-1], records[-2] if len(records) > 1 else records[-1]
        return gaps, "overfitting" if {rule} else "ok"
    """
GOOD_GAP = dict(gap='r["val_loss"] - r["train_loss"]',
                rule='last["val_loss"] > best["val_loss"] and last["train_loss"] < best["train_loss"]')

WRONG = {
    1: {
        "precision and recall swapped (rows for columns)": SCORES.format(p_axis="m.sum(axis=1)", r_axis="m.sum(axis=0)",
                                                                         f1=HARMONIC),
        "NaN where nothing was predicted": """
            import numpy as np
            def per_class_scores(m):
                d = np.diag(m).astype(float)
                with np.errstate(all="ignore"):
                    p, r = d / m.sum(axis=0), d / m.sum(axis=1)
                    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r)}
            """,
        "F1 as the arithmetic mean": SCORES.format(p_axis="m.sum(axis=0)", r_axis="m.sum(axis=1)", f1="(p + r) / 2"),
        "integer division of counts": """
            import numpy as np
            def per_class_scores(m):
                d = np.diag(m)
                p = np.where(m.sum(axis=0) > 0, d // np.maximum(m.sum(axis=0), 1), 0)
                r = np.where(m.sum(axis=1) > 0, d // np.maximum(m.sum(axis=1), 1), 0)
                f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1), 0)
                return {"precision": p, "recall": r, "f1": f}
            """,
    },
    2: {
        "the position in the list instead of the epoch number": """
            def best_epoch(records, metric, higher_is_better):
                present = [(i, r) for i, r in enumerate(records) if r.get(metric) is not None]
                if not present:
                    return None
                pick = max if higher_is_better else min
                return pick(present, key=lambda ir: ir[1][metric])[0] + 1
            """,
        "always the lowest (ignores the direction)": """
            def best_epoch(records, metric, higher_is_better):
                present = [r for r in records if r.get(metric) is not None]
                return min(present, key=lambda r: r[metric])["epoch"] if present else None
            """,
        "the latest of equal values (<= instead of <)": """
            def best_epoch(records, metric, higher_is_better):
                best = None
                for r in records:
                    v = r.get(metric)
                    if v is None:
                        continue
                    if best is None or (v >= best[metric] if higher_is_better else v <= best[metric]):
                        best = r
                return best["epoch"] if best else None
            """,
        "the best value instead of its epoch": """
            def best_epoch(records, metric, higher_is_better):
                values = [r[metric] for r in records if r.get(metric) is not None]
                return (max if higher_is_better else min)(values) if values else None
            """,
    },
    3: {
        "last val_loss against the previous epoch, not the best": GAP.format(
            gap=GOOD_GAP["gap"], rule='last["val_loss"] > previous["val_loss"] and last["train_loss"] < best["train_loss"]'),
        "the gap with its sign reversed": GAP.format(gap='r["train_loss"] - r["val_loss"]', rule=GOOD_GAP["rule"]),
        "ignores the training loss": GAP.format(gap=GOOD_GAP["gap"], rule='last["val_loss"] > best["val_loss"]'),
        ">= the best (a tie counts as worse)": GAP.format(
            gap=GOOD_GAP["gap"], rule='last["val_loss"] >= best["val_loss"] and last["train_loss"] < best["train_loss"]'),
    },
    4: {
        "bytes formatted into the f-string (b'...')": SECTION.format(**{**GOOD_SECTION, "data": "base64.b64encode(buffer.getvalue())"}),
        "the title not escaped": SECTION.format(**{**GOOD_SECTION, "name": "title"}),
        "the figure left open": SECTION.format(**{**GOOD_SECTION, "close": "pass"}),
        "plt.close(): the current figure, not the section's": SECTION.format(**{**GOOD_SECTION, "close": "plt.close()"}),
        "plt.close('all'): every figure, not only the section's": SECTION.format(
            **{**GOOD_SECTION, "close": "plt.close('all')"}),
        "an SVG labelled as PNG": SECTION.format(**{**GOOD_SECTION, "fmt": "svg"}),
    },
    5: {
        "ties reversed (argsort ascending, then [::-1])": """
            def top_confusions(matrix, names, k=10):
                matrix = np.asarray(matrix)
                off = matrix.copy()
                np.fill_diagonal(off, 0)
                rows_i, cols_j = np.nonzero(off)
                order = np.argsort(off[rows_i, cols_j], kind='stable')[::-1][:k]
                totals = matrix.sum(axis=1)
                body = ""
                for i, j in zip(rows_i[order], cols_j[order]):
                    count = int(off[i, j])
                    body += (f"<tr><td>{html.escape(names[i])}</td><td>{html.escape(names[j])}</td>"
                             f"<td>{count}</td><td>{100 * count / totals[i]:.1f}%</td></tr>")
                head = "<tr><th>true class</th><th>predicted as</th><th>rows</th><th>share of true class</th></tr>"
                return f'<table class="grid">{head}{body}</table>'
            """,
        "the diagonal left in": """
            def top_confusions(matrix, names, k=10):
                matrix = np.asarray(matrix)
                off = matrix.copy()
                pass
                rows_i, cols_j = np.nonzero(off)
                order = np.argsort(-off[rows_i, cols_j], kind="stable")[:k]
                totals = matrix.sum(axis=1)
                body = ""
                for i, j in zip(rows_i[order], cols_j[order]):
                    count = int(off[i, j])
                    body += (f"<tr><td>{html.escape(names[i])}</td><td>{html.escape(names[j])}</td>"
                             f"<td>{count}</td><td>{100 * count / totals[i]:.1f}%</td></tr>")
                head = "<tr><th>true class</th><th>predicted as</th><th>rows</th><th>share of true class</th></tr>"
                return f'<table class="grid">{head}{body}</table>'
            """,
        "share of the predicted class (column sum)": """
            def top_confusions(matrix, names, k=10):
                matrix = np.asarray(matrix)
                off = matrix.copy()
                np.fill_diagonal(off, 0)
                rows_i, cols_j = np.nonzero(off)
                order = np.argsort(-off[rows_i, cols_j], kind="stable")[:k]
                totals = matrix.sum(axis=0)
                body = ""
                for i, j in zip(rows_i[order], cols_j[order]):
                    count = int(off[i, j])
                    body += (f"<tr><td>{html.escape(names[i])}</td><td>{html.escape(names[j])}</td>"
                             f"<td>{count}</td><td>{100 * count / totals[j]:.1f}%</td></tr>")
                head = "<tr><th>true class</th><th>predicted as</th><th>rows</th><th>share of true class</th></tr>"
                return f'<table class="grid">{head}{body}</table>'
            """,
        "share of all rows": """
            def top_confusions(matrix, names, k=10):
                matrix = np.asarray(matrix)
                off = matrix.copy()
                np.fill_diagonal(off, 0)
                rows_i, cols_j = np.nonzero(off)
                order = np.argsort(-off[rows_i, cols_j], kind="stable")[:k]
                totals = np.full(len(matrix), matrix.sum())
                body = ""
                for i, j in zip(rows_i[order], cols_j[order]):
                    count = int(off[i, j])
                    body += (f"<tr><td>{html.escape(names[i])}</td><td>{html.escape(names[j])}</td>"
                             f"<td>{count}</td><td>{100 * count / totals[i]:.1f}%</td></tr>")
                head = "<tr><th>true class</th><th>predicted as</th><th>rows</th><th>share of true class</th></tr>"
                return f'<table class="grid">{head}{body}</table>'
            """,
        "names not escaped": """
            def top_confusions(matrix, names, k=10):
                matrix = np.asarray(matrix)
                off = matrix.copy()
                np.fill_diagonal(off, 0)
                rows_i, cols_j = np.nonzero(off)
                order = np.argsort(-off[rows_i, cols_j], kind="stable")[:k]
                totals = matrix.sum(axis=1)
                body = ""
                for i, j in zip(rows_i[order], cols_j[order]):
                    count = int(off[i, j])
                    body += (f"<tr><td>{names[i]}</td><td>{names[j]}</td>"
                             f"<td>{count}</td><td>{100 * count / totals[i]:.1f}%</td></tr>")
                head = "<tr><th>true class</th><th>predicted as</th><th>rows</th><th>share of true class</th></tr>"
                return f'<table class="grid">{head}{body}</table>'
            """,
        "zero counts listed up to k": """
            def top_confusions(matrix, names, k=10):
                matrix = np.asarray(matrix)
                off = matrix.copy()
                np.fill_diagonal(off, 0)
                rows_i, cols_j = np.nonzero(np.ones_like(off) - np.eye(len(off), dtype=off.dtype))
                order = np.argsort(-off[rows_i, cols_j], kind="stable")[:k]
                totals = matrix.sum(axis=1)
                body = ""
                for i, j in zip(rows_i[order], cols_j[order]):
                    count = int(off[i, j])
                    body += (f"<tr><td>{html.escape(names[i])}</td><td>{html.escape(names[j])}</td>"
                             f"<td>{count}</td><td>{100 * count / totals[i]:.1f}%</td></tr>")
                head = "<tr><th>true class</th><th>predicted as</th><th>rows</th><th>share of true class</th></tr>"
                return f'<table class="grid">{head}{body}</table>'
            """,
        "true and predicted swapped": """
            def top_confusions(matrix, names, k=10):
                matrix = np.asarray(matrix)
                off = matrix.copy()
                np.fill_diagonal(off, 0)
                rows_i, cols_j = np.nonzero(off)
                order = np.argsort(-off[rows_i, cols_j], kind="stable")[:k]
                totals = matrix.sum(axis=1)
                body = ""
                for i, j in zip(rows_i[order], cols_j[order]):
                    count = int(off[i, j])
                    body += (f"<tr><td>{html.escape(names[j])}</td><td>{html.escape(names[i])}</td>"
                             f"<td>{count}</td><td>{100 * count / totals[j]:.1f}%</td></tr>")
                head = "<tr><th>true class</th><th>predicted as</th><th>rows</th><th>share of true class</th></tr>"
                return f'<table class="grid">{head}{body}</table>'
            """,
    },
}

RIGHT = {
    1: {
        "with NumPy's errstate and nan_to_num": """
            import numpy as np
            def per_class_scores(m):
                m = np.asarray(m, dtype=float)
                with np.errstate(divide="ignore", invalid="ignore"):
                    p = np.nan_to_num(np.diag(m) / m.sum(axis=0))
                    r = np.nan_to_num(np.diag(m) / m.sum(axis=1))
                    f = np.nan_to_num(2 / (1 / p + 1 / r))
                return {"precision": p, "recall": r, "f1": f}
            """,
        "scikit-learn from the expanded labels": """
            import numpy as np
            from sklearn.metrics import precision_recall_fscore_support
            def per_class_scores(m):
                true = np.repeat(np.arange(len(m)), m.sum(axis=1))
                pred = np.concatenate([np.repeat(np.arange(len(m)), row) for row in m])
                p, r, f, _ = precision_recall_fscore_support(true, pred, labels=np.arange(len(m)), zero_division=0)
                return {"precision": p, "recall": r, "f1": f}
            """,
    },
    2: {
        "a loop with metrics.is_better": """
            from pipeline import metrics
            def best_epoch(records, metric, higher_is_better):
                best, value = None, None
                for r in records:
                    v = r.get(metric)
                    if v is None:
                        continue
                    if value is None or (v > value if higher_is_better else v < value):
                        best, value = r["epoch"], v
                return best
            """,
        "sorted with a stable sort": """
            def best_epoch(records, metric, higher_is_better):
                present = [r for r in records if r.get(metric) is not None]
                sign = -1 if higher_is_better else 1
                return sorted(present, key=lambda r: sign * r[metric])[0]["epoch"] if present else None
            """,
    },
    3: {
        "with NumPy arrays": """
            import numpy as np
            def generalisation_gap(records):
                t = np.array([r["train_loss"] for r in records])
                v = np.array([r["val_loss"] for r in records])
                b = int(np.argmin(v))
                gaps = list(zip([r["epoch"] for r in records], (v - t).tolist()))
                return gaps, ("overfitting" if v[-1] > v[b] and t[-1] < t[b] else "ok")
            """,
    },
    4: {
        "through the package's figure_html": """
            import html
            from pipeline import report
            def figure_section(title, figure):
                return f"<section><h2>{html.escape(title)}</h2>{report.figure_html(figure, title)}</section>"
            """,
    },
    5: {
        "sorted Python tuples into the package's report.table": """
            import numpy as np
            from pipeline import report
            def top_confusions(matrix, names, k=10):
                m = np.asarray(matrix)
                cells = sorted((-int(m[i, j]), i, j) for i in range(len(m)) for j in range(len(m)) if i != j and m[i, j] > 0)
                rows = [(names[i], names[j], -c, f"{-100 * c / m[i].sum():.1f}%") for c, i, j in cells[:k]]
                return report.table(rows, ("true class", "predicted as", "rows", "share of true class"), cls="grid")
            """,
        "np.lexsort on (j, i, -count), shares rounded with round()": """
            import html
            import numpy as np
            def top_confusions(matrix, names, k=10):
                m = np.array(matrix, dtype=np.int64)
                i, j = np.indices(m.shape)
                keep = (i != j) & (m > 0)
                i, j, c = i[keep], j[keep], m[keep]
                pick = np.lexsort((j, i, -c))[:k]
                cells = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in (html.escape(names[a]), html.escape(names[b]), n,
                                                                            f"{round(100 * n / m[a].sum(), 1)}%")) + "</tr>"
                                for a, b, n in zip(i[pick], j[pick], c[pick]))
                return ('<table class="grid"><tr><th>true class</th><th>predicted as</th><th>rows</th>'
                        "<th>share of true class</th></tr>" + cells + "</table>")
            """,
    },
}


(test_the_solution_passes_its_check, test_a_wrong_answer_is_rejected,
 test_a_correct_answer_written_differently_is_accepted, test_the_unsolved_stub_fails_with_a_friendly_message,
 test_every_exercise_has_a_hint_and_is_tested) = standard_tests(NOTEBOOK, WRONG, RIGHT)
