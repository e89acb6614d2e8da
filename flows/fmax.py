"""Achieved Fmax of a core on a real part: wrap its ports in serial-I/O registers, synthesize, place, route.

Synthesis numbers come from the bare core (`flows.synth.synth`); this adds only the Fmax, measured with
every core port registered (see `hardwire.boards.wrapper`) so that wide cores fit a package and the
result is the core's register-to-register Fmax rather than pad timing.
"""

from __future__ import annotations

import json
from pathlib import Path

from hardwire.boards.wrapper import ports_from_yosys_json, serial_io_wrapper
from hardwire.flows.pnr import PnrReport, place_route
from hardwire.flows.synth import synth
from hardwire.flows.tools import build_once, run_tool, tool_version

from hardwire.cache import cache_root, digest, write_text_atomic
from hardwire.errors import ParameterError


def top_ports(verilog_files, top: str, *, timeout_s: float = 600):
    """The ports of module `top` as yosys reads them (name, direction, width), in declaration order."""
    from hardwire.flows.memfiles import referenced_files

    files = [Path(f).resolve() for f in verilog_files]
    key = digest("ports", tool_version("yosys"), top, *files)
    data = {i: referenced_files(f) for i, f in enumerate(files)}
    final = cache_root() / "ports" / key

    def build(tmp: Path) -> None:
        # yowasp tools see only their working folder: read copies of the sources
        names = []
        for i, f in enumerate(files):
            (tmp / f"{i}_{f.name}").write_bytes(f.read_bytes())
            names.append(f"{i}_{f.name}")
            for data_file in data[i]:  # $readmemh files: the body is not read (-lib), but keep them beside
                copy = tmp / data_file.relative_to(f.parent)
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(data_file.read_bytes())
        # -lib: read modules as blackboxes, ports only (fast, and nothing to elaborate)
        script = "".join(f"read_verilog -sv -lib {json.dumps(name)}\n" for name in names)
        script += "write_json ports.json\n"
        (tmp / "ports.ys").write_text(script)
        run_tool("yosys", ["-q", "-s", "ports.ys"], cwd=tmp, log_path=tmp / "yosys.log", timeout_s=timeout_s)

    final = build_once(final, lambda d: (d / "ports.json").is_file(), build)
    modules = json.loads((final / "ports.json").read_text())["modules"]
    if top not in modules:
        raise ParameterError("top", top, f"a module of the given files ({', '.join(sorted(modules))})")
    return ports_from_yosys_json(modules[top])


def wrapped_fmax(
    verilog_files,
    top: str,
    target: str,
    *,
    device: str | None = None,
    package: str | None = None,
    seed: int = 1,
    timeout_s: float = 3600,
    watch_log=None,
) -> PnrReport:
    """Place and route `top` inside the serial-I/O wrapper on `target` (ice40, ecp5); the report's
    `fmax_mhz` is the core clock's achieved Fmax."""
    files = [Path(f).resolve() for f in verilog_files]
    wrapper_top, text = serial_io_wrapper(top, top_ports(files, top))
    wrapper_file = cache_root() / "wrappers" / digest(text) / f"{wrapper_top}.v"
    if not wrapper_file.exists():
        write_text_atomic(wrapper_file, text)
    netlist = synth([*files, wrapper_file], wrapper_top, target, timeout_s=timeout_s, watch_log=watch_log)
    return place_route(netlist, target, device=device, package=package, seed=seed, timeout_s=timeout_s)
