"""Benchmark: the engine against the general trainers a user might pick instead, on the same network and data.

    OMP_NUM_THREADS=1 python benchmarks/bench_peers.py [--rounds 3] [--epochs 4] [--rows 100000]

One table in memory (a prepared synthetic table: `--rows` training rows x 32 features, 3 classes), one network
(the plain MLP 256-256, dropout 0.1), batch 256, AdamW lr 1e-3, a validation pass every epoch, trained by:

- limit       a hand-written loop over in-memory tensors (shuffle, index_select, step): nothing to remove
- dataloader  the same loop fed by `DataLoader(TensorDataset(X, y), shuffle=True)`, the usual PyTorch idiom
- engine      `train.run` with every default on: MLflow (a temporary sqlite store), TensorBoard, JSONL logs,
              resource sampling every 2 s, a fsynced checkpoint every epoch
- lightning   `lightning.Trainer` with its defaults (its logger, a checkpoint per epoch) on a DataLoader;
              only the progress bar and the model summary are off (nobody reads them in a benchmark)
- skorch      `NeuralNetClassifier` with its defaults (per-epoch scoring and timing) and our validation split

Per-epoch cost = wall time between consecutive epoch ends (the first epoch is warm-up). Every variant runs in
its own process with one torch thread, and the variants are interleaved round by round, so a busy neighbour
slows them all alike. The table gives throughput relative to the limit (1.0 = as fast as the hand-written
loop). Lightning and skorch come with `pip install -e '.[bench]'`; a peer that is not installed is skipped.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Each variant's child: trains `epochs` epochs and prints {"ends": [time.time() at each epoch end]}.
CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from pipeline import data, fileio, model as model_lib, train
kind, data_dir, work, epochs = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
BATCH, LR = 256, 1e-3
dataset = data.load_processed(data_dir)
X_np, y_np = dataset.arrays["train"]
Xv_np, yv_np = dataset.arrays["val"]
X, y, X_val, y_val = (torch.from_numpy(a) for a in (X_np, y_np, Xv_np, yv_np))
ends = []

def network():
    torch.manual_seed(0)
    return model_lib.build_mlp(X.shape[1], dataset.n_outputs, (256, 256), 0.1)

def validate(net, loss_fn):
    net.eval()
    with torch.inference_mode():
        total = sum(float(loss_fn(net(X_val[i:i + 4096]), y_val[i:i + 4096])) for i in range(0, len(X_val), 4096))
    net.train()
    return total

if kind == "engine":
    config = train.make_config(dict(data_dir=data_dir, save_dir=str(work / kind), epochs=epochs, batch_size=BATCH,
        learning_rate=LR, hidden_sizes="256,256", dropout=0.1, resume="never", progress="off",
        early_stopping_patience=0, tracking_uri=f"sqlite:///{work / 'mlflow.db'}"))
    train.run(config, log=lambda m: None)
    ends = [r["time"] for r in fileio.read_jsonl(work / kind / "logs" / "metrics.jsonl") if r["type"] == "epoch"]
elif kind in ("limit", "dataloader"):
    net = network()
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    for epoch in range(epochs):
        net.train()
        if kind == "limit":
            perm = torch.randperm(len(X))
            batches = ((X.index_select(0, idx), y.index_select(0, idx))
                       for idx in (perm[s:s + BATCH] for s in range(0, len(X), BATCH)))
        else:
            batches = loader
        for xb, yb in batches:
            loss = loss_fn(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        validate(net, loss_fn)
        ends.append(time.time())
elif kind == "lightning":
    import logging
    import lightning as L
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self.loss_fn = network(), torch.nn.CrossEntropyLoss()
        def training_step(self, batch, batch_idx):
            xb, yb = batch
            loss = self.loss_fn(self.net(xb), yb)
            self.log("train_loss", loss)
            return loss
        def validation_step(self, batch, batch_idx):
            xb, yb = batch
            self.log("val_loss", self.loss_fn(self.net(xb), yb))
        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=LR)

    class Clock(L.Callback):
        def on_train_epoch_end(self, trainer, module):  # after this epoch's validation
            ends.append(time.time())

    train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    val_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X_val, y_val), batch_size=4096)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, default_root_dir=str(work / kind),
                        callbacks=[Clock()], enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Module(), train_loader, val_loader)
elif kind == "skorch":
    import skorch
    from skorch.helper import predefined_split

    class Clock(skorch.callbacks.Callback):
        def on_epoch_end(self, net, **kwargs):
            ends.append(time.time())

    classifier = skorch.NeuralNetClassifier(network(), criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.AdamW, lr=LR, batch_size=BATCH, max_epochs=epochs, iterator_train__shuffle=True,
        train_split=predefined_split(skorch.dataset.Dataset(Xv_np, yv_np)), callbacks=[Clock()], verbose=0,
        device="cpu")
    classifier.fit(X_np, y_np)
print(json.dumps({"ends": ends}))
"""

