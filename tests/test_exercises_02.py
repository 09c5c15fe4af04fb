"""The checks of exercises/02_training_pipeline.ipynb, tested: each rejects plausible wrong answers (the bugs the
lesson warns about) and accepts a correct answer written differently from the solution. In-process: the notebook's
cells are executed with the answer substituted for the exercise cell, then the check cell runs (no kernel per case)."""
from __future__ import annotations

import pytest

from exercise_checks import SOLUTIONS, Exercises, rejects

NOTEBOOK = SOLUTIONS / "02_training_pipeline.ipynb"


@pytest.fixture(scope="module")
def notebook() -> Exercises:
    return Exercises(NOTEBOOK)


def test_the_solutions_pass(notebook: Exercises):
    assert len(notebook.exercises) >= 4
    for number in range(1, len(notebook.exercises) + 1):
        notebook.check(number)


# ------------------------------------------------------------------------------------ 1. accumulation
STEP = """
def train_step(model, micro_batches, optimizer, loss_fn):
    {train}
    {zero}
    total = 0.0
    for xb, yb in micro_batches:
        loss = loss_fn(model(xb), yb)
        ({scaled}).backward()
        total += loss.item()
        {inner_step}
    {outer_step}
    return total / len(micro_batches)
"""
GOOD = dict(train="model.train()", zero="optimizer.zero_grad()", scaled="loss / len(micro_batches)", inner_step="",
            outer_step="optimizer.step()")
STEP_WRONG = {
    "no-zero-grad": {**GOOD, "zero": ""},
    "no-train-mode": {**GOOD, "train": ""},
    "not-divided": {**GOOD, "scaled": "loss"},
    "step-per-micro-batch": {**GOOD, "inner_step": "optimizer.step()", "outer_step": ""},
    "zero-grad-at-the-end": {**GOOD, "zero": "", "outer_step": "optimizer.step(); optimizer.zero_grad()"},
}


@pytest.mark.parametrize("name", list(STEP_WRONG))
def test_step_check_rejects(notebook, name):
    rejects(notebook, 1, STEP.format(**STEP_WRONG[name]))


def test_step_check_rejects_the_loss_after_the_update(notebook):
    answer = STEP.format(**GOOD).replace("    return total / len(micro_batches)",
                                         "    return sum(loss_fn(model(xb), yb).item() for xb, yb in micro_batches) / len(micro_batches)")
    assert "returned loss" in rejects(notebook, 1, answer)


def test_step_check_accepts_one_backward_of_the_mean(notebook):
    notebook.check(1, """
    def train_step(model, micro_batches, optimizer, loss_fn):
        model.train()
        for p in model.parameters():
            p.grad = None
        losses = torch.stack([loss_fn(model(xb), yb) for xb, yb in micro_batches])
        losses.mean().backward()
        optimizer.step()
        return float(losses.detach().mean())
    """)


# ------------------------------------------------------------------------------------ 2. checkpoint
CHECKPOINT = """
def make_checkpoint(model, optimizer, scheduler, epoch):
    return {{"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "rng": torch.get_rng_state()}}

def restore(payload, model, optimizer, scheduler):
    model.load_state_dict(payload["model"])
    {optimizer}
    {scheduler}
    {rng}
    return {epoch}
"""
RESTORE_OK = dict(optimizer='optimizer.load_state_dict(payload["optimizer"])',
                  scheduler='scheduler.load_state_dict(payload["scheduler"])', rng='torch.set_rng_state(payload["rng"])',
                  epoch='payload["epoch"]')
CHECKPOINT_WRONG = {
    "no-optimizer-state": {**RESTORE_OK, "optimizer": ""},
    "no-scheduler-state": {**RESTORE_OK, "scheduler": ""},
    "no-rng-state": {**RESTORE_OK, "rng": ""},
    "next-epoch-off-by-one": {**RESTORE_OK, "epoch": 'payload["epoch"] + 1'},
}


@pytest.mark.parametrize("name", list(CHECKPOINT_WRONG))
def test_checkpoint_check_rejects(notebook, name):
    rejects(notebook, 2, CHECKPOINT.format(**CHECKPOINT_WRONG[name]))


def test_checkpoint_check_accepts_copies_and_extra_keys(notebook):
    notebook.check(2, """
    import copy

    def make_checkpoint(model, optimizer, scheduler, epoch):
        state = {"weights": model, "opt": optimizer, "sched": scheduler}
        payload = {key: copy.deepcopy(part.state_dict()) for key, part in state.items()}
        payload.update(epochs_done=epoch, torch_rng=torch.get_rng_state().clone(), note="after epoch %d" % epoch)
        return payload

    def restore(payload, model, optimizer, scheduler):
        for key, part in (("weights", model), ("opt", optimizer), ("sched", scheduler)):
            part.load_state_dict(payload[key])
        torch.set_rng_state(payload["torch_rng"])
        return int(payload["epochs_done"])
    """)


