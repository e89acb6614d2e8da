"""The block registry: each gen/ module registers its parameters, component, golden and cycle models and
testbench under a short name, so the CLI, benchmarks and dataset sweeps find blocks without a hand-kept list.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amaranth.back import verilog

from hardwire.cache import write_json_atomic, write_text_atomic
from hardwire.errors import HardwireError


@dataclass(frozen=True)
class Block:
    name: str
    summary: str
    params: type  # frozen dataclass that validates itself
    component: Callable[[Any], Any]  # params -> amaranth wiring.Component
    golden: Callable  # bit-exact model
    cycles: Callable  # cycle model
    testbench: str  # dotted module of the cocotb testbench
    generator_version: str = "1"
    # optional: params -> an analytic bound on |golden - float reference| in output LSBs, and what the
    # reference is; `hardwire gen` / `sim` and the generated JSON state it beside the block's summary
    error_bound: Callable[[Any], float] | None = None
    error_reference: str = ""
    # optional: params -> [(file name, Verilog text)] of the primitive models a simulation needs beside the
    # generated Verilog (hard DSP blocks instantiated by gen.dsp)
    sim_models: Callable[[Any], list] | None = None

    def error_summary(self, params) -> str | None:
        """One line stating the configuration's analytic error bound, or None for a block without one."""
        if self.error_bound is None:
            return None
        return f"analytic error bound: <= {self.error_bound(params):.3g} output LSB vs {self.error_reference}"


_BLOCKS: dict[str, Block] = {}


def register(block: Block) -> Block:
    _BLOCKS[block.name] = block
    return block


def blocks() -> dict[str, Block]:
    """Every registered block, importing each gen/ module once so that it registers itself."""
    package = importlib.import_module("hardwire.gen")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "registry":
            importlib.import_module(f"hardwire.gen.{info.name}")
    return dict(sorted(_BLOCKS.items()))


def get(name: str) -> Block:
    known = blocks()
    if name not in known:
        raise HardwireError(f"unknown block {name!r}: known blocks are {', '.join(known)}")
    return known[name]


def to_verilog(block: Block, params):
    """(top module name, Verilog text, component). Deterministic: no source locations are emitted, so the
    same parameters give the same bytes on any machine."""
    component = block.component(params)
    top = params.top_name
    return top, verilog.convert(component, name=top, emit_src=False), component


def port_list(component) -> list[dict]:
    """The component's flattened ports as Verilog sees them (name, direction, width)."""
    ports = [{"name": "clk", "direction": "input", "width": 1}, {"name": "rst", "direction": "input", "width": 1}]
    for path, member, value in component.signature.flatten(component):
        ports.append(
            {
                "name": "__".join(str(part) for part in path),
                "direction": "input" if member.flow.name == "In" else "output",
                "width": len(value.as_value()) if hasattr(value, "as_value") else len(value),
            }
        )
    return ports


def generate(name: str, params, out_dir: Path) -> dict:
    """Write `<top>.v` and `<top>.json` (parameters, ports, generator version) into `out_dir` atomically."""
    block = get(name)
    top, text, component = to_verilog(block, params)
    meta = {
        "block": name,
        "top": top,
        "generator_version": block.generator_version,
        "params": params.to_dict() if hasattr(params, "to_dict") else dataclasses.asdict(params),
        "ports": port_list(component),
    }
    if block.error_bound is not None:
        meta["error_bound_lsb"] = block.error_bound(params)
        meta["error_reference"] = block.error_reference
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / f"{top}.v", text)
    write_json_atomic(out_dir / f"{top}.json", meta)
    meta["verilog"] = str(out_dir / f"{top}.v")
    return meta