VARIANTS = ("limit", "dataloader", "engine", "lightning", "skorch")
PEERS = {"lightning": "lightning", "skorch": "skorch"}


def make_data(base: Path, train_rows: int, features: int = 32) -> Path:
    """A prepared 3-class table with `train_rows` training rows (70/15/15 split)."""
    import pandas as pd

    from pipeline import data

    rows = int(round(train_rows / 0.7))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    label = (X @ rng.normal(size=(features, 3)) + rng.normal(scale=2.0, size=(rows, 3))).argmax(axis=1)
    frame = pd.DataFrame(X, columns=[f"f{i:02d}" for i in range(features)]).round(5)
    frame["label"] = np.array(["a", "b", "c"])[label]
    frame.to_csv(base / "table.csv", index=False)
    out = base / "prepared"
    result = data.prepare_dataset(base / "table.csv", out, test_split=0.15, val_split=0.15, seed=0)
    print(f"data: {result.schema['rows']} rows x {len(result.schema['features']['processed'])} features; "
          "MLP 256-256, batch 256, AdamW, one torch thread per variant")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="per run; the first is warm-up")
    parser.add_argument("--rows", type=int, default=200_000, help="training rows")
    parser.add_argument("--only", default="", help="comma-separated variants (the limit always runs)")
    args = parser.parse_args(argv)
    variants = [v for v in VARIANTS if not args.only or v == "limit" or v in args.only.split(",")]
    for peer, module in PEERS.items():
        if peer in variants and importlib.util.find_spec(module) is None:
            print(f"skipping {peer}: the {module} package is not installed (pip install -e '.[bench]')")
            variants.remove(peer)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    per_epoch: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = make_data(work, args.rows)
        for round_ in range(args.rounds):
            for kind in variants:
                run_dir = work / f"{kind}-{round_}"
                run_dir.mkdir()
                done = subprocess.run([sys.executable, "-c", CHILD, kind, str(data_dir), str(run_dir),
                                       str(args.epochs)], capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    sys.exit(f"{kind} failed:\n{done.stderr[-3000:]}")
                ends = json.loads(done.stdout.strip().splitlines()[-1])["ends"]
                if len(ends) != args.epochs:
                    sys.exit(f"{kind}: expected {args.epochs} epoch ends, got {len(ends)}")
                per_epoch[kind] += [b - a for a, b in zip(ends, ends[1:])]
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {statistics.median(v[-(args.epochs - 1):]):.3f}s"
                                                      for k, v in per_epoch.items()), flush=True)
    print_table(per_epoch, train_rows=args.rows)
    return 0


def print_table(per_epoch: dict[str, list[float]], *, train_rows: int) -> None:
    median = {k: statistics.median(v) for k, v in per_epoch.items()}
    best = {k: min(v) for k, v in per_epoch.items()}
    print(f"\n| variant    | s/epoch (median) | samples/s | throughput / limit (median) | (best epoch) |")
    print("|------------|------------------|-----------|-----------------------------|--------------|")
    for kind in per_epoch:
        print(f"| {kind:10s} | {median[kind]:16.3f} | {train_rows / median[kind]:9,.0f} | "
              f"{median['limit'] / median[kind]:27.2f} | {best['limit'] / best[kind]:12.2f} |")
    if "engine" in per_epoch:
        ratio = median["limit"] / median["engine"]
        print(f"\nengine with every default on: {ratio:.2f} of the limit (goal >= 0.9): "
              + ("met" if ratio >= 0.9 else "NOT met"))


if __name__ == "__main__":
    sys.exit(main())