# ------------------------------------------------------------------------------------ 3. early stopping
STOP_WRONG = {
    "against-the-previous-epoch": """
def should_stop(history, patience, mode="min"):
    if patience <= 0 or len(history) <= patience:
        return False
    worse = (lambda a, b: a >= b) if mode == "min" else (lambda a, b: a <= b)
    return all(worse(history[i], history[i - 1]) for i in range(len(history) - patience, len(history)))
""",
    "strictly-more-than-patience": """
def should_stop(history, patience, mode="min"):
    if patience <= 0 or not history:
        return False
    best = (min if mode == "min" else max)(range(len(history)), key=history.__getitem__)
    return len(history) - 1 - best > patience
""",
    "ties-count-as-improvement": """
def should_stop(history, patience, mode="min"):
    if patience <= 0 or not history:
        return False
    target = min(history) if mode == "min" else max(history)
    best = max(i for i, v in enumerate(history) if v == target)
    return len(history) - 1 - best >= patience
""",
    "mode-ignored": """
def should_stop(history, patience, mode="min"):
    if patience <= 0 or not history:
        return False
    best = min(range(len(history)), key=history.__getitem__)
    return len(history) - 1 - best >= patience
""",
    "patience-zero-stops-at-once": """
def should_stop(history, patience, mode="min"):
    if not history:
        return False
    best = (min if mode == "min" else max)(range(len(history)), key=history.__getitem__)
    return len(history) - 1 - best >= patience
""",
}


@pytest.mark.parametrize("name", list(STOP_WRONG))
def test_stop_check_rejects(notebook, name):
    assert "expected" in rejects(notebook, 3, STOP_WRONG[name])


def test_stop_check_accepts_a_wait_counter(notebook):
    notebook.check(3, """
    def should_stop(history, patience, mode="min"):
        if patience == 0:
            return False
        best, wait = None, 0
        for value in history:
            better = best is None or (value < best if mode == "min" else value > best)
            best, wait = (value, 0) if better else (best, wait + 1)
        return bool(history) and wait >= patience
    """)


# ------------------------------------------------------------------------------------ 4. model + sink in the engine
ENGINE = """
def build(n_features, n_outputs, width=32):
    return nn.Sequential(nn.Linear(n_features, {width}), {activation}nn.Linear({width}, n_outputs))

class ValLossSink:
    def __init__(self):
        self.val_losses, self.steps, self.status = [], 0, None
    def log_dict(self, metrics, step, kind):
        if kind == "epoch":
            self.val_losses.append((metrics["epoch"], metrics["{metric}"]))
        {step_branch}
            self.steps += 1
    def log_event(self, record):
        pass
    def close(self, status):
        self.status = {status}

def train_with(data_dir, save_dir, sink):
    config = train.make_config(dict(data_dir=data_dir, save_dir=save_dir, epochs=3, batch_size=16,
                                    model_args={{"width": 24}}, mlflow=False, tensorboard=False, baselines=False,
                                    progress="off"))
    return train.run(config, model_fn=build, sinks={sinks}, log=lambda message: None)
"""
ENGINE_OK = dict(width="width", activation="nn.ReLU(), ", metric="val_loss", step_branch='elif kind == "step":',
                 status="status", sinks="[sink]")
ENGINE_WRONG = {
    # the parameter count of Linear -> ReLU -> Linear, but one affine map: the check must look at what it computes
    "no-nonlinearity": {**ENGINE_OK, "activation": ""},
    "another-activation": {**ENGINE_OK, "activation": "nn.Tanh(), "},
    "width-ignored": {**ENGINE_OK, "width": "32"},
    "train-loss-recorded": {**ENGINE_OK, "metric": "train_loss"},
    "every-record-counted-as-a-step": {**ENGINE_OK, "step_branch": "else:"},
    "sink-not-passed": {**ENGINE_OK, "sinks": "[]"},
}


@pytest.mark.parametrize("name", list(ENGINE_WRONG))
def test_engine_check_rejects(notebook, name):
    rejects(notebook, 4, ENGINE.format(**ENGINE_WRONG[name]))


def test_engine_check_says_a_network_without_activation_is_affine(notebook):
    assert "affine" in rejects(notebook, 4, ENGINE.format(**ENGINE_WRONG["no-nonlinearity"]))


