"""Out-of-context synthesis per unit: each streaming unit of a compiled network synthesized on its own.

A network's units (matrix-vector units, window generators, pooling, width converters: the stages of its
dataflow plan) are written as separate Verilog modules, memories in .hex files (flows.memfiles), and each
is synthesized by flows.synth.synth, whose cache is keyed by a hash of the unit's Verilog, memory files and
target: a second compile reuses every unit whose Verilog did not change, so a new folding of one layer
resynthesizes that layer's unit (and a width converter whose lane counts it changed), and the units run in
parallel on the process pool (hardwire.jobs.run_jobs; Ray with `ray_address`). The glue is the FIFOs between
units, synthesized the same way, one per distinct (width, depth). The network's resources are the sum of
the units' and the glue's; what a flat synthesis of the whole network gives instead differs only by what
optimizes across unit boundaries (constants and unused bits crossing a FIFO), which bench/compile_time.py
measures.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amaranth.hdl import Module, Shape, unsigned
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hardwire.cache import cache_root, digest, write_text_atomic
from hardwire.errors import HardwireError, ToolError

RESOURCES = ("lut", "ff", "dsp", "bram", "lutram")
# Bump when the way a unit's Verilog is made changes outside the generator modules (which are hashed).
UNIT_VERILOG_VERSION = 1


@dataclass(frozen=True)
class Unit:
    name: str  # the Verilog module name (and the unit's folder)
    kind: str  # mvu, swg, maxpool, dwc; "fifo" for glue
    stage: str  # the plan stage (glue: the stages whose FIFOs it stands for, comma separated)
    count: int  # how many times it occurs in the network (FIFOs of the same width and depth)
    verilog: str
    memory_files: dict  # {file name: text}


class FifoGlue(wiring.Component):
    """The FIFO the network puts between two units (as DataflowAccelerator wires it), as a module of its own."""

    def __init__(self, width: int, depth: int):
        self.width, self.depth = width, depth
        super().__init__({"inp": In(stream.Signature(unsigned(width))), "out": Out(stream.Signature(unsigned(width)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=self.width, depth=self.depth)
        m.d.comb += [
            queue.w_data.eq(self.inp.payload),
            queue.w_en.eq(self.inp.valid),
            self.inp.ready.eq(queue.w_rdy),
            self.out.payload.eq(queue.r_data),
            self.out.valid.eq(queue.r_rdy),
            queue.r_en.eq(self.out.ready),
        ]
        return m


@dataclass(frozen=True)
class UnitSpec:
    """A unit before its Verilog is made: `build()` makes its component (picklable, for a pool worker)."""

    name: str
    kind: str
    stage: str
    count: int
    build: functools.partial


def unit_specs(plan) -> list[UnitSpec]:
    """The plan's stages as separate modules (`<top>_<stage>`), then its FIFOs as glue (`fifo_w<W>_d<D>`,
    one module per distinct width and depth)."""
    specs: list[UnitSpec] = []
    glue: dict[tuple[int, int], list[str]] = {}
    previous_width = None
    for stage in plan.stages:
        specs.append(UnitSpec(f"{plan.top_name}_{stage.name}", stage.kind, stage.name, 1, stage.build))
        if previous_width is not None:
            glue.setdefault((previous_width, stage.fifo_depth), []).append(stage.name)
        # constructing a unit checks its content but does not elaborate it: cheap
        component = stage.build()
        component._MustUse__silence = True  # built for its port width only (no UnusedElaboratable)
        previous_width = Shape.cast(component.out.payload.shape()).width
    for (width, depth), stages in sorted(glue.items()):
        specs.append(
            UnitSpec(
                f"fifo_w{width}_d{depth}",
                "fifo",
                ",".join(stages),
                len(stages),
                functools.partial(FifoGlue, width, depth),
            )
        )
    return specs


def network_units(plan) -> list[Unit]:
    """Every unit of `unit_specs(plan)` with its Verilog and memory files."""
    return [Unit(s.name, s.kind, s.stage, s.count, *unit_verilog(s.build, s.name)) for s in unit_specs(plan)]


def _key_part(value):
    if isinstance(value, np.ndarray):
        return [str(value.dtype), list(value.shape), digest(np.ascontiguousarray(value).tobytes())]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return repr(value)


def unit_verilog(build: functools.partial, name: str) -> tuple[str, dict]:
    """(Verilog, memory files) of the component `build()` makes, as module `name`, cached by a hash of
    what builds it (class, parameters, weights and thresholds), the source of the generator module and of this
    one, and Amaranth's version: Amaranth's conversion of a unit with a million weights takes a minute, and a
    one-layer change should not pay it for every other unit again."""
    import amaranth
    from amaranth.back import verilog

    from hardwire.flows import memfiles
    from hardwire.flows.tools import build_once

    cls, args = getattr(build, "func", None), getattr(build, "args", None)
    key = None
    if cls is not None and args is not None:
        key = digest(
            "unit-verilog",
            UNIT_VERILOG_VERSION,
            amaranth.__version__,
            name,
            cls.__qualname__,
            Path(sys.modules[cls.__module__].__file__),
            Path(__file__),
            [_key_part(a) for a in args],
        )

    def convert(folder: Path | None):
        component = build()
        text, files = memfiles.externalize(verilog.convert(component, name=name, emit_src=False), name)
        if folder is not None:
            (folder / "unit.json").write_text(json.dumps({"verilog": text, "files": files}))
        return text, files

    if key is None:
        return convert(None)
    final = build_once(cache_root() / "unit-verilog" / key, lambda d: (d / "unit.json").is_file(), convert)
    saved = json.loads((final / "unit.json").read_text())
    return saved["verilog"], saved["files"]


def write_units(units: list[Unit], folder: Path) -> dict[str, Path]:
    """Each unit's Verilog and memory files into `folder/<name>/`; {name: its Verilog file}."""
    paths = {}
    for unit in units:
        path = Path(folder) / unit.name / f"{unit.name}.v"
        write_text_atomic(path, unit.verilog)
        for file_name, text in unit.memory_files.items():
            write_text_atomic(path.parent / file_name, text)
        paths[unit.name] = path
    return paths


