"""The `hardwire` command line: gen, sim, synth, lint, compile, demo.

Each handler parses its options, calls the function of the Python API (hardwire.api) that does the job and
prints the result, so the command line and Python give the same report. Errors that hardwire raises on purpose
print as one line (exit 2 for bad parameters or input, 1 for a failed tool or simulation); only a bug in
hardwire itself shows a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path

from hardwire.errors import HardwireError, HardwireWarning, ModelError, ParameterError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def add_param_options(parser: argparse.ArgumentParser, params_cls) -> None:
    """One option per field of a block's parameter dataclass (`a_width` -> `--a-width`)."""
    group = parser.add_argument_group(f"{params_cls.__name__} parameters")
    for f in dataclasses.fields(params_cls):
        option = "--" + f.name.replace("_", "-")
        default = f.default
        annotation = str(f.type)
        if isinstance(default, bool):
            group.add_argument(
                option,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"(default: {default})",
            )
        elif isinstance(default, int) or annotation.startswith("int"):
            group.add_argument(
                option,
                dest=f.name,
                type=int,
                metavar="N",
                default=argparse.SUPPRESS,
                help=f"(default: {'derived' if default is None else default})",
            )
        else:
            group.add_argument(
                option,
                dest=f.name,
                type=str,
                metavar="STR",
                default=argparse.SUPPRESS,
                help=f"(default: {'derived' if default is None else default})",
            )


