"""File I/O that never leaves half-written output: every write goes to a temporary file, is fsynced, then renamed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from drirl.errors import DataError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    # mkstemp/mkdtemp create private files; finished outputs should get the user's normal permissions.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            # Move the old one aside first so a crash between the two renames never leaves neither.
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_temporary(path: str | os.PathLike) -> bool:
    """A leftover of :func:`atomic_write` or :func:`atomic_directory` killed before its rename."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(".tmp")


def remove_temporaries(folder: str | os.PathLike) -> int:
    """Delete the leftovers of killed atomic writes anywhere under ``folder``; returns how many."""
    found = [p for p in Path(folder).rglob(".*.tmp")] if Path(folder).is_dir() else []
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return len(found)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines atomically; returns the number written."""
    count = 0
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file (a BOM is dropped). A missing file or undecodable bytes (latin-1, UTF-16...) raise
    DataError naming the file and the line of the first bad byte."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise DataError("is a folder, expected a file", file=str(path)) from None
    except OSError as err:
        raise DataError(f"cannot read: {err.strerror or err}", file=str(path)) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        hint = " (UTF-16? save the file as UTF-8)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else \
            " (save the file as UTF-8)"
        raise DataError(f"not valid UTF-8 (byte {err.start}){hint}", file=str(path),
                        line=raw[: err.start].count(b"\n") + 1) from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed value or DataError) for each non-blank line of a JSON-lines file.

    Lines are split on "\\n" only: str.splitlines() also breaks on U+2028 and friends, which JSON strings may hold.
    """
    text = read_text(path)
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except (ValueError, RecursionError) as err:
            yield number, DataError(f"malformed JSON: {err}" if isinstance(err, ValueError)
                                    else "malformed JSON: nested too deeply", file=str(path), line=number)


def read_jsonl_numbered(path: str | os.PathLike, *, skip_invalid: bool = False,
                        skipped: list | None = None) -> list[tuple[int, dict]]:
    """Like :func:`read_jsonl`, with each row's line number."""
    rows: list[tuple[int, dict]] = []
    for number, row in iter_jsonl(path):
        if not isinstance(row, DataError) and not isinstance(row, dict):
            row = DataError(f"expected a JSON object, got {type(row).__name__}", file=str(path), line=number)
        if isinstance(row, DataError):
            if skip_invalid:
                if skipped is not None:
                    skipped.append({"line": number, "reason": row.message})
                continue
            raise row
        rows.append((number, row))
    return rows


def read_jsonl(path: str | os.PathLike, *, skip_invalid: bool = False, skipped: list | None = None) -> list[dict]:
    """Read JSON lines. A malformed line raises DataError with file and line, or is recorded in ``skipped``."""
    return [row for _, row in read_jsonl_numbered(path, skip_invalid=skip_invalid, skipped=skipped)]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def safe_join(root: str | os.PathLike, relative: str) -> Path:
    """Join a manifest's relative path onto its folder, refusing paths that escape it (absolute, '..', symlinks)."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise DataError(f"path '{relative}' points outside {root}", file=str(root))
    return candidate
