"""The checks of exercises/03_monitoring.ipynb, tested in-process: each check must reject plausible wrong
answers (with a message saying what was expected and what came) and accept a correct answer written
differently from the solution. The notebook's cells are exec'd in order with the answer substituted."""
from __future__ import annotations

from exercise_checks import SOLUTIONS, standard_tests

NOTEBOOK = SOLUTIONS / "03_monitoring.ipynb"


WRONG = {
    1: {
        "weights swapped (alpha on the previous value)": """
            def smooth(values, alpha):
                out = []
                for v in values:
                    out.append(v if not out else (1 - alpha) * v + alpha * out[-1])
                return out
            """,
        "starts from 0 instead of the first value": """
            def smooth(values, alpha):
                out, prev = [], 0.0
                for v in values:
                    prev = alpha * v + (1 - alpha) * prev
                    out.append(prev)
                return out
            """,
        "uses the previous raw value, not the previous smoothed one": """
            def smooth(values, alpha):
                return [v if i == 0 else alpha * v + (1 - alpha) * values[i - 1] for i, v in enumerate(values)]
            """,
        "a running mean": """
            def smooth(values, alpha):
                return [sum(values[:i + 1]) / (i + 1) for i in range(len(values))]
            """,
    },
    2: {
        "ignores the training loss": """
            def is_overfitting(epochs, patience=3):
                if not epochs:
                    return False
                best = min(epochs, key=lambda e: e["val_loss"])
                return len([e for e in epochs if e["epoch"] > best["epoch"]]) >= patience
            """,
        "off by one (patience - 1 epochs suffice)": """
            def is_overfitting(epochs, patience=3):
                if not epochs:
                    return False
                best = min(epochs, key=lambda e: e["val_loss"])
                since = [e for e in epochs if e["epoch"] > best["epoch"]]
                return len(since) >= patience - 1 and epochs[-1]["train_loss"] < best["train_loss"]
            """,
        "a strict streak of rising validation loss (the old rule)": """
            def is_overfitting(epochs, patience=3):
                if len(epochs) < patience + 1:
                    return False
                t = [e["train_loss"] for e in epochs][-(patience + 1):]
                v = [e["val_loss"] for e in epochs][-(patience + 1):]
                return all(v[i + 1] > v[i] and t[i + 1] < t[i] for i in range(patience))
            """,
        "the latest of equal bests": """
            def is_overfitting(epochs, patience=3):
                if not epochs:
                    return False
                low = min(e["val_loss"] for e in epochs)
                best = [e for e in epochs if e["val_loss"] == low][-1]
                since = [e for e in epochs if e["epoch"] > best["epoch"]]
                return len(since) >= patience and epochs[-1]["train_loss"] < best["train_loss"]
            """,
        "the epoch position instead of the epoch number (fails on a resumed log)": """
            def is_overfitting(epochs, patience=3):
                if not epochs:
                    return False
                best = min(epochs, key=lambda e: e["val_loss"])
                since = len(epochs) - best["epoch"]
                return since >= patience and epochs[-1]["train_loss"] < best["train_loss"]
            """,
    },
    3: {
        "consumes the half-written last line (offset = end of file)": """
            import json
            def read_new_records(path, offset):
                try:
                    data = open(path, "rb").read()
                except FileNotFoundError:
                    return [], offset
                records = []
                for line in data[offset:].splitlines():
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        pass
                return records, len(data)
            """,
        "counts characters instead of bytes": """
            import json
            def read_new_records(path, offset):
                try:
                    text = open(path, encoding="utf-8").read()
                except FileNotFoundError:
                    return [], offset
                chunk = text[offset:]
                complete = chunk[: chunk.rfind("\\n") + 1]
                return [json.loads(l) for l in complete.splitlines() if l.strip()], offset + len(complete)
            """,
        "reads from the start every time (duplicates)": """
            import json
            def read_new_records(path, offset):
                try:
                    data = open(path, "rb").read()
                except FileNotFoundError:
                    return [], offset
                complete = data[: data.rfind(b"\\n") + 1]
                return [json.loads(l) for l in complete.splitlines() if l.strip()], len(complete)
            """,
    },
    4: {
        "seconds per record instead of per step": """
            def is_stalled(records, now, factor=20.0, minimum_s=60.0):
                if not records or records[-1]["type"] == "status":
                    return False
                steps = [r for r in records if r["type"] == "step"]
                per = (steps[-1]["time"] - steps[0]["time"]) / (len(steps) - 1) if len(steps) >= 2 else 0.0
                return now - max(r["time"] for r in records) > max(minimum_s, factor * per)
            """,
        "min instead of max (no 60-second floor)": """
            def is_stalled(records, now, factor=20.0, minimum_s=60.0):
                if not records or records[-1]["type"] == "status":
                    return False
                steps = [r for r in records if r["type"] == "step"]
                per = ((steps[-1]["time"] - steps[0]["time"]) / (steps[-1]["step"] - steps[0]["step"])
                       if len(steps) >= 2 else 0.0)
                return now - max(r["time"] for r in records) > min(minimum_s, factor * per)
            """,
        ">= at the boundary": """
            def is_stalled(records, now, factor=20.0, minimum_s=60.0):
                if not records or records[-1]["type"] == "status":
                    return False
                steps = [r for r in records if r["type"] == "step"]
                per = ((steps[-1]["time"] - steps[0]["time"]) / (steps[-1]["step"] - steps[0]["step"])
                       if len(steps) >= 2 else 0.0)
                return now - max(r["time"] for r in records) >= max(minimum_s, factor * per)
            """,
        "silence since the last step record (ignores epoch records)": """
            def is_stalled(records, now, factor=20.0, minimum_s=60.0):
                if not records or records[-1]["type"] == "status":
                    return False
                steps = [r for r in records if r["type"] == "step"]
                per = ((steps[-1]["time"] - steps[0]["time"]) / (steps[-1]["step"] - steps[0]["step"])
                       if len(steps) >= 2 else 0.0)
                last = steps[-1]["time"] if steps else records[-1]["time"]
                return now - last > max(minimum_s, factor * per)
            """,
        "alerts on a finished run": """
            def is_stalled(records, now, factor=20.0, minimum_s=60.0):
                if not records:
                    return False
                steps = [r for r in records if r["type"] == "step"]
                per = ((steps[-1]["time"] - steps[0]["time"]) / (steps[-1]["step"] - steps[0]["step"])
                       if len(steps) >= 2 else 0.0)
                return now - max(r["time"] for r in records) > max(minimum_s, factor * per)
            """,
    },
    5: {
        "every sample, no window": """
            def input_bound(samples, now, window_s=30.0, gpu_below=30.0, cpu_above=90.0, min_samples=3):
                recent = [s for s in samples if True]
                if len(recent) < min_samples:
                    return False
                gpu = float(np.mean([g["util_percent"] for s in recent for g in s["gpus"]]))
                cpu = float(np.mean([s["cpu_percent"] for s in recent]))
                return gpu < gpu_below and cpu >= cpu_above
            """,
        "the window's start excluded (<, not <=)": """
            def input_bound(samples, now, window_s=30.0, gpu_below=30.0, cpu_above=90.0, min_samples=3):
                recent = [s for s in samples if now - window_s < s["time"] <= now]
                if len(recent) < min_samples:
                    return False
                gpu = float(np.mean([g["util_percent"] for s in recent for g in s["gpus"]]))
                cpu = float(np.mean([s["cpu_percent"] for s in recent]))
                return gpu < gpu_below and cpu >= cpu_above
            """,
        "a window of 30 s whatever window_s says": """
            def input_bound(samples, now, window_s=30.0, gpu_below=30.0, cpu_above=90.0, min_samples=3):
                recent = [s for s in samples if now - 30 <= s["time"] <= now]
                if len(recent) < min_samples:
                    return False
                gpu = float(np.mean([g["util_percent"] for s in recent for g in s["gpus"]]))
                cpu = float(np.mean([s["cpu_percent"] for s in recent]))
                return gpu < gpu_below and cpu >= cpu_above
            """,
        "GPU 0 only": """
            def input_bound(samples, now, window_s=30.0, gpu_below=30.0, cpu_above=90.0, min_samples=3):
                recent = [s for s in samples if now - window_s <= s["time"] <= now]
                if len(recent) < min_samples:
                    return False
                gpu = float(np.mean([s["gpus"][0]["util_percent"] for s in recent]))
                cpu = float(np.mean([s["cpu_percent"] for s in recent]))
                return gpu < gpu_below and cpu >= cpu_above
            """,
        "the last sample decides alone": """
            def input_bound(samples, now, window_s=30.0, gpu_below=30.0, cpu_above=90.0, min_samples=3):
                recent = [s for s in samples if s is samples[-1]]
                if not recent:
                    return False
                gpu = float(np.mean([g["util_percent"] for s in recent for g in s["gpus"]]))
                cpu = float(np.mean([s["cpu_percent"] for s in recent]))
                return gpu < gpu_below and cpu >= cpu_above
            """,
        "min_samples ignored": """
            def input_bound(samples, now, window_s=30.0, gpu_below=30.0, cpu_above=90.0, min_samples=3):
                recent = [s for s in samples if now - window_s <= s["time"] <= now]
                if not recent:
                    return False
                gpu = float(np.mean([g["util_percent"] for s in recent for g in s["gpus"]]))
                cpu = float(np.mean([s["cpu_percent"] for s in recent]))
                return gpu < gpu_below and cpu >= cpu_above
            """,
        "CPU strictly above (>, not >=)": """
            def input_bound(samples, now, window_s=30.0, gpu_below=30.0, cpu_above=90.0, min_samples=3):
                recent = [s for s in samples if now - window_s <= s["time"] <= now]
                if len(recent) < min_samples:
                    return False
                gpu = float(np.mean([g["util_percent"] for s in recent for g in s["gpus"]]))
                cpu = float(np.mean([s["cpu_percent"] for s in recent]))
                return gpu < gpu_below and cpu > cpu_above
            """,
        "GPU at most (<=, not <)": """
            def input_bound(samples, now, window_s=30.0, gpu_below=30.0, cpu_above=90.0, min_samples=3):
                recent = [s for s in samples if now - window_s <= s["time"] <= now]
                if len(recent) < min_samples:
                    return False
                gpu = float(np.mean([g["util_percent"] for s in recent for g in s["gpus"]]))
                cpu = float(np.mean([s["cpu_percent"] for s in recent]))
                return gpu <= gpu_below and cpu >= cpu_above
            """,
    },
}

