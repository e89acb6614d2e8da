"""Independent jobs (synthesis, place-and-route, simulation) in a process pool or on a Ray cluster, with a
progress line per finished job: what the benchmark scripts, the demo and the dataset generator share.

Ray is the engine for work that outgrows one machine: `ray_address` runs the very same job functions as Ray
tasks (`"local"` starts a Ray instance on this machine, anything else is a cluster address for `ray.init`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from hardwire.errors import ToolMissingError


def _eta(elapsed: float, done: int, total: int) -> str:
    if done >= total or done == 0:
        return ""
    return f" (~{elapsed / done * (total - done):.0f} s left)"


def run_jobs(
    jobs: dict,
    workers: int,
    started: float | None = None,
    *,
    describe: Callable[[object], str] | None = None,
    errors: tuple[type[Exception], ...] = (),
    on_result: Callable[[object, object], str | None] | None = None,
    ray_address: str | None = None,
) -> dict:
    """Run {key: (fn, *args)} on `workers` processes (or as Ray tasks) and return {key: result}.

    Each finished job prints `[elapsed s] i/n (~time left) description` on stderr, elapsed
    since `started` (default now). A job that raises one of `errors` gives {"error": first line of the
    message} instead of stopping the run; anything else propagates. `on_result(key, result)` is called in
    this process as each job finishes (to save it at once, so a killed run keeps every finished job); a
    string it returns is appended to the progress line."""
    started = time.monotonic() if started is None else started
    describe = describe or (lambda key: " ".join(map(str, key)) if isinstance(key, tuple) else str(key))
    results = {}

    def finished(key, get) -> None:
        try:
            results[key] = get()
        except errors as error:
            results[key] = {"error": str(error).splitlines()[0]}
        extra = on_result(key, results[key]) if on_result is not None else None
        elapsed = time.monotonic() - started
        print(
            f"[{elapsed:6.0f} s] {len(results)}/{len(jobs)}{_eta(elapsed, len(results), len(jobs))} "
            f"{describe(key)}{' ' + extra if extra else ''}",
            file=sys.stderr,
            flush=True,
        )

    if ray_address is not None:
        _run_on_ray(jobs, ray_address, finished)
        return results
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        # submitted a few at a time, so that an interrupted run has not queued (and lost) the whole list
        pending: dict = {}
        queue = iter(jobs.items())
        try:
            while True:
                while len(pending) < 2 * max(1, workers):
                    item = next(queue, None)
                    if item is None:
                        break
                    key, (fn, *args) = item
                    pending[pool.submit(fn, *args)] = key
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    finished(pending.pop(future), future.result)
        except BaseException:
            # Interrupted (Ctrl-C, or a kill of this process alone, as `timeout` sends): nothing more starts,
            # and the running jobs are interrupted too (their tool runs are killed) instead of being awaited.
            for future in pending:
                future.cancel()
            for process in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGINT)
            raise
    return results


def _call(fn, *args):
    """One job as a Ray task (Ray's decorator takes Python functions only, not builtins such as operator.add)."""
    return fn(*args)


def _run_on_ray(jobs: dict, address: str, finished) -> None:
    try:
        import ray
    except ImportError:
        raise ToolMissingError("--ray needs Ray: pip install 'hardwire[ray]' (ray==2.60.0)") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        task = ray.remote(_call)
        pending = {task.remote(fn, *args): key for key, (fn, *args) in jobs.items()}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                finished(pending.pop(ref), lambda ref=ref: ray.get(ref))
    finally:
        if started_here:
            ray.shutdown()
