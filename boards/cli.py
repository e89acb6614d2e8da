"""`hardwire build`, `hardwire run`, `hardwire export` and `hardwire boards`: a compiled network on a board."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from hardwire.errors import HardwireError, ParameterError, ToolMissingError

OPENFPGALOADER_HINT = (
    "openFPGALoader is not installed: apt-get install openfpgaloader (Debian/Ubuntu), "
    "brew install openfpgaloader, or see https://trabucayre.github.io/openFPGALoader/"
)


def register(sub) -> dict:
    """Add the board subcommands to the `hardwire` parser; returns {command: handler}."""
    from hardwire.boards.link import DEFAULT_BAUD
    from hardwire.boards.platforms import BOARDS

    open_boards = [name for name, board in BOARDS.items() if not board.exports_only]
    xilinx_boards = [name for name, board in BOARDS.items() if board.exports_only]

    build = sub.add_parser(
        "build",
        help="build a bitstream of a compiled network for a board",
        description="Board top (oscillator clock, reset synchronizer, UART bridge, the design), "
        "yosys, nextpnr with the board's pins and clock, and the packer.",
    )
    build.add_argument(
        "design", type=Path, help="a `hardwire compile` output folder, or a block's `hardwire gen` JSON (with --frame)"
    )
    build.add_argument(
        "--frame", type=_frame, metavar="IN,OUT", help="for a block configuration: input and output beats per inference"
    )
    build.add_argument("--board", required=True, help=", ".join(open_boards))
    build.add_argument("--baud", type=int, default=DEFAULT_BAUD, help=f"UART baud rate (default {DEFAULT_BAUD})")
    build.add_argument(
        "--clock-mhz",
        type=float,
        help="clock the design from a PLL at this frequency (iCE40, ECP5, Gowin; default: the board's oscillator)",
    )
    build.add_argument(
        "--allow-timing-violation",
        action="store_true",
        help="write the bitstream even when the design misses the board's clock",
    )
    build.add_argument("--program", action="store_true", help="program the board with openFPGALoader")
    build.add_argument("-o", "--out", type=Path, required=True, help="output folder (replaced when done)")

    run = sub.add_parser(
        "run",
        help="run inferences on a board over its serial port",
        description="Send inputs to a board built with `hardwire build` and print its outputs.",
    )
    run.add_argument("design", type=Path, help="the `hardwire compile` folder the board was built from")
    run.add_argument("--board", required=True, help=", ".join(BOARDS))
    run.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1 (any pyserial URL)")
    run.add_argument(
        "--inputs",
        type=Path,
        required=True,
        help=".npy: float inputs in the model's layout, or integer codes (inferences x elements)",
    )
    run.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    run.add_argument("--frame", type=_frame, metavar="IN,OUT", help="for a block configuration: beats in, out")
    run.add_argument("--output", type=Path, help="write the outputs as .npy here")

    export = sub.add_parser(
        "export",
        help="write a Vivado project (Tcl, XDC, sources) for an AMD/Xilinx board",
        description="hardwire writes the project; it does not run Vivado.",
    )
    export.add_argument("design", type=Path, help="a `hardwire compile` output folder or a block's JSON (with --frame)")
    export.add_argument("--frame", type=_frame, metavar="IN,OUT", help="for a block configuration: beats in, out")
    export.add_argument("--board", required=True, help=", ".join(xilinx_boards))
    export.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    export.add_argument("-o", "--out", type=Path, required=True)
    return {"build": cmd_build, "run": cmd_run, "export": cmd_export}


def _frame(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not IN_BEATS,OUT_BEATS (two positive integers)")
    return int(parts[0]), int(parts[1])


def cmd_build(args: argparse.Namespace) -> int:
    from hardwire.api import build

    from hardwire.boards.platforms import get_board

    board = get_board(args.board)
    result = build(
        args.design,
        args.board,
        out=args.out,
        frame=args.frame,
        baud=args.baud,
        clock_mhz=args.clock_mhz,
        allow_timing_violation=args.allow_timing_violation,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(result.text)
    if args.program:  # after the report is out, so a failed programming run still shows the build
        program(board, result.bitstream)
    return 0


def program(board, bitstream: Path) -> None:
    loader = shutil.which("openFPGALoader")
    if loader is None:
        raise ToolMissingError(OPENFPGALOADER_HINT + f"; then: openFPGALoader -b {board.loader_board} {bitstream}")
    cmd = [loader, "-b", board.loader_board, str(bitstream)]
    try:
        done = subprocess.run(cmd, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise HardwireError(f"{' '.join(cmd)} failed: {error}") from None
    if done.returncode != 0:
        raise HardwireError(f"{' '.join(cmd)} exited with code {done.returncode} (is the board plugged in?)")


def cmd_export(args: argparse.Namespace) -> int:
    from hardwire.boards.design import load_design
    from hardwire.boards.export import export_vivado

    summary = export_vivado(load_design(args.design, args.frame), args.board, args.out, baud=args.baud)
    print(
        f"wrote {args.out}: {', '.join(summary['files'])} for {summary['part']} "
        f"({summary['note']} Build with: {summary['build']})"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from hardwire.boards.design import load_design
    from hardwire.boards.host import BoardLink
    from hardwire.boards.platforms import get_board

    get_board(args.board)
    design = load_design(args.design, args.frame)
    if not args.inputs.is_file():
        raise ParameterError("inputs", str(args.inputs), "an existing .npy file")
    x = np.load(args.inputs)
    graph = None
    if np.issubdtype(x.dtype, np.floating):
        if design.model is None or not design.model.is_file():
            raise ParameterError(
                "inputs",
                str(args.inputs),
                f"integer codes (the compiled folder's model file, {design.model}, is not there to quantize floats)",
            )
        from hardwire.hls import frontend

        graph = frontend.build_graph(frontend.load_model(design.model), design.name)
        codes = frontend.quantize_input(graph, x).reshape(len(x), -1)
    else:
        codes = x.reshape(len(x), -1)
    host = BoardLink.open(args.port, args.baud)
    geometry = host.info()
    if geometry != design.geometry:
        raise ParameterError("port", args.port, f"a board running {design.name} (it reports {geometry.to_dict()})")
    outputs = host.infer(codes)
    result = outputs if graph is None else frontend.model_output(graph, outputs)
    if args.output:
        np.save(args.output, result)
    print(f"{len(outputs)} inferences; {len(host.errors)} link errors recovered")
    if graph is not None:
        print("argmax:", " ".join(map(str, result.argmax(1).tolist())))
    return 0
