"""hardwire from Python: the command line's commands as functions that return typed results.

Each function here is the one implementation behind its `hardwire` subcommand: the CLI parses its options,
calls the function and prints the result, so a notebook and a shell give the same report for the same
inputs. Each result is a dataclass holding the report (the dict that the command writes as JSON), the
paths it wrote and a `_repr_markdown_`, so that a notebook cell shows its tables. Errors are the CLI's:
`HardwireError` subclasses whose message is one line naming the input at fault (`ParameterError` for a bad
parameter, `ModelError` for a network the compiler cannot take, `ToolError` for a failed tool run).

    import hardwire
    block = hardwire.generate("systolic", rows=4, cols=4, out="out")
    hardwire.simulate("systolic", rows=4, cols=4)
    hardwire.synth(block.verilog, block.top, target="ecp5", pnr=True)
    hardwire.compile(my_brevitas_module, example_input=torch.zeros(1, 64), fps=100_000, out="net")
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardwire.errors import ParameterError

__all__ = [
    "generate",
    "simulate",
    "synth",
    "compile",
    "estimate",
    "build",
    "explore",
    "GenerateResult",
    "SimulateResult",
    "SynthResult",
    "CompileResult",
    "EstimateResult",
    "BuildResult",
    "ExploreResult",
]


def _quiet(_message: str) -> None:
    pass


def _table(headers: list[str], rows: list[list]) -> str:
    from hardwire.flows.report import markdown_table

    return markdown_table(headers, rows)


def block_params(block, params=None, overrides: Mapping[str, Any] | None = None):
    """A block's parameter dataclass from a dataclass instance or a dict, with `overrides` on top; a name the
    block does not have is a ParameterError that lists the names it has."""
    values: dict[str, Any] = {}
    if dataclasses.is_dataclass(params):
        values = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    elif params is not None:
        values = dict(params)
    values.update(overrides or {})
    names = [f.name for f in dataclasses.fields(block.params)]
    for name in values:
        if name not in names:
            raise ParameterError(name, values[name], f"a parameter of block {block.name} ({', '.join(names)})")
    return block.params(**values)


# ---------------------------------------------------------------------------------------------------------------
# generate


@dataclass
class GenerateResult:
    """A generated block: its Verilog, the JSON description beside it and (with `fusesoc=True`) a `.core`."""

    block: str
    top: str
    params: dict
    verilog: Path
    description: Path
    ports: list[dict]
    report: dict  # the JSON description, as written
    error_summary: str | None = None
    core: Path | None = None

    def _repr_markdown_(self) -> str:
        lines = [
            f"### `{self.top}` ({self.block})",
            "",
            _table(["parameter", "value"], [[k, v] for k, v in self.params.items()]),
            "",
            _table(["port", "direction", "width"], [[p["name"], p["direction"], p["width"]] for p in self.ports]),
            "",
            f"Verilog: `{self.verilog}`; description: `{self.description}`"
            + (f"; FuseSoC core: `{self.core}`" if self.core else ""),
        ]
        if self.error_summary:
            lines += ["", self.error_summary]
        return "\n".join(lines)


def generate(
    block: str, params: Any = None, /, *, out: str | Path = ".", fusesoc: bool = False, **values: Any
) -> GenerateResult:
    """Generate a block's Verilog and its JSON description into `out` (`hardwire gen`).

    Args:
        block: a registered block name (`systolic`, `mvu`, ...; see the block catalogue).
        params: the block's parameter dataclass or a dict of its parameters (optional).
        out: the output folder.
        fusesoc: also write a FuseSoC CAPI2 `<top>.core` beside the Verilog.
        **values: block parameters by name, on top of `params` (`rows=4, cols=4`).

    Returns:
        The generated files and the block's description (parameters, ports, error bound).
    """
    from hardwire.gen import registry

    spec = registry.get(block)
    p = block_params(spec, params, values)
    meta = registry.generate(block, p, Path(out))
    verilog = Path(meta.pop("verilog"))
    core = None
    if fusesoc:
        from hardwire.fusesoc import write_core

        core = write_core(verilog.parent, meta["top"], [verilog.name], description=f"hardwire {spec.summary}")
    return GenerateResult(
        block=block,
        top=meta["top"],
        params=meta["params"],
        verilog=verilog,
        description=verilog.with_suffix(".json"),
        ports=meta["ports"],
        report=meta,
        error_summary=spec.error_summary(p),
        core=core,
    )


# ---------------------------------------------------------------------------------------------------------------
# simulate


@dataclass
class SimulateResult:
    """A block verified in simulation against its golden model: per case bit-exactness and cycles."""

    block: str
    top: str
    params: dict
    simulator: str
    ok: bool
    passed: int
    failed: int
    cases: dict
    report: dict  # what `hardwire sim --json` writes
    text: str  # the table `hardwire sim` prints
    log_path: Path
    waves_path: Path | None = None
    failure: str | None = None
    error_summary: str | None = None

    def _repr_markdown_(self) -> str:
        status = "passed" if self.ok else "**FAILED**"
        rows = []
        for name, case in self.cases.items():
            rows.append(
                [
                    name,
                    " x ".join(str(d) for d in case.get("shape", [])),
                    "yes" if case.get("exact") else f"NO ({case.get('mismatches')})",
                    case.get("cycles"),
                    case.get("model_cycles") if case.get("check_cycles") else "(back-pressure)",
                    f"{case.get('utilization', 0):.1%}",
                ]
            )
        lines = [
            f"### `{self.top}` on {self.simulator}: {status} ({self.passed} passed, {self.failed} failed)",
            "",
            _table(["case", "shape", "bit-exact", "cycles", "model cycles", "utilization"], rows),
        ]
        if self.failure:
            lines += ["", f"```\n{self.failure}\n```"]
        if self.error_summary:
            lines += ["", self.error_summary]
        return "\n".join(lines)


def simulate(
    block: str,
    params: Any = None,
    /,
    *,
    simulator: str = "verilator",
    waves: bool = False,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
    **values: Any,
) -> SimulateResult:
    """Verify a block in simulation against its golden model with cocotb (`hardwire sim`).

    A failed check does not raise: the result has `ok` False and the failure text. A broken tool raises.

    Args:
        block: a registered block name.
        params: the block's parameter dataclass or a dict of its parameters (optional).
        simulator: `verilator` or `icarus`.
        waves: dump a waveform (Verilator: VCD; Icarus: FST).
        seed: random seed of the test vectors.
        progress: called with one line per step (default: silent).
        **values: block parameters by name, on top of `params`.

    Returns:
        Each testbench case's result and the report `hardwire sim --json` writes.
    """
    from hardwire.gen import registry
    from hardwire.sim.verify import verify_block

    spec = registry.get(block)
    p = block_params(spec, params, values)
    result = verify_block(block, p, simulator=simulator, waves=waves, seed=seed, progress=progress)
    report = result.to_dict()
    if spec.error_bound is not None:
        report["error_bound_lsb"] = spec.error_bound(p)
    return SimulateResult(
        block=block,
        top=result.top,
        params=result.params,
        simulator=simulator,
        ok=result.ok,
        passed=result.passed,
        failed=result.failed,
        cases=result.cases,
        report=report,
        text=result.table(),
        log_path=Path(result.log_path),
        waves_path=Path(result.waves_path) if result.waves_path else None,
        failure=result.failure,
        error_summary=spec.error_summary(p),
    )


# ---------------------------------------------------------------------------------------------------------------
# synth


@dataclass
class SynthResult:
    """Synthesis (and place-and-route) of Verilog: the resource counts and Fmax of report.json."""

    top: str
    target: str
    report: dict  # report.json, as written
    report_path: Path
    text: str  # the table `hardwire synth` prints

    @property
    def resources(self) -> dict:
        """FPGA: lut, ff, dsp, bram, lutram (yosys); ASIC: the standard-cell mapping's figures."""
        return self.report.get("synth") or self.report.get("asic") or {}

    @property
    def fmax_mhz(self) -> float | None:
        """nextpnr's Fmax (with `pnr=True`) or OpenSTA's (ASIC targets)."""
        if "pnr" in self.report:
            return self.report["pnr"].get("fmax_mhz")
        return self.report.get("asic", {}).get("fmax_mhz")

    def _repr_markdown_(self) -> str:
        r = self.resources
        if "synth" in self.report:
            headers, row = (
                ["LUT", "FF", "DSP", "BRAM", "LUTRAM"],
                [r.get(k) for k in ("lut", "ff", "dsp", "bram", "lutram")],
            )
        else:
            keys = [k for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            headers, row = keys, [r[k] for k in keys]
        if "pnr" in self.report:
            headers, row = (
                headers + ["device", "Fmax MHz"],
                row + [f"{self.report['pnr'].get('device')}/{self.report['pnr'].get('package')}", self.fmax_mhz],
            )
        return f"### `{self.top}` on {self.target}\n\n" + _table(headers, [row]) + f"\n\nreport: `{self.report_path}`"


def synth(
    verilog: str | Path | list[str | Path],
    top: str,
    target: str = "ecp5",
    *,
    pnr: bool = False,
    device: str | None = None,
    package: str | None = None,
    clock: str = "clk",
    clock_ns: float = 10.0,
    out: str | Path = ".",
) -> SynthResult:
    """Synthesize Verilog with yosys, optionally place and route with nextpnr (`hardwire synth`).

    Args:
        verilog: a Verilog file or a list of them.
        top: the top module's name.
        target: `ice40`, `ecp5`, `xilinx`, `xilinx-us`, `xilinx-usp`, `generic`, or `asic:LIB` (LIB: osu018,
            osu035, osu050 or a Liberty file; timed with OpenSTA).
        pnr: also place and route (ice40, ecp5) inside a serial-I/O wrapper for the core's Fmax.
        device: the nextpnr device (ecp5: 25k/45k/85k; ice40: up5k/hx8k/...).
        package: the nextpnr package (e.g. CABGA381, sg48).
        clock: ASIC targets: the clock input port.
        clock_ns: ASIC targets: the clock period in ns.
        out: the folder for report.json.

    Returns:
        The report (yosys' cell counts, nextpnr's Fmax) and where it was written.
    """
    files = [Path(v) for v in ([verilog] if isinstance(verilog, (str, Path)) else verilog)]
    for path in files:
        if not path.is_file():
            raise ParameterError("verilog", str(path), "an existing Verilog file")
    if target.startswith("asic:"):
        from hardwire.flows.asic import asic_report

        data, text = asic_report(files, top, target[5:], clock=clock, clock_ns=clock_ns, out_dir=Path(out))
    else:
        from hardwire.flows.report import synth_report

        data, text = synth_report(files, top, target, pnr=pnr, device=device, package=package, out_dir=Path(out))
    return SynthResult(top=top, target=data["target"], report=data, report_path=Path(out) / "report.json", text=text)


# ---------------------------------------------------------------------------------------------------------------
# compile


@dataclass
class CompileResult:
    """A compiled network: its verified RTL (or hls4ml project) and report (layers, folding, checks,
    throughput, resources, the surrogate's estimate next to the measurement)."""

    network: str
    backend: str
    target: str
    out: Path
    report: dict  # report.json, as written
    report_path: Path
    verilog: Path | None = None
    core: Path | None = None

    @property
    def verified(self) -> bool:
        """The RTL (or hls4ml C-simulation) gave every output bit of qonnx' execution."""
        checked = self.report.get("simulation", {}).get("rtl_vs_qonnx") or self.report.get("csim_vs_qonnx")
        return bool(checked) and checked.get("mismatches") == 0

    def _repr_markdown_(self) -> str:
        from hardwire.hls.compile import markdown_report

        return markdown_report(self.report)


def _identifier(text: str) -> str:
    from hardwire.hls.compile import _identifier as identifier

    return identifier(text)


def resolve_model(model, example_input=None):
    """(QONNX path, network name or None, inputs, labels, what the inputs are) for a torch/Brevitas module, a
    QONNX/ONNX path or zoo:NAME. A module is exported to QONNX with `example_input` into the tool cache,
    under the hash of the exported bytes."""
    if hasattr(model, "forward"):
        from hardwire.hls.frontend import export_module

        return (
            export_module(model, example_input),
            _identifier(type(model).__name__.lower()),
            None,
            None,
            "given inputs",
        )
    text = str(model)
    if text.startswith("zoo:"):
        from hardwire.hls import zoo

        entry = zoo.build(text[4:])
        _, _, x_test, labels = zoo.load_digits_split()
        return (
            entry.onnx_path,
            text[4:],
            x_test.reshape((-1, *entry.input_shape[1:])),
            labels,
            "images of the digits test split",
        )
    return Path(model), None, None, None, "given inputs"


def compile(
    model: Any,
    *,
    out: str | Path | None = None,
    example_input: Any = None,
    backend: str = "rtl",
    target: str = "ecp5",
    fps: float | None = None,
    budget: str | int | None = None,
    folds: Mapping[str, tuple[int, int]] | list[str] | None = None,
    clock_mhz: float = 100.0,
    inputs: Any = None,
    labels: Any = None,
    random: int = 64,
    simulate: bool = True,
    synthesize: bool = True,
    place_route: bool = True,
    name: str | None = None,
    synth_timeout: float | None = None,
    per_unit: bool = False,
    jobs: int | None = None,
    sim_driver: str = "fastsim",
    explain: bool = False,
    progress: Callable[[str], None] | None = None,
) -> CompileResult:  # noqa: A001 - the CLI's word
    """Compile a quantized network to verified streaming RTL or an hls4ml project (`hardwire compile`).

    Args:
        model: a Brevitas (torch) module, a QONNX `.onnx` path, or `zoo:NAME` (zoo:mlp4, zoo:mlp2, zoo:cnn4).
        out: the output folder, replaced when the compile succeeded (default: `hardwire-out/NAME`).
        example_input: for a module: an input tensor; its shape fixes the network's input shape.
        backend: `rtl` (hardwire's streaming dataflow) or `hls4ml`.
        target: `ecp5`, `ice40`, `xilinx`, `xilinx-us`, `xilinx-usp` or `generic`.
        fps: the folding that meets this many inferences per second at `clock_mhz`.
        budget: a LUT budget for the folding (`"lut=20000"` or 20000).
        folds: explicit per-layer folding, `{"dense0": (PE, SIMD)}` or `["dense0=4,8"]`.
        clock_mhz: the clock for the throughput target.
        inputs: verification inputs (array or `.npy` path, float, in the model's input layout); default: the
            digits test split for zoo models, else random inputs on the input quantizer's grid.
        labels: one class per input, for the accuracy of qonnx and of the RTL.
        random: how many random verification inputs.
        simulate: run the RTL in Verilator against qonnx.
        synthesize: run yosys (and nextpnr on ice40/ecp5).
        place_route: run nextpnr when synthesizing.
        name: the network's (and top module's) name.
        synth_timeout: seconds each yosys / nextpnr run may take (default: the flow's own limit).
        per_unit: also synthesize each streaming unit out of context (cached per unit; a changed folding
            resynthesizes only the units it changed) and report the network as their sum plus the glue.
        jobs: processes for the per-unit synthesis (default 2).
        sim_driver: what drives the Verilator model: `fastsim` (a C++ harness, hundreds of times faster) or
            `cocotb` (the Python testbench); both check every output bit and cycle the same way.
        explain: print (through `progress`) the compile passes, their times and what each changed; the report
            holds the same log under "passes" either way.
        progress: called with one line per step (default: silent).

    Returns:
        The report and the files written (Verilog, plan, FuseSoC core, report.json, report.md).
    """
    import numpy as np

    from hardwire.hls.compile import CompileOptions, compile_model, parse_budget, parse_folds

    if isinstance(folds, Mapping):
        folds = {layer: (int(pe), int(simd)) for layer, (pe, simd) in folds.items()}
    else:
        folds = parse_folds(folds)
    if isinstance(budget, str):
        budget = parse_budget(budget)
    options = CompileOptions(
        backend=backend,
        target=target,
        fps=fps,
        clock_mhz=clock_mhz,
        lut_budget=budget,
        folds=folds,
        synthesize=synthesize,
        place_route=place_route,
        simulate=simulate,
        n_random=random,
        per_unit=per_unit,
        sim_driver=sim_driver,
        explain=explain,
        **({"synth_timeout_s": synth_timeout} if synth_timeout is not None else {}),
        **({"jobs": jobs} if jobs is not None else {}),
    )
    path, default_name, model_inputs, model_labels, label = resolve_model(model, example_input)
    if inputs is not None:
        if isinstance(inputs, (str, Path)):
            if not Path(inputs).is_file():
                raise ParameterError("inputs", str(inputs), "an existing .npy file")
            inputs = np.load(inputs)
        model_inputs, model_labels, label = np.asarray(inputs), None, "given inputs"
    if labels is not None:
        model_labels = np.asarray(labels)
    name = name or default_name
    out = Path(out) if out is not None else Path("hardwire-out") / (name or _identifier(path.stem))
    report = compile_model(
        path,
        out,
        options,
        inputs=model_inputs,
        labels=model_labels,
        name=name,
        inputs_label=label,
        progress=progress or _quiet,
    )
    top = report.get("plan", {}).get("top")
    return CompileResult(
        network=report["network"],
        backend=backend,
        target=target,
        out=out,
        report=report,
        report_path=out / "report.json",
        verilog=out / f"{top}.v" if top else None,
        core=out / report["fusesoc_core"] if report.get("fusesoc_core") else None,
    )


# ---------------------------------------------------------------------------------------------------------------
# estimate


@dataclass
class EstimateResult:
    """The surrogates' estimate of a design's resources and Fmax, with uncertainty, and the exact schedule."""

    design: str
    target: str
    resources: dict  # label -> estimated count
    spread: dict  # label -> one standard deviation of the log error
    fmax_mhz: float | None
    exact: dict  # latency, initiation interval, ... from the schedule models
    report: dict  # what `hardwire estimate --json` writes
    text: str  # what `hardwire estimate` prints

    def _repr_markdown_(self) -> str:
        import math

        rows = [
            [label.upper(), f"{value:,.0f}", f"±{100 * (math.exp(self.spread[label]) - 1):.0f}%"]
            for label, value in self.resources.items()
        ]
        if self.fmax_mhz is not None:
            rows.append(
                [
                    "Fmax MHz",
                    f"{self.fmax_mhz:.0f}",
                    f"±{100 * (math.exp(self.report['fmax_relative_spread']) - 1):.0f}%",
                ]
            )
        lines = [
            f"### {self.design} on {self.target}: estimate ({self.report['model']} surrogate, not a measurement)",
            "",
            _table(["", "estimate", "uncertainty"], rows),
        ]
        if self.exact:
            lines += ["", "Exact (schedule model): " + ", ".join(f"{k} {v:,}" for k, v in self.exact.items())]
        return "\n".join(lines)


def estimate(
    design: str | Path,
    params: Any = None,
    /,
    *,
    target: str = "ecp5",
    fps: float | None = None,
    folds: Mapping[str, tuple[int, int]] | list[str] | None = None,
    clock_mhz: float = 100.0,
    model: str = "auto",
    weights: str | Path | None = None,
    **values: Any,
) -> EstimateResult:
    """Estimate a network's or block's resources and Fmax with the trained surrogates (`hardwire estimate`).

    Milliseconds, no synthesis; latency and initiation interval come exactly from the schedule models.

    Args:
        design: `zoo:NAME`, a QONNX `.onnx` path, or a block name.
        params: blocks: the parameter dataclass, a dict of parameters or `["NAME=VALUE", ...]` (optional).
        target: `ice40`, `ecp5`, `xilinx`, `xilinx-us` or `xilinx-usp`.
        fps: networks: the folding that meets this throughput at `clock_mhz`.
        folds: networks: explicit folding, `{"dense0": (PE, SIMD)}` or `["dense0=4,8"]`.
        clock_mhz: the clock for the throughput target.
        model: `auto` (per label the surrogate better on validation designs), `gnn` or `trees`.
        weights: surrogate weights (default: the shipped ones).
        **values: blocks: parameters by name, on top of `params`.

    Returns:
        The estimate with its uncertainty and the report `hardwire estimate --json` writes.
    """
    import time

    from hardwire.estimate.cli import design_graph_for, format_estimate
    from hardwire.estimate.predict import Estimator
    from hardwire.hls.compile import parse_folds

    if isinstance(folds, Mapping):
        folds = {layer: (int(pe), int(simd)) for layer, (pe, simd) in folds.items()}
    else:
        folds = parse_folds(folds)
    design = str(design)
    if isinstance(params, (list, tuple)) and not values:
        block_values = list(params)  # the CLI's `--param NAME=VALUE` texts, typed by the block's fields
    else:
        block_values = dict(dataclasses.asdict(params) if dataclasses.is_dataclass(params) else params or {})
        block_values.update(values)
    graph = design_graph_for(design, fps=fps, folds=folds, clock_mhz=clock_mhz, params=block_values)
    estimator = Estimator.load(weights)
    started = time.perf_counter()
    result = estimator.estimate(graph, target, model)
    seconds = time.perf_counter() - started
    report = {"design": design, **result.to_dict(), "estimate_seconds": seconds}
    return EstimateResult(
        design=design,
        target=result.target,
        resources=dict(result.resources),
        spread=dict(result.spread),
        fmax_mhz=result.fmax_mhz,
        exact=dict(result.exact or {}),
        report=report,
        text=format_estimate(graph, result, seconds),
    )


# ---------------------------------------------------------------------------------------------------------------
# build


@dataclass
class BuildResult:
    """A board bitstream: utilization, the achieved Fmax against the board clock, the host link's rate."""

    board: str
    design: str
    bitstream: Path | None
    timing_met: bool
    fmax_mhz: float | None
    out: Path
    report: dict  # report.json, as written
    text: str  # the Markdown `hardwire build` prints

    def _repr_markdown_(self) -> str:
        return self.text


def build(
    design: Any,
    board: str,
    *,
    out: str | Path,
    frame: tuple[int, int] | None = None,
    baud: int | None = None,
    clock_mhz: float | None = None,
    allow_timing_violation: bool = False,
    program: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build a bitstream of a compiled network or a generated block for a board (`hardwire build`).

    Args:
        design: a `compile` result or output folder, or a `generate` result or its JSON (with `frame`).
        board: an open-toolchain board (`icebreaker`, `ulx3s-85f`, `tang-nano-9k`, ...).
        out: the output folder, replaced when the build succeeded.
        frame: for a block: input and output beats per inference.
        baud: the UART baud rate (default: the link's).
        clock_mhz: clock the design from a PLL at this frequency (default: the board's oscillator).
        allow_timing_violation: write the bitstream even when the design misses the clock.
        program: program the board with openFPGALoader.
        progress: called with one line per step (default: silent).

    Returns:
        The bitstream, its utilization and timing.
    """
    from hardwire.boards.build import build_board
    from hardwire.boards.cli import program as program_board
    from hardwire.boards.design import load_design
    from hardwire.boards.link import DEFAULT_BAUD
    from hardwire.boards.platforms import get_board

    if isinstance(design, CompileResult):
        design = design.out
    elif isinstance(design, GenerateResult):
        design = design.description
    spec = get_board(board)
    loaded = load_design(Path(design), frame)
    report = build_board(
        loaded,
        board,
        Path(out),
        baud=DEFAULT_BAUD if baud is None else baud,
        clock_mhz=clock_mhz,
        allow_timing_violation=allow_timing_violation,
        progress=progress or _quiet,
    )
    if program:
        program_board(spec, report.bitstream)
    return BuildResult(
        board=board,
        design=report.design,
        bitstream=report.bitstream,
        timing_met=report.timing_met,
        fmax_mhz=report.fmax_mhz,
        out=Path(out),
        report=report.to_dict(),
        text=report.markdown(),
    )


# ---------------------------------------------------------------------------------------------------------------
# explore


@dataclass
class ExploreResult:
    """A design-space exploration: the verified Pareto front, the estimate's error on it, the chosen knee."""

    design: str
    target: str
    out: Path
    report: dict  # report.json, as written
    report_path: Path
    plot: Path
    front: list[dict] = field(default_factory=list)
    chosen: dict | None = None

    def _repr_markdown_(self) -> str:
        from hardwire.estimate.explore_cli import markdown

        text = markdown(self.report)
        if self.plot.is_file():  # the picture inline: a notebook does not resolve the report's relative link
            data = base64.b64encode(self.plot.read_bytes()).decode()
            text = text.replace("](pareto.png)", f"](data:image/png;base64,{data})")
        return text


def explore(
    design: Any,
    *,
    out: str | Path,
    target: str = "ecp5",
    objectives: str | list[str] = "lut,throughput",
    budget: str | Mapping[str, float] | None = None,
    fps_min: float | None = None,
    clock_mhz: float = 100.0,
    margin: float = 2.0,
    max_points: int | None = None,
    max_verify: int | None = None,
    verify_all: bool = False,
    search: str = "random",
    seed: int = 0,
    workers: int | None = None,
    ray: str | None = None,
    timeout_s: float = 1800,
    dataset: str | Path | None = None,
    weights: str | Path | None = None,
    space=(),
    params=(),
    workload: str | None = None,
) -> ExploreResult:
    """Surrogate-guided exploration of a network's folding or a block family's parameters, verified with yosys
    (`hardwire explore`).

    Args:
        design: `zoo:NAME`, a QONNX `.onnx` path, a network spec `.json` path, a network spec dict, or a block
            family name (with `space`).
        out: the output folder; a rerun with the same folder synthesizes only what is missing.
        target: `ice40`, `ecp5`, `xilinx`, `xilinx-us` or `xilinx-usp`.
        objectives: two or more of lut, ff, dsp, bram, throughput, latency, fmax (a list or `"lut,throughput"`).
        budget: resource limits, `"lut=20000,dsp=0"` or `{"lut": 20000}`.
        fps_min: the lowest acceptable inferences per second at `clock_mhz`.
        clock_mhz: the clock for throughput.
        margin: the uncertainty margin in standard deviations of log error.
        max_points: enumerate spaces up to this size, else score this many.
        max_verify: synthesize at most this many points.
        verify_all: synthesize every candidate.
        search: `random` or `nsga2` for spaces larger than `max_points`.
        seed: the random seed.
        workers: synthesis processes (default: one per core).
        ray: run synthesis on Ray (an address for ray.init, or `local`).
        timeout_s: per tool run.
        dataset: also append the verified rows to this dataset (.jsonl.gz).
        weights: surrogate weights (default: the shipped ones).
        space: blocks: the values to explore per parameter, `["rows=2,4,8", "cols=2,4"]`.
        params: blocks: fixed parameters, `["a_width=8"]`.
        workload: blocks: what throughput and latency are measured on, e.g. `"m=64,k=64,n=64"`.

    Returns:
        The verified front, the chosen design and the report written to `out`.
    """
    from hardwire.estimate import explore as dse
    from hardwire.estimate.explore_cli import write_report

    if not isinstance(objectives, str):
        objectives = ",".join(objectives)
    objectives = dse.parse_objectives(objectives)
    if not isinstance(budget, Mapping):
        budget = dse.parse_budget(budget)
    if isinstance(design, Mapping):
        source, label = dse.network_spec_source(dict(design)), "network spec"
    else:
        source, label = (
            dse.source_for(str(design), space=list(space), params=list(params), workload=workload),
            str(design),
        )
    result = dse.explore(
        source,
        target=target,
        objectives=objectives,
        budget=budget,
        fps_min=fps_min,
        clock_mhz=clock_mhz,
        out=Path(out),
        margin=margin,
        max_points=dse.DEFAULT_MAX_POINTS if max_points is None else max_points,
        max_verify=dse.DEFAULT_MAX_VERIFY if max_verify is None else max_verify,
        seed=seed,
        workers=workers,
        ray_address=ray,
        timeout_s=timeout_s,
        dataset=dataset,
        weights=weights,
        verify_all=verify_all,
        search=search,
    )
    report = write_report(result, Path(out), design=label)
    return ExploreResult(
        design=label,
        target=target,
        out=Path(out),
        report=report,
        report_path=Path(out) / "report.json",
        plot=Path(out) / "pareto.png",
        front=report["verified_front"],
        chosen=report["chosen"],
    )