RIGHT = {
    1: {
        "prev + alpha * (v - prev)": """
            def smooth(values, alpha):
                out = []
                for v in values:
                    out.append(v if not out else out[-1] + alpha * (v - out[-1]))
                return out
            """,
        "pandas ewm(adjust=False), as a NumPy array": """
            import pandas as pd
            def smooth(values, alpha):
                return pd.Series(values, dtype=float).ewm(alpha=alpha, adjust=False).mean().to_numpy() if alpha > 0 \\
                    else [values[0]] * len(values)
            """,
    },
    2: {
        "an explicit loop over the epochs": """
            def is_overfitting(epochs, patience=3):
                best = None
                for e in epochs:
                    if best is None or e["val_loss"] < best["val_loss"]:
                        best = e
                if best is None:
                    return False
                waited = sum(1 for e in epochs if e["epoch"] > best["epoch"])
                return bool(waited >= patience and epochs[-1]["train_loss"] < best["train_loss"])
            """,
        "the package's own rule": """
            from pipeline import metrics
            def is_overfitting(epochs, patience=3):
                return metrics.overfitting(epochs, "val_loss", patience) is not None
            """,
    },
    3: {
        "line by line with readline": """
            import json, os
            def read_new_records(path, offset):
                if not os.path.exists(path):
                    return [], offset
                records = []
                with open(path, "rb") as f:
                    f.seek(offset)
                    for line in iter(f.readline, b""):
                        if not line.endswith(b"\\n"):
                            break
                        offset += len(line)
                        if line.strip():
                            records.append(json.loads(line.decode("utf-8")))
                return records, offset
            """,
    },
    4: {
        "written with early returns": """
            def is_stalled(records, now, factor=20.0, minimum_s=60.0):
                if not records:
                    return False
                if records[-1]["type"] == "status":
                    return False
                steps = [(r["step"], r["time"]) for r in records if r["type"] == "step"]
                per = 0.0
                if len(steps) > 1:
                    (s0, t0), (s1, t1) = steps[0], steps[-1]
                    per = (t1 - t0) / (s1 - s0)
                limit = minimum_s if minimum_s > factor * per else factor * per
                return now - max(r["time"] for r in records) > limit
            """,
    },
    5: {
        "running sums, the window written as its complement": """
            def input_bound(samples, now, window_s=30.0, gpu_below=30.0, cpu_above=90.0, min_samples=3):
                n = cpu = gpu = readings = 0
                for s in samples:
                    if s["time"] < now - window_s or s["time"] > now:
                        continue
                    n += 1
                    cpu += s["cpu_percent"]
                    for g in s["gpus"]:
                        readings += 1
                        gpu += g["util_percent"]
                return n >= min_samples and gpu / readings < gpu_below and cpu / n >= cpu_above
            """,
        "pandas on the flattened readings": """
            import pandas as pd
            def input_bound(samples, now, window_s=30.0, gpu_below=30.0, cpu_above=90.0, min_samples=3):
                frame = pd.DataFrame(samples)
                recent = frame[frame["time"].between(now - window_s, now)]
                if len(recent) < min_samples:
                    return False
                utils = pd.Series([g["util_percent"] for gpus in recent["gpus"] for g in gpus], dtype=float)
                return bool(utils.mean() < gpu_below and recent["cpu_percent"].mean() >= cpu_above)
            """,
    },
}


(test_the_solution_passes_its_check, test_a_wrong_answer_is_rejected,
 test_a_correct_answer_written_differently_is_accepted, test_the_unsolved_stub_fails_with_a_friendly_message,
 test_every_exercise_has_a_hint_and_is_tested) = standard_tests(NOTEBOOK, WRONG, RIGHT)
