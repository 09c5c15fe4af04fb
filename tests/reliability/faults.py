"""Fault injection for the reliability suite: small or read-only tmpfs mounts, and a process without root's
power to ignore file permissions. Each helper skips the test cleanly where the machine does not allow it."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "solutions"


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs with `options` ("ro", "size=1m") at `path` for the block; skip if mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command")
    result = subprocess.run([mount, "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def fill(path: Path, leave_bytes: int) -> None:
    """Fill the file system holding `path` until about `leave_bytes` are free."""
    free = shutil.disk_usage(path).free
    with open(path / "filler", "wb") as handle:
        try:
            handle.write(b"\0" * max(0, free - leave_bytes))
        except OSError:
            pass


def script(name: str, *args: str | Path, timeout: float = 120, unprivileged: bool = False,
           preexec_fn=None) -> subprocess.CompletedProcess:
    """Run solutions/NAME with this interpreter; `unprivileged`: without the capabilities that let root read
    and write any file (setpriv), so file modes apply as they would to a user. Skips if that is unavailable."""
    command = [sys.executable, str(SOLUTIONS / name), *map(str, args)]
    if unprivileged:
        setpriv = shutil.which("setpriv")
        if os.geteuid() == 0:
            if setpriv is None:
                pytest.skip("running as root without setpriv: file permissions cannot be tested")
            command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all", *command]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
                          preexec_fn=preexec_fn)


def permissions_apply(probe_dir: Path) -> bool:
    """Whether an unprivileged `script` really cannot read a mode-000 file (false on odd sandboxes)."""
    probe = probe_dir / ".probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        command = [sys.executable, "-c", f"open({str(probe)!r}).read()"]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                return False
            command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all", *command]
        return subprocess.run(command, capture_output=True).returncode != 0
    finally:
        probe.chmod(0o600)
        probe.unlink()
