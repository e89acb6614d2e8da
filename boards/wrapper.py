"""A serial-I/O wrapper so that a block with hundreds of port bits can be placed and routed on a real part.

An 8x8 array has ~360 port bits, more than the user pins of an ECP5-85F in CABGA381, and unconstrained
wide ports would measure pad timing rather than the core. The wrapper feeds every input bit of the core
from a shift register loaded one bit per cycle through `serial_in`, and captures every output bit into a
shift register read out through `serial_out` (parallel load while `capture` is high). Every core port is
then driven by, or drives, a flip-flop: nothing can be optimized away, and the achieved Fmax is the core's
register-to-register Fmax. The wrapper's registers appear in place-and-route utilization only; resource
reports come from synthesizing the bare core.

Inputs reach the core through a hold register loaded from the shift register while `load` is high. Fed
straight from a shift register, the core's own input pipelines (skew registers, delay lines) would equal
later bits of that shift register, and synthesis merges them: the 8x8 array then lost its skew registers
and read operands from across the chip (73 MHz instead of the core's own ~100 MHz).

The wrapper is plain Verilog written from the core's port list, so it works for any Verilog top, not
only for hardwire's own blocks. Ports named `clk` and `rst` are passed through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CLOCK_PORTS = ("clk",)
RESET_PORTS = ("rst",)


@dataclass(frozen=True)
class Port:
    name: str
    direction: str  # "input" or "output"
    width: int


def _identifier(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", name) else f"\\{name} "


def serial_io_wrapper(top: str, ports: list[Port], wrapper_top: str | None = None) -> tuple[str, str]:
    """(wrapper module name, Verilog text) for `top` with `ports`.

    Wrapper ports: clk, rst, serial_in, load (inputs: shift register -> hold register), capture (outputs ->
    shift register), serial_out."""
    wrapper_top = wrapper_top or f"{top}_serial_io"
    bad = [p for p in ports if p.direction not in ("input", "output")]
    if bad:
        raise ValueError(f"port {bad[0].name!r} has direction {bad[0].direction!r}: only input/output wrap")
    inputs = [p for p in ports if p.direction == "input" and p.name not in CLOCK_PORTS + RESET_PORTS]
    outputs = [p for p in ports if p.direction == "output"]
    in_width = max(1, sum(p.width for p in inputs))
    out_width = max(1, sum(p.width for p in outputs))

    connections = []
    offset = 0
    for p in inputs:
        connections.append(f"    .{_identifier(p.name)}(in_hold[{offset + p.width - 1}:{offset}])")
        offset += p.width
    offset = 0
    for p in outputs:
        connections.append(f"    .{_identifier(p.name)}(out_bits[{offset + p.width - 1}:{offset}])")
        offset += p.width
    for p in ports:
        if p.name in CLOCK_PORTS:
            connections.append(f"    .{_identifier(p.name)}(clk)")
        elif p.name in RESET_PORTS:
            connections.append(f"    .{_identifier(p.name)}(rst)")

    shift_in = "serial_in" if in_width == 1 else f"{{in_chain[{in_width - 2}:0], serial_in}}"
    shift_out = "1'b0" if out_width == 1 else f"{{1'b0, out_chain[{out_width - 1}:1]}}"
    text = f"""// Serial-I/O wrapper of {top} for place and route (see hardwire.boards.wrapper).
module {wrapper_top} (
  input wire clk,
  input wire rst,
  input wire serial_in,
  input wire load,
  input wire capture,
  output wire serial_out
);
  reg [{in_width - 1}:0] in_chain = {in_width}'d0;
  reg [{in_width - 1}:0] in_hold = {in_width}'d0;
  reg [{out_width - 1}:0] out_chain = {out_width}'d0;
  wire [{out_width - 1}:0] out_bits;
  always @(posedge clk) in_chain <= {shift_in};
  always @(posedge clk) if (load) in_hold <= in_chain;
  always @(posedge clk) out_chain <= capture ? out_bits : {shift_out};
  assign serial_out = out_chain[0];
  {_identifier(top)} core (
{("," + chr(10)).join(connections)}
  );
endmodule
"""
    return wrapper_top, text


def ports_from_yosys_json(module: dict) -> list[Port]:
    """Ports of one module of a yosys `write_json` netlist, in declaration order."""
    return [Port(name, info["direction"], len(info["bits"])) for name, info in module["ports"].items()]