def _block_parser(sub, command: str, help_text: str, extra) -> None:
    """`hardwire COMMAND BLOCK [block params]`: one sub-subcommand per registered block."""
    from hardwire.gen import registry

    parser = sub.add_parser(command, help=help_text, description=help_text)
    blocks = parser.add_subparsers(dest="block", metavar="BLOCK", required=True)
    for name, block in registry.blocks().items():
        block_parser = blocks.add_parser(name, help=block.summary, description=block.summary)
        add_param_options(block_parser, block.params)
        extra(block_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hardwire",
        description="Generate, simulate, lint and synthesize neural-network accelerator blocks with open tools.",
    )
    from hardwire import __version__

    parser.add_argument("--version", action="version", version=f"hardwire {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def gen_options(p):
        p.add_argument("-o", "--out", type=Path, default=Path("."), help="output folder (default: .)")
        p.add_argument("--fusesoc", action="store_true", help="also write a FuseSoC CAPI2 .core file")

    def sim_options(p):
        p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
        p.add_argument("--waves", action="store_true", help="dump a waveform (Verilator: VCD; Icarus: FST)")
        p.add_argument("--seed", type=int, default=1, help="random seed of the test vectors (default: 1)")
        p.add_argument("--json", type=Path, help="also write the results as JSON to this file")

    _block_parser(sub, "gen", "generate a block's Verilog and a JSON description of it", gen_options)
    _block_parser(sub, "sim", "verify a block in simulation against its golden model (cocotb)", sim_options)

    synth = sub.add_parser(
        "synth",
        help="synthesize Verilog with yosys (and optionally place and route)",
        description="Synthesize with yosys; with --pnr also place and route with nextpnr.",
    )
    synth.add_argument("verilog", type=Path, nargs="+", help="Verilog file(s)")
    synth.add_argument("--top", required=True, help="top module name")
    synth.add_argument(
        "--target",
        default="ecp5",
        help="ice40, ecp5, xilinx, generic, or asic:LIB for standard "
        "cells (LIB: osu018, osu035, osu050 or a .lib file; "
        "timed with OpenSTA) (default: ecp5)",
    )
    synth.add_argument("--clock", default="clk", help="asic: the clock input port (default: clk)")
    synth.add_argument("--clock-ns", type=float, default=10.0, help="asic: clock period in ns (default: 10)")
    synth.add_argument("--pnr", action="store_true", help="also run nextpnr (ice40, ecp5) for Fmax")
    synth.add_argument("--device", help="nextpnr device (ecp5: 25k/45k/85k, ice40: up5k/hx8k/...)")
    synth.add_argument("--package", help="nextpnr package (e.g. CABGA381, sg48)")
    synth.add_argument("-o", "--out", type=Path, default=Path("."), help="folder for report.json (default: .)")

    lint = sub.add_parser(
        "lint",
        help="lint Verilog with verilator --lint-only -Wall",
        description="Verilator lint; only what Amaranth's back end emits by construction "
        "is waived (see hardwire.flows.lint). Exit 0 when clean.",
    )
    lint.add_argument("verilog", type=Path, nargs="+")
    lint.add_argument("--top", required=True)

    comp = sub.add_parser(
        "compile",
        help="compile a quantized network (QONNX) to streaming RTL or an hls4ml project",
        description="Brevitas/QONNX network -> integer layers -> either our streaming dataflow RTL (verified in "
        "Verilator against qonnx execution, synthesized with yosys, placed and routed with nextpnr) or "
        "an hls4ml project (C-simulated with g++ against qonnx execution).",
    )
    comp.add_argument(
        "model",
        help="a QONNX .onnx file, or zoo:NAME for a built-in digits network "
        "(zoo:mlp4, zoo:mlp2, zoo:cnn4; trained on first use)",
    )
    comp.add_argument("--backend", choices=("rtl", "hls4ml"), default="rtl")
    comp.add_argument("--target", default="ecp5", help="ecp5 (default), ice40, xilinx, xilinx-us, xilinx-usp, generic")
    speed = comp.add_mutually_exclusive_group()
    speed.add_argument("--fps", type=float, help="target inferences per second at --clock-mhz")
    speed.add_argument("--budget", help="resource budget for the folding, e.g. lut=20000")
    speed.add_argument(
        "--fold",
        action="append",
        metavar="LAYER=PE,SIMD",
        help="explicit folding of one layer (repeatable; other layers fully folded)",
    )
    comp.add_argument("--clock-mhz", type=float, default=100.0, help="clock for the throughput target (default 100)")
    comp.add_argument(
        "--inputs",
        type=Path,
        help="verification inputs (.npy, float, in the model's input layout); "
        "default: the digits test split for zoo models, else random",
    )
    comp.add_argument("--random", type=int, default=64, metavar="N", help="random verification inputs (default 64)")
    comp.add_argument("--no-sim", dest="simulate", action="store_false", help="skip the Verilator run")
    comp.add_argument(
        "--sim-driver",
        choices=("fastsim", "cocotb"),
        default="fastsim",
        help="what drives the Verilator run: fastsim, a C++ harness (default), or the cocotb testbench",
    )
    comp.add_argument("--no-synth", dest="synthesize", action="store_false", help="skip yosys and nextpnr")
    comp.add_argument("--no-pnr", dest="place_route", action="store_false", help="skip nextpnr")
    comp.add_argument(
        "--synth-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="time limit of each yosys and nextpnr run (default 1800)",
    )
    comp.add_argument(
        "--per-unit",
        action="store_true",
        help="resources from each streaming unit synthesized on its own, in parallel and cached per "
        "unit (a changed layer resynthesizes only its unit); place and route reads the units' netlists "
        "stitched together",
    )
    comp.add_argument("--jobs", type=int, default=2, help="parallel unit syntheses with --per-unit (default 2)")
    comp.add_argument(
        "--explain",
        action="store_true",
        help="print the compile passes (clean-up, pre-processing, streamlining, branches, folding, "
        "lowering), how long each took and what each changed",
    )
    comp.add_argument("-o", "--out", type=Path, required=True, help="output folder (replaced when done)")

    demo = sub.add_parser(
        "demo",
        help="the whole flow on a built-in 8x8 INT8 systolic array",
        description="Generate, simulate against torch, lint, synthesize (ecp5, xilinx, "
        "ice40), place and route, and write report.json + report.md.",
    )
    demo.add_argument(
        "-o", "--out", type=Path, default=Path("hardwire-demo"), help="output folder (default: ./hardwire-demo)"
    )
    demo.add_argument("--jobs", type=int, default=2, help="parallel tool runs (default: 2)")

    from hardwire.estimate.cli import add_parsers as estimate_parsers

    COMMANDS.update(estimate_parsers(sub))

    from hardwire.boards.cli import register as register_boards

    COMMANDS.update(register_boards(sub))

    from hardwire.estimate.explore_cli import add_parsers as explore_parsers

    COMMANDS.update(explore_parsers(sub))
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """hardwire's own warnings (PrecisionWarning) as one line; any other as Python prints it."""
    if issubclass(category, HardwireWarning):
        print(f"hardwire: warning: {message}", file=sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            warnings.simplefilter("always", HardwireWarning)
            return COMMANDS[args.command](args)
    except (ParameterError, ModelError) as error:
        print(f"hardwire: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except HardwireError as error:
        print(f"hardwire: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("hardwire: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`hardwire dataset info | head`): stop quietly, as Unix tools do; further
        # writes at exit go to /dev/null instead of raising again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def cmd_compile(args) -> int:
    from hardwire.api import compile as compile_network

    compile_network(
        args.model,
        out=args.out,
        backend=args.backend,
        target=args.target,
        fps=args.fps,
        budget=args.budget,
        folds=args.fold,
        clock_mhz=args.clock_mhz,
        inputs=args.inputs,
        random=args.random,
        simulate=args.simulate,
        synthesize=args.synthesize,
        place_route=args.place_route,
        synth_timeout=args.synth_timeout,
        per_unit=args.per_unit,
        jobs=args.jobs,
        sim_driver=args.sim_driver,
        explain=args.explain,
        progress=print,
    )
    return 0


def param_values(params_cls, args: argparse.Namespace) -> dict:
    """The block parameters given on the command line (the rest keep their defaults)."""
    names = {f.name for f in dataclasses.fields(params_cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def cmd_gen(args) -> int:
    from hardwire.api import generate
    from hardwire.gen import registry

    block = registry.get(args.block)
    result = generate(args.block, param_values(block.params, args), out=args.out, fusesoc=args.fusesoc)
    print(f"wrote {result.verilog}")
    print(f"wrote {result.description}")
    if result.core:
        print(f"wrote {result.core}")
    if result.error_summary:
        print(f"{result.top}: {result.error_summary}")
    return 0


def cmd_sim(args) -> int:
    from hardwire.api import simulate
    from hardwire.gen import registry

    block = registry.get(args.block)
    result = simulate(
        args.block,
        param_values(block.params, args),
        simulator=args.simulator,
        waves=args.waves,
        seed=args.seed,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(result.text)
    if result.error_summary:
        print(f"{result.top}: {result.error_summary}")
    if args.json:
        args.json.write_text(json.dumps(result.report, indent=2) + "\n")
    return 0 if result.ok else EXIT_FAILED


def cmd_synth(args) -> int:
    from hardwire.api import synth

    print(
        synth(
            args.verilog,
            args.top,
            args.target,
            pnr=args.pnr,
            device=args.device,
            package=args.package,
            clock=args.clock,
            clock_ns=args.clock_ns,
            out=args.out,
        ).text
    )
    return 0


def cmd_lint(args) -> int:
    from hardwire.flows.lint import lint

    _check_files(args.verilog)
    report = lint(args.verilog, args.top)
    for warning in report.warnings:
        if not warning["waived"]:
            print(f"{warning['file']}:{warning['line']}: {warning['rule']}: {warning['message']}")
    waived = sum(1 for w in report.warnings if w["waived"])
    status = "clean" if report.clean else "NOT clean"
    print(
        f"{args.top}: {status} ({len(report.warnings) - waived} warnings, {waived} waived by-construction "
        f"Amaranth warnings; log {report.log_path})"
    )
    return 0 if report.clean else EXIT_FAILED


def cmd_demo(args) -> int:
    from hardwire.demo import run_demo

    run_demo(args.out, jobs=args.jobs)
    return 0


def _check_files(paths) -> None:
    for path in paths:
        if not Path(path).is_file():
            raise ParameterError("verilog", str(path), "an existing Verilog file")


COMMANDS = {
    "gen": cmd_gen,
    "sim": cmd_sim,
    "synth": cmd_synth,
    "lint": cmd_lint,
    "compile": cmd_compile,
    "demo": cmd_demo,
}


if __name__ == "__main__":
    sys.exit(main())
