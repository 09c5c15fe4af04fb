"""Writing the output folder: refuse unsafe folders, stage next to it, swap atomically."""
from __future__ import annotations

import errno
import io
import os
import queue
import re
import secrets
import shutil
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import fileio
from pipeline.data.preprocess import Preprocessor
from pipeline.data.reading import some
from pipeline.data.store import PRODUCER, SPLITS
from pipeline.data.table import Columns, worker_count
from pipeline.errors import DataError


def check_output_dir(output_dir: Path, *, data_path: Path | None = None) -> None:
    """Refuse, before any work, an --output-dir that prepare cannot fill or may not replace.

    It may be missing (its parent folders are made), empty, or hold an earlier output of this command and
    nothing else: replacing it then loses nothing. A folder with anything else in it (notes, the source CSV,
    a training run) is refused with a few of those names; a file, a path under a file, and a place the
    process cannot write (permissions, a read-only mount) are refused too."""
    output_dir = Path(output_dir)
    ancestor = next((p for p in (output_dir, *output_dir.parents) if os.path.lexists(p)), Path("."))
    if ancestor != output_dir and not ancestor.is_dir():
        raise DataError(f"{output_dir}: cannot be made, because {ancestor} is a file; choose another --output-dir")
    if ancestor == output_dir and not output_dir.is_dir():
        raise DataError(f"{output_dir}: is a file, not a folder; choose another --output-dir (nothing was written)")
    parent = output_dir.parent if ancestor == output_dir else ancestor
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{output_dir}: cannot write in {parent} ({_why_unwritable(parent)}); choose another "
                        "--output-dir")
    if ancestor != output_dir:
        return
    if os.path.ismount(output_dir):
        if not os.access(output_dir, os.W_OK):
            raise DataError(f"{output_dir}: is a mount point with {_why_unwritable(output_dir)}; choose another "
                            "--output-dir")
        raise DataError(f"{output_dir}: is a mount point, which prepare cannot replace (it builds the folder beside "
                        f"it and renames it in); pass a folder inside it, e.g. --output-dir {output_dir / 'processed'}")
    if not os.access(output_dir, os.W_OK | os.X_OK):  # a folder its owner made read-only is not ours to replace
        raise DataError(f"{output_dir}: is read-only ({_why_unwritable(output_dir)}); make it writable or choose "
                        "another --output-dir")
    try:
        entries = sorted(os.listdir(output_dir))
    except OSError as exc:
        raise DataError(f"{output_dir}: cannot be read ({exc.strerror}); choose another --output-dir") from None
    if not entries:
        return
    ours = _files_written(output_dir)
    if ours is None:
        raise DataError(f"{output_dir}: exists and is not an earlier output of prepare_dataset (it holds "
                        f"{some(entries, 5)}); choose another --output-dir (nothing was written)")
    foreign = [name + ("/" if (output_dir / name).is_dir() else "") for name in entries if name not in ours]
    if foreign:
        source = ""
        if data_path is not None and data_path.resolve().parent == output_dir.resolve():
            source = f" (the source CSV {data_path.name} among them)"
        raise DataError(f"{output_dir}: holds an earlier output of prepare_dataset but also {len(foreign)} file(s) it "
                        f"did not write{source}: {some(foreign, 5)}; nothing was changed: move them out, or choose "
                        "another --output-dir")


def _files_written(directory: Path) -> set[str] | None:
    """The names an earlier prepare wrote into `directory` (from its schema.json), or None if it wrote none."""
    try:
        schema = fileio.read_json(directory / "schema.json")
    except OSError:
        return None
    if not isinstance(schema, dict) or schema.get("producer") != PRODUCER:
        return None
    names = {"schema.json"} | {f"{split}_{part}.npy" for split in SPLITS for part in ("X", "y")}
    files = schema.get("files")
    for item in (files.values() if isinstance(files, dict) else []):
        for name in (item.values() if isinstance(item, dict) else []):
            if isinstance(name, str) and name == Path(name).name:
                names.add(name)
    return names


