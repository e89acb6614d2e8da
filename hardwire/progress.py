"""Progress of long steps: a line every so often with the time spent and an estimate of the time left."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

# "2.27. Executing ABC9 pass." -> "ABC9 pass"
_YOSYS_STEP = re.compile(r"^\d+(?:\.\d+)*\. Executing (.+?)\.?$")


def yosys_step(log_path: Path | None) -> str | None:
    """The pass yosys was in when it last wrote `log_path` (its last "N.M. Executing X." line), or None."""
    if log_path is None:
        return None
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        match = _YOSYS_STEP.match(line.strip())
        if match:
            return match.group(1)
    return None


def time_left(elapsed: float, estimate_s: float | None, limit_s: float | None) -> str:
    if estimate_s:
        left = estimate_s - elapsed
        return f"~{left:.0f} s left (estimated)" if left > 0 else "taking longer than the estimate"
    if limit_s:
        return f"at most {max(0.0, limit_s - elapsed):.0f} s left before the timeout"
    return ""


@contextlib.contextmanager
def heartbeat(
    progress: Callable[[str], None],
    what: str,
    *,
    every_s: float = 30.0,
    estimate_s: float | None = None,
    limit_s: float | None = None,
    status: Callable[[], str | None] | None = None,
):
    """While the block runs, call `progress("      WHAT: 90 s so far, ~60 s left (estimated); STATUS")` every
    `every_s` seconds. The time left comes from `estimate_s` when given, else from the `limit_s` timeout."""
    stop = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not stop.wait(every_s):
            elapsed = time.monotonic() - started
            parts = [f"{elapsed:.0f} s so far", time_left(elapsed, estimate_s, limit_s)]
            extra = status() if status is not None else None
            line = ", ".join(p for p in parts if p) + (f"; {extra}" if extra else "")
            progress(f"      {what}: {line}")

    thread = threading.Thread(target=beat, name=f"heartbeat {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
