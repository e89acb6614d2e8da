"""Independent jobs (synthesis, place-and-route, simulation) in a process pool, with a progress line per
finished job: what the benchmark scripts and the demo share."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed


def run_jobs(jobs: dict, workers: int, started: float | None = None, *,
             describe: Callable[[object], str] | None = None, errors: tuple[type[Exception], ...] = ()) -> dict:
    """Run {key: (fn, *args)} on `workers` processes and return {key: result}. Each finished job prints
    `[elapsed s] i/n description` on stderr (elapsed since `started`, default now). A job that raises one of
    `errors` gives {"error": first line of the message} instead of stopping the run; anything else propagates."""
    started = time.monotonic() if started is None else started
    describe = describe or (lambda key: " ".join(map(str, key)) if isinstance(key, tuple) else str(key))
    results = {}
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(fn, *args): key for key, (fn, *args) in jobs.items()}
        for i, future in enumerate(as_completed(futures), 1):
            key = futures[future]
            try:
                results[key] = future.result()
            except errors as error:
                results[key] = {"error": str(error).splitlines()[0]}
            print(f"[{time.monotonic() - started:6.0f} s] {i}/{len(jobs)} {describe(key)}", file=sys.stderr,
                  flush=True)
    return results
