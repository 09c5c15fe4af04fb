"""The map of a run folder (`--save-dir`): every file a training run writes there, in one place.

    run = RunDir("checkpoints")
    run.last, run.best, run.metrics, run.model      # checkpoints/last.pt, best.pt, metrics.json, model.safetensors
    run.metrics_log, run.system_log                 # checkpoints/logs/metrics.jsonl, logs/system.jsonl
    run.periodic(3)                                 # checkpoints/ckpt-epoch0003.pt
    run.ours()                                      # what `--resume never` may remove: this pipeline's files only

Nothing here reads or writes a file; the modules that do (checkpoint, record, train, tracking, monitor, report,
course) take their paths from here, so a file's name is written once. Anything in the folder that is not on
this map is the user's and is never removed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LAST, BEST, METRICS, MODEL, CONFIG, LOCK = "last.pt", "best.pt", "metrics.json", "model.safetensors", "config.yaml", ".lock"
LOGS, METRICS_LOG, SYSTEM_LOG, HPARAMS = "logs", "metrics.jsonl", "system.jsonl", "hparams"
TFEVENTS_GLOB = "events.out.tfevents.*"
PERIODIC = re.compile(r"^ckpt-epoch(\d+)\.pt$")
# What a run writes atomically: a kill between writing the temporary file and renaming it over its target
# leaves `.NAME.<12 hex>.tmp` behind (see fileio.atomic_write_bytes); only these names are ours to clean up.
STALE = re.compile(r"^\.(last\.pt|best\.pt|ckpt-epoch\d+\.pt|metrics\.json|model\.safetensors|config\.yaml)"
                   r"\.[0-9a-f]{12}\.tmp$")
TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]{12}\.tmp")   # any atomic write's temporary file: group 1 is its target


@dataclass(frozen=True)
class RunDir:
    """Paths of one run folder. `root` is the `--save-dir`; the logs live in `root/logs`."""
    root: Path

    def __init__(self, root: Path | str):
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def from_logs(cls, log_dir: Path | str) -> RunDir:
        """The run folder of a `logs/` folder (what the monitor is pointed at)."""
        return cls(Path(log_dir).parent)

    @property
    def last(self) -> Path:
        return self.root / LAST

    @property
    def best(self) -> Path:
        return self.root / BEST

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def logs(self) -> Path:
        return self.root / LOGS

    @property
    def metrics_log(self) -> Path:
        return self.logs / METRICS_LOG

    @property
    def system_log(self) -> Path:
        return self.logs / SYSTEM_LOG

    @property
    def hparams(self) -> Path:
        return self.logs / HPARAMS

    def periodic(self, epoch: int) -> Path:
        return self.root / f"ckpt-epoch{epoch:04d}.pt"

    def periodic_checkpoints(self) -> list[Path]:
        """Periodic checkpoints, newest epoch first."""
        found = [p for p in self.root.glob("ckpt-epoch*.pt") if PERIODIC.match(p.name)]
        return sorted(found, key=lambda p: int(PERIODIC.match(p.name).group(1)), reverse=True)

    def stale_temporaries(self) -> list[Path]:
        """Half-written temporary files a killed run left behind (ours only, by name)."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if STALE.match(p.name) and p.is_file()]

    def ours(self) -> list[Path]:
        """Every file of this pipeline's in the folder that `--resume never` may remove (nothing of the user's).
        The `hparams` folder is listed too; the caller removes it as a tree."""
        files = [*self.periodic_checkpoints(), self.last, self.best, self.metrics, self.model, self.config]
        if self.logs.is_dir():
            files += [*sorted(self.logs.glob(TFEVENTS_GLOB)), self.metrics_log, self.system_log, self.hparams]
        return [p for p in files if p.exists()]

    def has_earlier_run(self) -> bool:
        """An earlier run left a record or logs here (even with no checkpoint)."""
        return self.metrics.exists() or self.logs.is_dir()


def target_of_temporary(name: str) -> str | None:
    """The file an atomic write's temporary file was for: `.last.pt.3f2a9c0d1b2e.tmp` -> `last.pt`."""
    match = TEMPORARY.fullmatch(name)
    return match.group(1) if match else None
