"""What goes on a board: a compiled network folder (`hardwire compile` output) read back as Verilog plus the
geometry of its input and output streams, and an Amaranth component that instantiates that Verilog so the
board top (boards/top.py) and the whole-board simulation build the very same netlist."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hardwire.boards.link import LinkGeometry, StreamGeometry
from hardwire.errors import ParameterError


@dataclass(frozen=True)
class BoardDesign:
    """A streaming design ready for a board: its Verilog, top module and link geometry.

    `initiation_interval` / `latency_cycles` come from the compiled network's cycle model (None if unknown);
    `model` is the QONNX file it was compiled from, so the host driver can quantize float inputs."""

    name: str
    top: str
    verilog: str
    geometry: LinkGeometry
    source: Path
    initiation_interval: int | None = None
    latency_cycles: int | None = None
    model: Path | None = None


def load_design(path) -> BoardDesign:
    """A `hardwire compile` (RTL back end) output folder -> BoardDesign; a one-line error for anything else."""
    path = Path(path)
    plan_path = path / "plan.json"
    if not path.is_dir() or not plan_path.is_file():
        raise ParameterError("design", str(path), "a folder written by `hardwire compile` (with plan.json)")
    plan = json.loads(plan_path.read_text())
    missing = [k for k in ("in_width", "in_signed", "out_width", "out_signed") if k not in plan]
    if missing:
        raise ParameterError("design", str(path), "a folder from this hardwire version's `hardwire compile` "
                                                  f"(plan.json lacks {', '.join(missing)}: compile it again)")
    top = plan["top"]
    verilog_path = path / f"{top}.v"
    if not verilog_path.is_file():
        raise ParameterError("design", str(path), f"a compiled folder holding {top}.v")
    geometry = LinkGeometry(
        StreamGeometry(plan["in_beats_per_inference"], plan["in_lanes"], plan["in_width"], plan["in_signed"]),
        StreamGeometry(plan["out_beats_per_inference"], plan["out_lanes"], plan["out_width"], plan["out_signed"]))
    report = {}
    if (path / "report.json").is_file():
        report = json.loads((path / "report.json").read_text())
    cycles = report.get("cycle_model", {})
    model = Path(report["model"]) if report.get("model") else None
    return BoardDesign(name=report.get("network", top), top=top, verilog=verilog_path.read_text(),
                       geometry=geometry, source=path, initiation_interval=plan.get("initiation_interval"),
                       latency_cycles=cycles.get("latency_cycles"), model=model)


class VerilogDesign(wiring.Component):
    """The design's Verilog module as an Amaranth component with flat `inp` / `out` streams.

    The Verilog is Amaranth's own output for a component with `inp` and `out` streams, whose ports are named
    `<stream>__payload`, `__valid`, `__ready`, plus `clk` and `rst`."""

    def __init__(self, design: BoardDesign):
        self.board_design = design
        g = design.geometry
        super().__init__({"inp": In(stream.Signature(unsigned(g.inp.beat_bits))),
                          "out": Out(stream.Signature(unsigned(g.out.beat_bits)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.network = Instance(
            self.board_design.top,
            i_clk=ClockSignal(), i_rst=ResetSignal(),
            i_inp__payload=self.inp.payload, i_inp__valid=self.inp.valid, o_inp__ready=self.inp.ready,
            o_out__payload=self.out.payload, o_out__valid=self.out.valid, i_out__ready=self.out.ready)
        return m
