"""The checks of exercises/05_performance.ipynb, tested in-process: each check must reject plausible wrong
answers (with a message saying what was expected and what came) and accept a correct answer written
differently from the solution. The notebook's cells are exec'd in order with the answer substituted."""
from __future__ import annotations

from exercise_checks import SOLUTIONS, standard_tests

NOTEBOOK = SOLUTIONS / "05_performance.ipynb"


WRONG = {
    1: {
        "times the warm-up calls too": """
            def measure(fn, repeats, warmup=1, clock=None):
                durations = []
                for _ in range(warmup + repeats):
                    t = clock()
                    fn()
                    durations.append(clock() - t)
                return min(durations)
            """,
        "the mean instead of the fastest": """
            def measure(fn, repeats, warmup=1, clock=None):
                for _ in range(warmup):
                    fn()
                durations = []
                for _ in range(repeats):
                    t = clock()
                    fn()
                    durations.append(clock() - t)
                return sum(durations) / len(durations)
            """,
        "the total of all repeats": """
            def measure(fn, repeats, warmup=1, clock=None):
                for _ in range(warmup):
                    fn()
                t = clock()
                for _ in range(repeats):
                    fn()
                return clock() - t
            """,
        "no warm-up at all": """
            def measure(fn, repeats, warmup=1, clock=None):
                durations = []
                for _ in range(repeats):
                    t = clock()
                    fn()
                    durations.append(clock() - t)
                return min(durations)
            """,
        "ignores the clock argument": """
            import time
            def measure(fn, repeats, warmup=1, clock=None):
                for _ in range(warmup):
                    fn()
                durations = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    fn()
                    durations.append(time.perf_counter() - t)
                return min(durations)
            """,
    },
    2: {
        "the fastest batch size (argmax), not the knee": """
            def knee_batch_size(epoch_seconds, n_rows, fraction=0.9):
                return max(epoch_seconds, key=lambda bs: n_rows / epoch_seconds[bs])
            """,
        "the first qualifying batch size in the dict's order": """
            def knee_batch_size(epoch_seconds, n_rows, fraction=0.9):
                peak = max(n_rows / s for s in epoch_seconds.values())
                return next(bs for bs, s in epoch_seconds.items() if n_rows / s >= fraction * peak)
            """,
        "counts whole batches (ceil(n_rows / bs) * bs samples)": """
            import math
            def knee_batch_size(epoch_seconds, n_rows, fraction=0.9):
                t = {bs: math.ceil(n_rows / bs) * bs / s for bs, s in epoch_seconds.items()}
                peak = max(t.values())
                return min(bs for bs, v in t.items() if v >= fraction * peak)
            """,
        "epoch time within (1 - fraction) of the fastest, instead of throughput within fraction": """
            def knee_batch_size(epoch_seconds, n_rows, fraction=0.9):
                fastest = min(epoch_seconds.values())
                return min(bs for bs, s in epoch_seconds.items() if s <= fastest * (2 - fraction))
            """,
    },
    3: {
        "substring match on the name": """
            from torch.profiler import ProfilerActivity, profile
            def count_calls(fn, op_name):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    fn()
                return sum(e.count for e in prof.key_averages() if op_name in e.key)
            """,
        "the number of distinct operators": """
            from torch.profiler import ProfilerActivity, profile
            def count_calls(fn, op_name):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    fn()
                return len([e for e in prof.key_averages() if e.key == op_name]) * len(prof.key_averages())
            """,
        "runs fn twice inside the profiler (a warm-up)": """
            from torch.profiler import ProfilerActivity, profile
            def count_calls(fn, op_name):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    fn()
                    fn()
                return sum(e.count for e in prof.key_averages() if e.key == op_name)
            """,
        "lines of the printed table that mention the name": """
            from torch.profiler import ProfilerActivity, profile
            def count_calls(fn, op_name):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    fn()
                return sum(op_name in line for line in prof.key_averages().table().splitlines())
            """,
    },
    4: {
        "the mean of the per-epoch samples_per_second": """
            def steady_throughput(records, train_rows, skip=1):
                epochs = [r for r in records if r["type"] == "epoch"][skip:]
                return sum(r["samples_per_second"] for r in epochs) / len(epochs) if epochs else None
            """,
        "ignores skip (the first epoch included)": """
            def steady_throughput(records, train_rows, skip=1):
                epochs = [r for r in records if r["type"] == "epoch"]
                return train_rows * len(epochs) / sum(r["epoch_seconds"] for r in epochs) if epochs else None
            """,
        "skips the first records, not the first epoch records": """
            def steady_throughput(records, train_rows, skip=1):
                epochs = [r for r in records[skip:] if r["type"] == "epoch"]
                return train_rows * len(epochs) / sum(r["epoch_seconds"] for r in epochs) if epochs else None
            """,
        "the mean of rows / epoch_seconds": """
            def steady_throughput(records, train_rows, skip=1):
                epochs = [r for r in records if r["type"] == "epoch"][skip:]
                return sum(train_rows / r["epoch_seconds"] for r in epochs) / len(epochs) if epochs else None
            """,
    },
}

RIGHT = {
    1: {
        "sorted durations, a list comprehension": """
            def measure(fn, repeats, warmup=1, clock=None):
                [fn() for _ in range(warmup)]
                def once():
                    start = clock()
                    fn()
                    return clock() - start
                return sorted(once() for _ in range(repeats))[0]
            """,
    },
    2: {
        "in seconds: within 1 / fraction of the fastest epoch": """
            def knee_batch_size(epoch_seconds, n_rows, fraction=0.9):
                fastest = min(epoch_seconds.values())
                return sorted(bs for bs, s in epoch_seconds.items() if s <= fastest / fraction)[0]
            """,
        "sorted by batch size, first that qualifies": """
            def knee_batch_size(epoch_seconds, n_rows, fraction=0.9):
                rates = sorted((bs, n_rows / s) for bs, s in epoch_seconds.items())
                peak = max(rate for _, rate in rates)
                for bs, rate in rates:
                    if rate >= fraction * peak:
                        return bs
            """,
    },
    3: {
        "counting the raw events": """
            import torch.profiler
            def count_calls(fn, op_name):
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    fn()
                return sum(1 for event in prof.events() if event.name == op_name)
            """,
    },
    4: {
        "an explicit loop": """
            def steady_throughput(records, train_rows, skip=1):
                seen, seconds, epochs = 0, 0.0, 0
                for r in records:
                    if r.get("type") != "epoch":
                        continue
                    seen += 1
                    if seen > skip:
                        seconds += r["epoch_seconds"]
                        epochs += 1
                return train_rows * epochs / seconds if epochs else None
            """,
    },
}


(test_the_solution_passes_its_check, test_a_wrong_answer_is_rejected,
 test_a_correct_answer_written_differently_is_accepted, test_the_unsolved_stub_fails_with_a_friendly_message,
 test_every_exercise_has_a_hint_and_is_tested) = standard_tests(NOTEBOOK, WRONG, RIGHT)