def make_and_synth_unit(spec: UnitSpec, folder: str, target: str, timeout_s: float) -> dict:
    """A pool job: the unit's Verilog (Amaranth's conversion, cached) written to `folder/<name>/`, then
    `synth_unit`; conversion and synthesis of different units run in parallel."""
    text, files = unit_verilog(spec.build, spec.name)
    path = write_units([Unit(spec.name, spec.kind, spec.stage, spec.count, text, files)], Path(folder))[spec.name]
    return synth_unit(str(path), spec.name, target, timeout_s)


def synth_unit(verilog_path: str, top: str, target: str, timeout_s: float) -> dict:
    """One unit's synthesis (a process-pool job): its resources, whether the cache had it, the seconds taken.
    A timeout is an error naming the unit and the yosys pass it was in."""
    from hardwire.flows.synth import is_cached, synth
    from hardwire.progress import yosys_step

    started = time.monotonic()
    cached = is_cached([Path(verilog_path)], top, target)
    try:
        report = synth([Path(verilog_path)], top, target, timeout_s=timeout_s)
    except ToolError as error:
        if "timed out" not in error.reason:
            raise
        step = yosys_step(error.log_path)
        raise HardwireError(
            f"yosys synthesis of unit {top} for {target} timed out after {timeout_s:g} s"
            + (f" in yosys' {step!r}" if step else "")
            + f" (log: {error.log_path}); "
            "give it longer with --synth-timeout SECONDS"
        ) from None
    return {
        **{k: getattr(report, k) for k in RESOURCES},
        "cached": cached,
        "seconds": round(time.monotonic() - started, 1),
        "note": report.note,
    }


