"""Nothing verified is lost: what a compile has passed so far, kept beside the output folder.

A compile works in a temporary folder that becomes the output folder only when every step passed (see
hardwire.cache.atomic_dir). Simulation can take long and synthesis or place and route can still fail or time
out after it, so as soon as the simulation verdict is in, the work so far is copied to `<out>.incomplete`
with its report marked incomplete; a failure of a later step records itself there. A rerun of the same
compile (the same Verilog, memory files, verification inputs and expected outputs: `simulation_key`) takes
the verdict from that folder instead of simulating again; synthesis results are reused through the tool
cache. A compile that succeeds removes the folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from hardwire.cache import atomic_dir, digest, write_json_atomic, write_text_atomic
from hardwire.errors import HardwireError

SUFFIX = ".incomplete"
# Bump when what a saved verdict means changes (the testbench's cases, the checks).
CHECKPOINT_VERSION = 1


def side_folder(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + SUFFIX)


def simulation_key(design_files: list[Path], *arrays: np.ndarray) -> str:
    """What a simulation verdict depends on: the design's files (Verilog and memory contents, by content),
    the testbenches, and the verification data (inputs, expected integer outputs, qonnx' outputs)."""
    from hardwire.sim import fastsim, network_check, tb_network

    return digest(
        "simulation",
        CHECKPOINT_VERSION,
        Path(tb_network.__file__),
        Path(fastsim.__file__),
        Path(network_check.__file__),
        *[part for path in sorted(design_files, key=lambda p: p.name) for part in (path.name, path)],
        *[np.ascontiguousarray(a).tobytes() + str((a.dtype, a.shape)).encode() for a in arrays],
    )


def load_verdict(out_dir: Path, key: str) -> dict | None:
    """The saved simulation section (and the RTL accuracy) of a compile with this key, or None."""
    try:
        saved = json.loads((side_folder(out_dir) / "report.json").read_text())
    except (OSError, ValueError):
        return None
    state = saved.get("incomplete") or {}
    if state.get("simulation_key") != key or "simulation" not in saved:
        return None
    return {
        "simulation": saved["simulation"],
        "accuracy_rtl": (saved.get("accuracy") or {}).get("rtl"),
        "folder": str(side_folder(out_dir)),
    }


def save(work: Path, out_dir: Path, report: dict, *, key: str, status: str, markdown) -> Path:
    """Copy the compile's work folder to `<out>.incomplete` (replacing an older one) with the report marked
    incomplete: `status` says which step is running or which one failed and why."""
    side = side_folder(out_dir)
    marked = {
        **report,
        "incomplete": {
            "status": status,
            "simulation_key": key,
            "note": "not a finished compile: the steps after the simulation did not "
            "all pass; a rerun of the same compile resumes from here",
        },
    }
    with atomic_dir(side, replace=True) as tmp:
        shutil.copytree(work, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("sim_build*"))
        write_json_atomic(tmp / "report.json", marked)
        write_text_atomic(tmp / "report.md", f"# INCOMPLETE: {status}\n\n" + markdown(marked))
    return side


def mark_failed(out_dir: Path, step: str, error: Exception) -> Path | None:
    """Record in the saved report that `step` failed with `error`; None when nothing was saved."""
    side = side_folder(out_dir)
    path = side / "report.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    saved.setdefault("incomplete", {})["status"] = f"{step} failed: {first_line}"
    write_json_atomic(path, saved)
    md = side / "report.md"
    if md.is_file():
        body = md.read_text().split("\n", 2)[-1] if md.read_text().startswith("# INCOMPLETE") else md.read_text()
        write_text_atomic(md, f"# INCOMPLETE: {step} failed: {first_line}\n\n{body.lstrip()}")
    return side


def discard(out_dir: Path) -> None:
    shutil.rmtree(side_folder(out_dir), ignore_errors=True)


class IncompleteCompile(HardwireError):
    """A step after the simulation failed; what passed is kept in `kept` and a rerun resumes from it."""

    def __init__(self, step: str, kept: Path, cause: Exception):
        self.step, self.kept, self.cause = step, Path(kept), cause
        super().__init__(
            f"{step} failed; what passed so far is kept in {kept} (report marked incomplete) and "
            f"rerunning the same compile resumes from it: {cause}"
        )

    def __reduce__(self):
        return (type(self), (self.step, self.kept, self.cause))
