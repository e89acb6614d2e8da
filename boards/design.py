"""What goes on a board: a compiled network folder (`hardwire compile` output) read back as Verilog plus the
geometry of its input and output streams, and an Amaranth component that instantiates that Verilog so the
board top (boards/top.py) and the whole-board simulation build the very same netlist."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, Shape, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hardwire.boards.link import LinkGeometry, StreamGeometry
from hardwire.flows import memfiles
from hardwire.errors import ParameterError


@dataclass(frozen=True)
class BoardDesign:
    """A streaming design ready for a board: its Verilog, top module and link geometry.

    `initiation_interval`, `latency_cycles` and `first_output_cycles` (first input to first output) come from
    the compiled network's cycle model (None if unknown);
    `model` is the QONNX file it was compiled from, so the host driver can quantize float inputs."""

    name: str
    top: str
    verilog: str
    geometry: LinkGeometry
    source: Path
    initiation_interval: int | None = None
    latency_cycles: int | None = None
    first_output_cycles: int | None = None
    model: Path | None = None


def load_design(path, frame: tuple[int, int] | None = None) -> BoardDesign:
    """A `hardwire compile` (RTL back end) output folder, or a block configuration (the JSON `hardwire gen`
    writes beside the Verilog) with `frame` = (input beats, output beats) per inference -> BoardDesign."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        return _block_design(path, frame)
    plan_path = path / "plan.json"
    if not path.is_dir() or not plan_path.is_file():
        raise ParameterError("design", str(path), "a folder written by `hardwire compile` (with plan.json)")
    plan = json.loads(plan_path.read_text())
    missing = [k for k in ("in_width", "in_signed", "out_width", "out_signed") if k not in plan]
    if missing:
        raise ParameterError(
            "design",
            str(path),
            "a folder from this hardwire version's `hardwire compile` "
            f"(plan.json lacks {', '.join(missing)}: compile it again)",
        )
    top = plan["top"]
    verilog_path = path / f"{top}.v"
    if not verilog_path.is_file():
        raise ParameterError("design", str(path), f"a compiled folder holding {top}.v")
    geometry = LinkGeometry(
        StreamGeometry(plan["in_beats_per_inference"], plan["in_lanes"], plan["in_width"], plan["in_signed"]),
        StreamGeometry(plan["out_beats_per_inference"], plan["out_lanes"], plan["out_width"], plan["out_signed"]),
    )
    report = {}
    if (path / "report.json").is_file():
        report = json.loads((path / "report.json").read_text())
    cycles = report.get("cycle_model", {})
    model = Path(report["model"]) if report.get("model") else None
    # memories read from .hex files go back inline: the board flows handle the design as one text
    verilog = memfiles.inline(verilog_path.read_text(), path)
    return BoardDesign(
        name=report.get("network", top),
        top=top,
        verilog=verilog,
        geometry=geometry,
        source=path,
        initiation_interval=plan.get("initiation_interval"),
        latency_cycles=cycles.get("latency_cycles"),
        first_output_cycles=cycles.get("first_output_cycles"),
        model=model,
    )


class VerilogDesign(wiring.Component):
    """The design's Verilog module as an Amaranth component with flat `inp` / `out` streams.

    The Verilog is Amaranth's own output for a component with `inp` and `out` streams, whose ports are named
    `<stream>__payload`, `__valid`, `__ready`, plus `clk` and `rst`."""

    def __init__(self, design: BoardDesign):
        self.board_design = design
        g = design.geometry
        super().__init__(
            {
                "inp": In(stream.Signature(unsigned(g.inp.beat_bits))),
                "out": Out(stream.Signature(unsigned(g.out.beat_bits))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.network = Instance(
            self.board_design.top,
            i_clk=ClockSignal(),
            i_rst=ResetSignal(),
            i_inp__payload=self.inp.payload,
            i_inp__valid=self.inp.valid,
            o_inp__ready=self.inp.ready,
            o_out__payload=self.out.payload,
            o_out__valid=self.out.valid,
            i_out__ready=self.out.ready,
        )
        return m


def _block_design(path: Path, frame: tuple[int, int] | None) -> BoardDesign:
    """A block from gen/ with one input and one output stream, rebuilt from its `hardwire gen` JSON."""
    from amaranth.lib import data

    from hardwire.gen import registry

    try:
        meta = json.loads(path.read_text())
        block = registry.get(meta["block"])
        params = block.params(
            **{k: v for k, v in meta["params"].items() if k in {f.name for f in dataclasses.fields(block.params)}}
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ParameterError(
            "design", str(path), f"a block configuration written by `hardwire gen` ({error})"
        ) from None
    top, verilog_text, component = registry.to_verilog(block, params)
    members = set(component.signature.members)
    if members != {"inp", "out"}:
        raise ParameterError(
            "design",
            str(path),
            "a block with one input stream `inp` and one output stream `out` "
            f"({meta['block']} has {', '.join(sorted(members))})",
        )
    if frame is None or len(frame) != 2 or min(frame) < 1:
        raise ParameterError(
            "frame",
            frame,
            "IN_BEATS,OUT_BEATS: the beats of one inference in and out of "
            f"{meta['block']} (a block configuration does not say)",
        )

    def stream_geometry(member: str, beats: int) -> StreamGeometry:
        layout = component.signature.members[member].signature.members["payload"].shape
        if isinstance(layout, data.ArrayLayout):
            element = Shape.cast(layout.elem_shape)
            return StreamGeometry(beats, layout.length, element.width, element.signed)
        return StreamGeometry(beats, 1, Shape.cast(layout).width, False)  # a struct travels as raw bits

    geometry = LinkGeometry(stream_geometry("inp", frame[0]), stream_geometry("out", frame[1]))
    return BoardDesign(name=top, top=top, verilog=verilog_text, geometry=geometry, source=path)
