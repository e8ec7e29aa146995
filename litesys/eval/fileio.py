"""File I/O shared by the eval floor and its tasks: data rows from JSONL/JSON/parquet, the output folder's lock,
complete JSONL lines (a torn last line from a SIGKILL is skipped or cut), atomic writes."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

LOCK_FILE = ".lock"


class DataError(ValueError):
    """Bad task or data input; the message says what to do."""


class RunError(RuntimeError):
    """A run cannot start or finish (its folder is locked, a sample file is unreadable...); the message says
    what to do."""


def read_rows(path: Path) -> list[dict]:
    """Rows of a .parquet file, a .json array, or JSON lines (streamed: LiveCodeBench files run to gigabytes)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as f:
        if path.suffix == ".json" and f.read(4096).lstrip().startswith("["):
            f.seek(0)
            return json.load(f)
        f.seek(0)
        rows = []
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n} is not valid JSON ({e.msg}); expected one JSON object per line, "
                                    "fix or remove that line") from e
    return rows


def hold_lock(output_dir: Path) -> IO:
    """Take ``output_dir``'s exclusive lock (held until the returned file is closed); RunError when another
    run holds it. The folder must exist."""
    import fcntl

    f = open(Path(output_dir) / LOCK_FILE, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunError(f"another run is writing to {output_dir}; wait for it to finish or use another "
                          "--output_dir") from None
    return f


def complete_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a JSONL file's complete lines, one at a time; a torn last line is skipped."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.endswith(b"\n") and line.strip():
                yield n, line


def _complete_length(path: Path) -> int:
    """Byte length of the file up to and including its last newline (read backwards: no full read)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            f.seek(start)
            i = f.read(end - start).rfind(b"\n")
            if i >= 0:
                return start + i + 1
            end = start
    return 0


def repair_tail(path: Path) -> None:
    """Drop a torn last line so that appended records start on a line of their own."""
    path = Path(path)
    if path.is_file():
        good = _complete_length(path)
        if good != path.stat().st_size:
            with open(path, "r+b") as f:
                f.truncate(good)


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
