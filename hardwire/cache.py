"""Build directories keyed by a hash of their inputs, created atomically.

Every stage that calls a tool works in `cache_root()/<stage>/<key>`. The directory is filled under a
temporary name and renamed into place only when the stage succeeded, so an interrupted or failed run
leaves nothing half-written and parallel runs of the same inputs never see each other's partial files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """`$HARDWIRE_CACHE`, else `~/.cache/hardwire`."""
    root = os.environ.get("HARDWIRE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hardwire")
    return Path(root)


def digest(*parts) -> str:
    """A short stable hash of strings, bytes, paths (hashed by content) and JSON-able values."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(part.read_bytes())
        elif isinstance(part, bytes):
            h.update(part)
        elif isinstance(part, str):
            h.update(part.encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def atomic_dir(final: Path, replace: bool = False):
    """Yield a temporary directory beside `final`; on success rename it to `final`, on error delete it.

    If `final` already exists: with `replace` the old one is swapped out (a user's output directory),
    otherwise the new copy is discarded (a cache entry another run finished first).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file under a temporary name and rename it into place: readers never see half a file."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """write_text_atomic for bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