def test_engine_check_accepts_a_module_class_and_a_dict_sink(notebook):
    notebook.check(4, """
    class Net(nn.Module):
        def __init__(self, n_features, n_outputs, width):
            super().__init__()
            self.hidden, self.out = nn.Linear(n_features, width), nn.Linear(width, n_outputs)
        def forward(self, x):                      # (batch, n_features) -> (batch, n_outputs)
            return self.out(torch.relu(self.hidden(x)))

    def build(n_features, n_outputs, width=32):
        return Net(n_features, n_outputs, width)

    class ValLossSink:
        def __init__(self):
            self.val_losses, self.steps, self.status = [], 0, None
            self.by_kind = {}
        def log_dict(self, metrics, step, kind):
            self.by_kind.setdefault(kind, []).append(metrics)
            self.val_losses = [(m["epoch"], m["val_loss"]) for m in self.by_kind.get("epoch", [])]
            self.steps = len(self.by_kind.get("step", []))
        def log_event(self, record):
            return None
        def close(self, status):
            self.status = status

    def train_with(data_dir, save_dir, sink):
        settings = {"data_dir": str(data_dir), "save_dir": str(save_dir), "epochs": 3, "batch_size": 16,
                    "model_args": {"width": 24}, "mlflow": False, "tensorboard": False, "baselines": False,
                    "system_interval": 0, "progress": "off"}
        return train.run(train.make_config(settings), model_fn=build, sinks=(sink,), log=lambda message: None)
    """)


# ------------------------------------------------------------------------------------ 5. MLflow
# The store holds runs logged as the engine logs them: per-epoch val_loss/val_accuracy, then best_epoch,
# best_val_loss and best_val_accuracy (the epoch each run kept). The right answer ranks by best_<metric>.
BEST = """
def best_run(tracking_uri, experiment, metric, higher_is_better):
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs({where}{finished}order_by=[f"metrics.{name} {{'DESC' if higher_is_better else 'ASC'}}"])
    return runs.iloc[0]["run_id"]
"""
BEST_OK = dict(where="experiment_names=[experiment], ", finished="filter_string=\"attributes.status = 'FINISHED'\", ",
               name="best_{metric}")
BEST_WRONG = {
    # the old answer of this exercise: metrics.<metric> is the LAST epoch's value; lr=0.01 kept 0.30 and loses
    "the-last-value": BEST.format(**{**BEST_OK, "name": "{metric}"}),
    "failed-runs-count": BEST.format(**{**BEST_OK, "finished": ""}),
    "every-experiment": BEST.format(**{**BEST_OK, "where": "search_all_experiments=True, "}),
    "always-ascending": """
def best_run(tracking_uri, experiment, metric, higher_is_better):
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'",
                              order_by=[f"metrics.best_{metric} ASC"])
    return runs.iloc[0]["run_id"]
""",
    # the best value of any epoch is not the kept epoch's: lr=0.01's highest accuracy (0.84) is its last epoch's
    "best-value-ever-logged": """
def best_run(tracking_uri, experiment, metric, higher_is_better):
    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'")
    pick = max if higher_is_better else min
    score = lambda r: pick(m.value for m in client.get_metric_history(r.info.run_id, metric))
    return pick(runs, key=score).info.run_id
""",
}


def test_the_right_answer_is_the_template_with_best_names(notebook):
    notebook.check(5, BEST.format(**BEST_OK))


@pytest.mark.parametrize("name", list(BEST_WRONG))
def test_best_run_check_rejects(notebook, name):
    rejects(notebook, 5, BEST_WRONG[name])


def test_best_run_check_rejects_ranking_by_the_last_value(notebook):
    """In the check's own store the run that reached val_loss 0.30 (and ended at 0.40) is the best: the answer that
    ranks by the last value picks the 0.35 run, and the check must say so."""
    message = rejects(notebook, 5, BEST_WRONG["the-last-value"])
    assert "expected lr=0.01" in message and "got lr=0.001" in message, message


def test_best_run_check_accepts_the_client_api(notebook):
    notebook.check(5, """
    def best_run(tracking_uri, experiment, metric, higher_is_better):
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        kept = f"best_{metric}"                    # the value of the epoch the run kept
        runs = [r for r in client.search_runs([found.experiment_id]) if r.info.status == "FINISHED" and kept in r.data.metrics]
        sign = 1 if higher_is_better else -1
        return max(runs, key=lambda r: sign * r.data.metrics[kept]).info.run_id
    """)


def test_best_run_check_accepts_the_kept_epoch_read_from_the_history(notebook):
    """Without the best_* metrics: find each run's kept epoch (lowest val_loss, the first on ties) in its history
    and read the metric there. Longer, but it ranks the same models."""
    notebook.check(5, """
    def best_run(tracking_uri, experiment, metric, higher_is_better):
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        scores = {}
        for run in client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'"):
            history = lambda name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
            losses = history("val_loss")
            kept = min(sorted(losses), key=losses.get)
            scores[run.info.run_id] = history(metric)[kept]
        return (max if higher_is_better else min)(scores, key=scores.get)
    """)
