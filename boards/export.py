"""`hardwire export`: an AMD/Xilinx board's Vivado build (Tcl script, XDC constraints, Verilog sources).

The files are what amaranth's XilinxPlatform writes for its Vivado toolchain, from the amaranth-boards pin
data (PYNQ-Z2: see boards/platforms.py): `top.tcl` creates the project for the board's part, adds the sources
and the XDC, and runs synthesis, placement, routing and `write_bitstream`; `top.xdc` holds every pin's LOC
and I/O standard and the oscillator's `create_clock`. hardwire does not run Vivado: `vivado -mode batch
-source top.tcl` in the folder builds the bitstream where Vivado is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

from hardwire.boards.build import NAME, BoardTop
from hardwire.boards.design import BoardDesign
from hardwire.boards.platforms import get_board
from hardwire.cache import atomic_dir, write_text_atomic
from hardwire.errors import ParameterError


def export_vivado(design: BoardDesign, board_name: str, out_dir, *, baud: int = 115_200) -> dict:
    """Write the Vivado build of `design` on `board_name` into `out_dir`; returns a summary dict."""
    board = get_board(board_name)
    if not board.exports_only:
        raise ParameterError(
            "board",
            board_name,
            "an AMD/Xilinx board (arty-a7-35, pynq-z2); open-toolchain boards get a bitstream from `hardwire build`",
        )
    if not 1200 <= baud <= board.max_baud:
        raise ParameterError("baud", baud, f"1200..{board.max_baud}")
    platform = board.platform()
    top = BoardTop(design, baud)
    plan = platform.prepare(top, name=NAME)
    out_dir = Path(out_dir)
    written = []
    with atomic_dir(out_dir, replace=True) as work:
        for name, content in plan.files.items():
            if name.endswith((".sh", ".bat")) or name.startswith("."):
                continue
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
            written.append(name)
        summary = {
            "board": board.name,
            "title": board.title,
            "part": platform._part,
            "design": design.name,
            "clock_mhz": platform.default_clk_frequency / 1e6,
            "baud": baud,
            "clocks_per_bit": top.params.clocks_per_bit,
            "uart": board.uart_note,
            "files": sorted(written),
            "build": "vivado -mode batch -source top.tcl",
            "note": "hardwire does not run Vivado: the project is written, not built or checked by Vivado.",
        }
        write_text_atomic(work / "export.json", json.dumps(summary, indent=2) + "\n")
        write_text_atomic(
            work / "README.md",
            (
                f"# {design.name} on the {board.title}\n\n"
                f"Part {summary['part']}, clock {summary['clock_mhz']:g} MHz (board oscillator), host link "
                f"{baud} baud 8N1 on the {board.uart_note}.\n\n"
                "Build the bitstream where Vivado is installed:\n\n    vivado -mode batch -source top.tcl\n\n"
                "hardwire wrote these files but did not run Vivado.\n"
            ),
        )
    return summary