def _why_unwritable(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "a read-only file system"
    except OSError:
        pass
    return "permission denied"


def _save_splits(directory: Path, preprocessor: Preprocessor, table: Columns, splits: dict[str, np.ndarray],
                 labels: np.ndarray, chunk_bytes: int = 8 << 20, write_bytes: int = 1 << 20) -> None:
    """Write each split's labels, and its features transformed chunk by chunk straight into `<split>_X.npy`.

    Worker threads transform chunks (NumPy releases the GIL) while this thread writes them in order, so memory
    holds a few chunks of ~`chunk_bytes`, never a whole split, and both cores stay busy on big files. Chunks
    are written in slices of ~`write_bytes`: on the benchmark machine, 8 MiB write() calls made the kernel
    spend up to 3x longer storing the same 348 MB (0.5-0.8 s vs 0.2 s) than 1-2 MiB ones, while chunks
    smaller than 8 MiB leave too little work between two threads' GIL hand-offs to run in parallel."""
    width = len(preprocessor.feature_names_)
    chunk_rows = max(1, chunk_bytes // (4 * max(width, 1)))
    slice_rows = max(1, write_bytes // (4 * max(width, 1)))
    spare: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()  # buffers written out, ready for reuse

    def transform(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            buffer = spare.get_nowait()
        except queue.Empty:
            buffer = np.empty((chunk_rows, width), dtype=np.float32)
        return buffer, preprocessor.transform(table, rows, out=buffer[: len(rows)])

    jobs = [(name, rows[start:start + chunk_rows]) for name, rows in splits.items()
            for start in range(0, len(rows), chunk_rows)]
    handles: dict[str, Any] = {}
    try:
        for name, rows in splits.items():
            # through a plain write(): np.save to a file reports a full disk without its errno
            encoded = io.BytesIO()
            np.save(encoded, labels[rows])
            with open(directory / f"{name}_y.npy", "wb", buffering=0) as handle:
                _write_all(handle, encoded.getbuffer())
            handles[name] = open(directory / f"{name}_X.npy", "wb", buffering=0)
            np.lib.format.write_array_header_1_0(handles[name], {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                "shape": (len(rows), width)})
        workers = worker_count()
        with ThreadPoolExecutor(workers) as pool:
            for (name, _), (buffer, features) in zip(jobs, _ordered_map(pool, transform, [r for _, r in jobs],
                                                                       ahead=workers + 1)):
                for start in range(0, len(features), slice_rows):
                    _write_all(handles[name], memoryview(features[start:start + slice_rows]).cast("B"))
                spare.put(buffer)
    finally:
        for handle in handles.values():
            handle.close()


def _write_all(handle: Any, data: memoryview) -> None:
    """Write every byte through an unbuffered file (one write() call, the GIL released; looped if short)."""
    while data:
        data = data[handle.write(data):]


def _ordered_map(pool: ThreadPoolExecutor, function: Callable[[Any], Any], items: list[Any], *,
                 ahead: int) -> Iterator[Any]:
    """`pool.map` with at most `ahead` results in flight (pool.map submits everything at once: all the memory)."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(function, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _write_output(output_dir: Path, schema: dict, write_files: Callable[[Path], None]) -> Path | None:
    """Build the folder beside its final place, then rename it in: readers see all of it or none.

    `write_files(staging)` writes the split files into the staging folder. A full disk, a read-only file system
    or any other write error becomes a `DataError`; the staging folder goes and an earlier output stays as it
    was. The earlier output, once renamed aside, loses only the files prepare wrote into it (which
    `check_output_dir` made sure are all it holds); if anything else appeared there meanwhile, that folder is
    kept and its path returned."""
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(output_dir)
        staging = _new_sibling(output_dir, "tmp")
    except OSError as exc:
        raise DataError(f"{output_dir}: cannot be created ({exc.strerror or exc}); choose another --output-dir") from None
    try:
        write_files(staging)
        fileio.atomic_write_json(staging / "schema.json", schema)
        fileio.fsync_dir(staging)
        old = None
        if output_dir.exists():
            old = _new_sibling(output_dir, "old", make=False)
            os.replace(output_dir, old)
            try:
                os.replace(staging, output_dir)
            except BaseException:
                os.replace(old, output_dir)  # put the earlier output back
                raise
        else:
            os.replace(staging, output_dir)
        fileio.fsync_dir(output_dir.parent)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            kept = " (the earlier output there is unchanged)" if output_dir.exists() else ""
            raise DataError(f"{output_dir}: could not be written ({_os_reason(exc)}); nothing was changed{kept}: "
                            "free some space or choose another --output-dir") from None
        raise
    return _remove_output(old) if old is not None else None


def _os_reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if exc.errno == errno.EFBIG:
        return "a file grew beyond the size limit"
    if exc.errno == errno.EROFS:
        return "a read-only file system"
    return exc.strerror or str(exc)


def _new_sibling(output_dir: Path, kind: str, *, make: bool = True) -> Path:
    """A new, unused name beside `output_dir`: '.NAME.tmp-PID-RANDOM' (made as a folder when `make`)."""
    for _ in range(100):
        path = output_dir.with_name(f".{output_dir.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")
        if make:
            try:
                path.mkdir()
            except FileExistsError:
                continue
        elif os.path.lexists(path):
            continue
        return path
    raise FileExistsError(f"{output_dir.parent}: no free name for a {kind} folder")


def _remove_output(directory: Path) -> Path | None:
    """Delete an earlier output: only the files prepare writes, then the folder if that emptied it."""
    names = _files_written(directory) or set()
    for name in names:
        (directory / name).unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        return directory
    return None


def _remove_stale_staging(output_dir: Path) -> None:
    """Staging and set-aside folders a killed prepare left beside `output_dir` (their process is gone and they
    hold only files prepare writes): they can be as big as the data, so they go."""
    pattern = re.compile(rf"\.{re.escape(output_dir.name)}\.(?:tmp|old)-(\d+)-[0-9a-f]{{8}}")
    ours = {"schema.json"} | {f"{split}_{part}.npy" for split in SPLITS for part in ("X", "y")}
    for entry in output_dir.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if not match or int(match.group(1)) == os.getpid() or fileio.pid_alive(int(match.group(1))):
            continue
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        if all(name in ours or name.startswith(".schema.json.") for name in names):
            shutil.rmtree(entry, ignore_errors=True)