def synthesize_units(
    plan, target: str, folder: Path, *, workers: int = 2, timeout_s: float = 1800, ray_address: str | None = None
) -> dict:
    """Synthesize every unit and glue FIFO of `plan` for `target` (sources written under `folder`), in
    parallel; the totals are the sum over units times their count. Returns the report section."""
    from hardwire.jobs import run_jobs

    started = time.monotonic()
    units = unit_specs(plan)
    jobs = {unit.name: (make_and_synth_unit, unit, str(folder), target, timeout_s) for unit in units}
    results = run_jobs(jobs, workers, describe=lambda name: f"synthesized unit {name}", ray_address=ray_address)
    per_unit = {
        unit.name: {"kind": unit.kind, "stage": unit.stage, "count": unit.count, **results[unit.name]} for unit in units
    }
    total = {k: sum(u[k] * u["count"] for u in per_unit.values()) for k in RESOURCES}
    glue = {k: sum(u[k] * u["count"] for u in per_unit.values() if u["kind"] == "fifo") for k in RESOURCES}
    return {
        "target": target,
        "top": plan.top_name,
        "mode": "per unit, out of context",
        **total,
        "glue": glue,
        "units": per_unit,
        "units_synthesized": sum(not u["cached"] for u in per_unit.values()),
        "units_reused": sum(bool(u["cached"]) for u in per_unit.values()),
        "wall_s": round(time.monotonic() - started, 1),
        "note": "sum of the units synthesized on their own (glue: the FIFOs between them)",
    }


# ---------------------------------------------------------------------------------------------------------------
# Place and route from the units' own netlists


def stitch_verilog(plan) -> str:
    """Verilog of module `plan.top_name` with the flat network's ports, made only of unit instances: each stage
    `<top>_<stage>` fed through its glue FIFO `fifo_w<W>_d<D>` as DataflowAccelerator wires them (the first stage
    straight from the input). With the units' own Verilog (`network_units`) it is the network, cycle for cycle."""
    specs = unit_specs(plan)
    stages = [s for s in specs if s.kind != "fifo"]
    fifo_of = {stage: spec.name for spec in specs if spec.kind == "fifo" for stage in spec.stage.split(",")}
    widths = {}
    for stage in stages:
        component = stage.build()
        component._MustUse__silence = True  # built for its port widths only
        widths[stage.name] = (
            Shape.cast(component.inp.payload.shape()).width,
            Shape.cast(component.out.payload.shape()).width,
        )
    lines = [
        f"module {plan.top_name}(clk, rst, inp__payload, inp__valid, inp__ready, out__payload, out__valid, "
        "out__ready);",
        "  input clk; input rst;",
        f"  input [{widths[stages[0].name][0] - 1}:0] inp__payload; input inp__valid; output inp__ready;",
        f"  output [{widths[stages[-1].name][1] - 1}:0] out__payload; output out__valid; input out__ready;",
    ]

    def stream_wires(prefix: str, width: int) -> None:
        lines.append(f"  wire [{width - 1}:0] {prefix}_payload; wire {prefix}_valid; wire {prefix}_ready;")

    source = ("inp__payload", "inp__valid", "inp__ready")
    for index, stage in enumerate(stages):
        sink = (f"s{index}_in_payload", f"s{index}_in_valid", f"s{index}_in_ready")
        if index == 0:
            sink = source
        else:
            fifo = fifo_of[stage.stage]
            stream_wires(f"s{index}_in", widths[stage.name][0])
            lines.append(
                f"  {fifo} f{index} (.clk(clk), .rst(rst), .inp__payload({source[0]}), "
                f".inp__valid({source[1]}), .inp__ready({source[2]}), .out__payload({sink[0]}), "
                f".out__valid({sink[1]}), .out__ready({sink[2]}));"
            )
        if index == len(stages) - 1:
            out = ("out__payload", "out__valid", "out__ready")
        else:
            stream_wires(f"s{index}_out", widths[stage.name][1])
            out = (f"s{index}_out_payload", f"s{index}_out_valid", f"s{index}_out_ready")
        lines.append(
            f"  {stage.name} u{index} (.clk(clk), .rst(rst), .inp__payload({sink[0]}), "
            f".inp__valid({sink[1]}), .inp__ready({sink[2]}), .out__payload({out[0]}), "
            f".out__valid({out[1]}), .out__ready({out[2]}));"
        )
        source = out
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def _blackbox_stub(name: str, ports: dict) -> str:
    """A `(* blackbox *)` module with the ports of a unit's netlist (yosys JSON port records)."""
    decls = []
    for port, record in ports.items():
        width = len(record["bits"])
        decls.append(f"  {record['direction']} {'' if width == 1 else f'[{width - 1}:0] '}{port};")
    return f"(* blackbox *)\nmodule {name}({', '.join(ports)});\n" + "\n".join(decls) + "\nendmodule\n"


