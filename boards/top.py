"""The board top: the board's clock (its oscillator, or a PLL to a requested frequency), a reset synchronizer,
the UART bridge and the design, with the UART pins from the board's platform definition."""

from __future__ import annotations

from amaranth.back import verilog

from hardwire.boards.design import BoardDesign, VerilogDesign
from hardwire.boards.uart import BridgedDesign, BridgeParams

SIM_TOP = "board_link"


def bridged_verilog(design: BoardDesign, params: BridgeParams, top: str = SIM_TOP) -> str:
    """Verilog of the design behind its UART bridge (ports clk, rst, rx, tx) followed by the design's own
    Verilog: what the whole-board simulation runs and what every board top wraps."""
    text = verilog.convert(BridgedDesign(VerilogDesign(design), params), name=top, emit_src=False)
    return text + "\n" + design.verilog
