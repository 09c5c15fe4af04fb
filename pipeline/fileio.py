"""Crash-safe file writing and tolerant reading: the I/O every phase shares.

A file is either its old content or its new content, never half of each: we write a temporary file in the
same folder, fsync it, then rename it over the target (rename is atomic on POSIX). JSONL logs are appended
one whole line per write, and readers skip a last line that has not been finished yet. Every file is created
with mode 0666 less the process umask, as `open()` would (so a colleague can read a report when the umask says so).
"""
from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX needs the directory itself synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, payload: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `payload` atomically; `durable` also fsyncs (survives power loss, not just kill)."""
    path = Path(path)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write() names no file: name ours
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    if durable:
        fsync_dir(path.parent)


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new, uniquely named file beside `path`, open for writing: `tempfile.mkstemp` without its mode 0600.

    O_EXCL makes the name ours alone, as mkstemp does; mode 0666 lets the kernel apply the umask, as open() does."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: could not create a temporary file beside {path.name}")


def to_strict_json(value: Any) -> Any:
    """Replace NaN/Infinity (not valid JSON) with None, recursively; numpy scalars become Python numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_strict_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return to_strict_json(value.item())
    return value


def dumps_strict(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(to_strict_json(value), indent=indent, allow_nan=False, ensure_ascii=False)


def atomic_write_json(path: Path, value: Any, *, durable: bool = True) -> None:
    """Write strict JSON (no NaN/Infinity) atomically."""
    atomic_write_bytes(Path(path), (dumps_strict(value, indent=2) + "\n").encode("utf-8"), durable=durable)


def append_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Append whole lines with one write call, so a concurrent reader never sees half a record."""
    if not records:
        return
    payload = "".join(dumps_strict(r) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the complete records of a JSONL file; an unfinished or damaged line is skipped, never raised."""
    try:
        with open(path, "rb") as handle:
            records, _ = parse_jsonl(handle.read())
    except FileNotFoundError:
        return
    yield from records


def parse_jsonl(chunk: bytes) -> tuple[list[dict[str, Any]], int]:
    """(the records of the complete lines in `chunk`, how many bytes they span). A last line without its
    newline is still being written: it is left for the next read. Damaged lines and non-objects are skipped."""
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], 0
    records = []
    for line in chunk[:end].split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, end + 1


def read_json(path: Path) -> Any | None:
    """Read a JSON file written atomically; None if it is missing or (briefly) unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def read_yaml_mapping(path: Path | str, *, what: str, example: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (settings, parameters, a search space), or one clear line: a missing
    file, invalid YAML, nesting too deep to read, text that is not UTF-8, or anything but a mapping."""
    import yaml

    from pipeline.errors import ConfigError

    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {what}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the {what} as UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; a {what} is a flat mapping such as "
                          f"{example!r}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping such as {example!r}, not a {type(values).__name__}")
    return values


def pid_alive(pid: int) -> bool:
    """Is a process with this id running on this machine (a lock's or a trial's owner)? A process we may not
    signal is alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