def stitched_fmax(
    plan,
    target: str,
    folder: Path,
    *,
    device: str | None = None,
    package: str | None = None,
    timeout_s: float = 1800,
    watch_log=None,
):
    """Place and route the network from its units' netlists (each synthesized on its own, cached: see
    `synthesize_units`) instead of a flat synthesis of the whole network: the serial-I/O wrapper and the stitch
    module (only wiring) are synthesized with the units as black boxes, the units' mapped modules are put in
    beside them, yosys flattens the result and nextpnr places and routes it. Returns the PnrReport (its
    `fmax_mhz` is the core clock's). Units must have been synthesized for `target` first."""
    from hardwire.boards.wrapper import serial_io_wrapper
    from hardwire.flows.fmax import top_ports
    from hardwire.flows.pnr import place_route
    from hardwire.flows.synth import synth
    from hardwire.flows.tools import build_once, run_tool, tool_version

    folder = Path(folder)
    netlists = {}
    for spec in unit_specs(plan):
        path = folder / spec.name / f"{spec.name}.v"
        if not path.is_file():
            raise HardwireError(f"unit {spec.name} has no Verilog in {folder}: synthesize the units first")
        report = synth([path], spec.name, target, timeout_s=timeout_s)  # cached: returns at once
        netlists[spec.name] = Path(report.netlist_json)
    # each netlist also holds the cell library's (black-box) modules, which give nextpnr the cells' port
    # directions: the merged design keeps one copy of each
    library: dict[str, dict] = {}
    modules = {}
    for name, path in netlists.items():
        design = json.loads(path.read_text())["modules"]
        modules[name] = design.pop(name)
        for cell, module in design.items():
            library.setdefault(cell, module)
    stitch = stitch_verilog(plan)
    stubs = "".join(_blackbox_stub(name, module["ports"]) for name, module in modules.items())
    shell_dir = folder / "_stitched"
    write_text_atomic(shell_dir / "stitch.v", stitch)
    wrapper_top, wrapper = serial_io_wrapper(plan.top_name, top_ports([shell_dir / "stitch.v"], plan.top_name))
    write_text_atomic(shell_dir / "shell.v", stubs + stitch + wrapper)
    shell = synth([shell_dir / "shell.v"], wrapper_top, target, timeout_s=timeout_s, watch_log=watch_log)
    shell_modules = json.loads(Path(shell.netlist_json).read_text())["modules"]
    for cell, module in shell_modules.items():
        if cell != wrapper_top and cell not in modules:
            library.setdefault(cell, module)
    merged = {
        "creator": "hardwire.hls.units.stitched_fmax",
        "modules": {**library, wrapper_top: shell_modules[wrapper_top], **modules},
    }
    text = json.dumps(merged, sort_keys=True)
    key = digest("stitched-netlist", tool_version("yosys"), wrapper_top, text)

    def flatten(tmp: Path) -> None:
        (tmp / "merged.json").write_text(text)
        (tmp / "flatten.ys").write_text(
            f"read_json merged.json\nhierarchy -top {wrapper_top}\nflatten\nwrite_json netlist.json\n"
        )
        run_tool("yosys", ["-q", "-s", "flatten.ys"], cwd=tmp, log_path=tmp / "yosys.log", timeout_s=timeout_s)

    final = build_once(cache_root() / "stitched" / key, lambda d: (d / "netlist.json").is_file(), flatten)
    # nextpnr places the unconstrained I/O pins at random; now and then the clock lands on a pin with no route to
    # the global network ("Failed to route arc ... of net 'clk..."). That is the seed's luck, not the design's:
    # another seed places it elsewhere.
    for seed in (1, 2, 3):
        try:
            return place_route(
                final / "netlist.json", target, device=device, package=package, seed=seed, timeout_s=timeout_s
            )
        except ToolError as error:
            if seed == 3 or not re.search(r"Failed to route arc \S+ of net 'clk", error.reason):
                raise
