"""`hardwire compile`: a QONNX network -> a verified streaming RTL design or an hls4ml project, with a report.

RTL: front end -> folding -> dataflow plan -> Verilog; the golden integer model is checked against qonnx'
execution, the Verilog is simulated (Verilator) on the verification inputs and its outputs, turned back into
the model's floats, are compared with qonnx bit for bit; measured cycles are compared with the cycle model;
yosys gives resources and nextpnr the Fmax. hls4ml: the same network as an hls4ml project, C-simulated with
g++ and compared with qonnx. The output directory appears only when everything succeeded; when synthesis or
place and route fails (or times out: `synth_timeout_s`) after the simulation passed, what passed is kept in
`<out>.incomplete` and a rerun resumes from it (hls.checkpoint). Weight and threshold memories are written
as .hex files beside the Verilog (flows.memfiles); `per_unit` synthesizes each unit on its own (hls.units).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hardwire.hls import checkpoint, frontend, passes, rtl
from hardwire.hls.graph import IntGraph, MatVecLayer, flat_layers, run_integer

from hardwire.cache import atomic_dir, write_json_atomic, write_text_atomic
from hardwire.errors import (
    HardwireError,
    InternalError,
    ModelError,
    ParameterError,
    SimulationError,
    ToolError,
    ToolMissingError,
)
from hardwire.progress import heartbeat, yosys_step

BACKENDS = ("rtl", "hls4ml")
FPGA_TARGETS = ("ecp5", "ice40", "xilinx", "xilinx-us", "xilinx-usp", "generic")
PNR_TARGETS = {"ecp5": ("85k", "CABGA381"), "ice40": ("up5k", "sg48")}
STRESS_FRAMES = 8
SIM_DRIVERS = ("fastsim", "cocotb")
# Verilator driven by the cocotb testbench, cycles per second (measured on the zoo networks, 2 cores): what
# the time a simulation will take is estimated from, up front.
COCOTB_CYCLES_PER_S = 15_000
SIM_STARTUP_S = 30  # Verilator's build (when not cached) and cocotb's start, about
SYNTH_TIMEOUT_S = 1800.0


@dataclass
class CompileOptions:
    backend: str = "rtl"
    target: str = "ecp5"
    fps: float | None = None
    clock_mhz: float = 100.0
    lut_budget: int | None = None
    folds: dict | None = None
    synthesize: bool = True
    place_route: bool = True
    simulate: bool = True
    n_random: int = 64
    seed: int = 0
    synth_timeout_s: float = SYNTH_TIMEOUT_S  # each yosys / nextpnr run
    per_unit: bool = False  # resources from each unit synthesized on its own (hls.units)
    jobs: int = 2  # parallel unit syntheses
    sim_driver: str = "fastsim"  # "fastsim" (C++ harness) or "cocotb" (sim/tb_network.py)
    explain: bool = False  # print the compile passes and what each changed (hls.passes)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ParameterError("backend", self.backend, " | ".join(BACKENDS))
        if self.target not in FPGA_TARGETS:
            raise ParameterError("target", self.target, " | ".join(FPGA_TARGETS))
        if self.fps is not None and self.lut_budget is not None:
            raise ParameterError("fps", self.fps, "either a throughput target or a LUT budget, not both")
        if not (isinstance(self.synth_timeout_s, (int, float)) and self.synth_timeout_s > 0):
            raise ParameterError("synth_timeout", self.synth_timeout_s, "a number of seconds > 0")
        if not (isinstance(self.jobs, int) and self.jobs >= 1):
            raise ParameterError("jobs", self.jobs, "an integer >= 1")
        if self.sim_driver not in SIM_DRIVERS:
            raise ParameterError("sim_driver", self.sim_driver, " | ".join(SIM_DRIVERS))


def parse_budget(text: str) -> int:
    """`lut=20000` -> 20000 (the only budget the solver takes today)."""
    key, _, value = text.partition("=")
    if key.strip().lower() != "lut" or not value.strip().isdigit():
        raise ParameterError("budget", text, "lut=N (a LUT count)")
    return int(value)


def parse_folds(texts) -> dict | None:
    """`["dense0=4,8", ...]` -> {"dense0": (4, 8), ...}; None for no texts."""
    if not texts:
        return None
    folds = {}
    for text in texts:
        layer, _, numbers = text.partition("=")
        parts = numbers.split(",")
        if not layer or len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ParameterError("fold", text, "LAYER=PE,SIMD with two positive integers")
        folds[layer] = (int(parts[0]), int(parts[1]))
    return folds


def verification_inputs(graph: IntGraph, n: int, seed: int) -> np.ndarray:
    """Random inputs in the model's own layout whose every element is exactly a code of the input quantizer,
    plus the two extremes (all minimum, all maximum). With pre-processing before the input quantizer, the
    inputs are the ones whose pre-processed values are those codes (and beyond the extremes, half of them
    between two codes), so the host's pre-processing and quantizer see every level, saturation and rounding."""
    rng = np.random.default_rng(seed)
    h, w, c = graph.input.shape
    lo, hi = graph.input.dtype.min, graph.input.dtype.max
    if graph.input.dtype.bipolar:
        codes = rng.choice([-1.0, 1.0], size=(max(n - 2, 0), h, w, c))
    else:
        codes = rng.integers(lo, hi + 1, size=(max(n - 2, 0), h, w, c)).astype(np.float64)
    if graph.prefix is not None:
        codes[::2] += 0.5 * rng.choice([-1, 1], size=codes[::2].shape)
        extremes = [np.full((1, h, w, c), lo - 2), np.full((1, h, w, c), hi + 2)]
    else:
        extremes = [np.full((1, h, w, c), lo), np.full((1, h, w, c), hi)]
    codes = np.concatenate([*extremes, codes])[:n]
    values = (codes * graph.input.scale).astype(np.float32)
    if graph.input.source_layout == "NCHW":
        values = values.transpose(0, 3, 1, 2)
    else:
        values = values.reshape(len(values), -1)
    return values if graph.prefix is None else graph.prefix.invert(values)


@contextlib.contextmanager
def hardwire_step(what: str, model_path):
    """Errors from inside one of hardwire's own steps are hardwire's: a generator's ParameterError or any
    unexpected exception here becomes one line that names the user's model and says it is a hardwire bug (a
    parameter the user never set must not look like theirs). User-facing errors pass unchanged."""
    try:
        yield
    except (ModelError, ToolMissingError, ToolError, SimulationError, InternalError):
        raise
    except Exception as error:  # noqa: BLE001 - anything else is ours
        raise InternalError(
            f"{model_path}: internal error in hardwire's {what} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); this is a hardwire bug, not a "
            "problem with your model: please report it with the model file"
        ) from error


def compile_model(
    model_path,
    out_dir,
    options: CompileOptions,
    *,
    inputs: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    name: str | None = None,
    inputs_label: str = "given inputs",
    progress: Callable[[str], None] = print,
) -> dict:
    """Compile `model_path` into `out_dir` (replaced atomically on success). Returns the report dict.

    With `labels` (one class per input) the report also gives the classification accuracy of qonnx' execution
    and of the simulated RTL. When synthesis or place and route fails after the simulation passed, what passed
    is kept in `<out_dir>.incomplete` (hls.checkpoint) and a rerun resumes from it."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    started = time.monotonic()
    name = name or _identifier(model_path.stem)
    progress(f"[1/5] front end: {model_path}")
    state, manager = passes.run_front_end(frontend.load_model(model_path, clean=False), name, source=str(model_path))
    model, graph = state.model, state.graph
    if inputs is None:
        inputs = verification_inputs(graph, options.n_random, options.seed)
        input_source = f"{len(inputs)} random inputs on the input quantizer's grid (seed {options.seed})"
        if graph.prefix is not None:
            input_source += (
                ", chosen through the inverted pre-processing, half of them between two levels, two beyond the extremes"
            )
    else:
        input_source = f"{len(inputs)} {inputs_label}"
    progress(f"      {len(graph.layers)} layers; {frontend.describe_exactness(graph)}")
    progress(f"[2/5] golden integer model vs qonnx execution on {input_source}")
    expected_shape = tuple(model.get_tensor_shape(model.graph.input[0].name))[1:]
    if np.asarray(inputs).ndim < 1 or tuple(np.shape(inputs)[1:]) != expected_shape:
        raise ParameterError(
            "inputs",
            f"an array of shape {tuple(np.shape(inputs))}",
            f"N inputs of the model's input shape: (N, {', '.join(map(str, expected_shape))})",
        )
    reference = frontend.qonnx_execute(model, inputs)
    with hardwire_step("golden integer model", model_path):
        codes = frontend.quantize_input(graph, inputs)
        golden = run_integer(graph, codes).reshape(len(codes), -1)
        golden_float = frontend.model_output(graph, golden)
    golden_check = _compare(golden_float, reference)
    if golden_check["mismatches"] and all(
        layer.exact for layer in flat_layers(graph.layers) if isinstance(layer, MatVecLayer)
    ):
        raise HardwireError(
            f"the integer graph differs from qonnx execution on {golden_check['mismatches']} "
            "outputs although every layer is exact: a front-end bug, please report it"
        )
    estimator, estimator_note = _surrogate(options.target)
    lut_cost = None
    if options.lut_budget is not None and estimator is not None:
        from hardwire.estimate.predict import folding_cost

        lut_cost = folding_cost(estimator, graph, options.target)
    state.lowering = {
        "fps": options.fps,
        "clock_mhz": options.clock_mhz,
        "lut_budget": options.lut_budget,
        "folds": options.folds,
        "lut_cost": lut_cost,
    }
    folding = manager.run(state, [passes.Fold()]).folding
    report = {
        "network": name,
        "model": str(model_path),
        "backend": options.backend,
        "target": options.target,
        "options": {k: v for k, v in vars(options).items()},
        "layers": graph.summary(),
        "exactness": frontend.describe_exactness(graph),
        "host": frontend.host_operations(graph),
        "verification_inputs": input_source,
        "golden_vs_qonnx": golden_check,
        "folding": {
            **folding.to_dict(),
            "budget_priced_by": (
                None
                if options.lut_budget is None
                else "the learned surrogate (hardwire estimate)"
                if lut_cost
                else f"the rough per-layer LUT formula ({estimator_note})"
            ),
        },
    }
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != len(inputs):
            raise ParameterError("labels", len(labels), f"one per verification input ({len(inputs)})")
        report["accuracy"] = {"qonnx": float((reference.argmax(1) == labels).mean()), "inputs": len(labels)}
    with atomic_dir(out_dir, replace=True) as work:
        if options.backend == "rtl":
            with hardwire_step("RTL back end", model_path):
                _rtl(
                    graph,
                    folding,
                    codes,
                    golden,
                    reference,
                    options,
                    work,
                    report,
                    progress,
                    labels,
                    estimator,
                    estimator_note,
                    out_dir=out_dir,
                    passes_run=(manager, state),
                )
        else:
            _record_passes(report, manager, options, progress)
            with hardwire_step("hls4ml back end", model_path):
                _hls4ml(model_path, graph, folding, inputs, work, report, progress)
        report["wall_s"] = round(time.monotonic() - started, 1)
        write_json_atomic(work / "report.json", report)
        write_text_atomic(work / "report.md", markdown_report(report))
    checkpoint.discard(out_dir)
    progress(f"done in {report['wall_s']} s: {out_dir}/report.md")
    return report


def _identifier(text: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in text)
    return cleaned if cleaned[:1].isalpha() else f"net_{cleaned}"


def _compare(values: np.ndarray, reference: np.ndarray) -> dict:
    values, reference = np.asarray(values, np.float32), np.asarray(reference, np.float32)
    differ = same_bits(values, reference) == 0
    return {
        "outputs": int(reference.size),
        "mismatches": int(differ.sum()),
        "max_abs_diff": float(np.abs(values - reference).max()) if reference.size else 0.0,
        "argmax_agreement": float(
            (values.reshape(len(values), -1).argmax(1) == reference.reshape(len(reference), -1).argmax(1)).mean()
        )
        if reference.size
        else 1.0,
    }


def same_bits(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """1 where two float32 arrays hold the same bits, 0 elsewhere. -0.0 counts as +0.0: a quantizer's output of
    zero carries the sign of the float it rounded (qonnx gives -0.0 for a small negative value), which the
    integer the hardware computes does not; every other value must match bit for bit."""
    values = np.asarray(values, np.float32) + np.float32(0.0)  # -0.0 + 0.0 = +0.0, all else unchanged
    reference = np.asarray(reference, np.float32) + np.float32(0.0)
    return (values.view(np.uint32) == reference.view(np.uint32)).astype(np.int64)


def _surrogate(target: str):
    """(the shipped estimator, None) or (None, why there is none for this target)."""
    from hardwire.estimate.models import TARGET_NAMES
    from hardwire.estimate.predict import Estimator, WeightsError

    if target not in TARGET_NAMES:
        return None, f"no surrogate for target {target}"
    try:
        return Estimator.load(), ""
    except WeightsError as error:
        return None, str(error)


def _record_passes(report: dict, manager, options: CompileOptions, progress) -> None:
    """The pass log into the report; printed with --explain."""
    report["passes"] = manager.to_dict()
    if options.explain:
        progress(passes.explain(report["passes"]))


def _rtl(
    graph,
    folding,
    codes,
    golden,
    reference,
    options,
    work: Path,
    report: dict,
    progress,
    labels,
    estimator=None,
    estimator_note: str = "",
    *,
    out_dir: Path,
    passes_run=None,
) -> None:
    from hardwire.flows.report import tool_versions

    if passes_run is None:
        plan = rtl.plan_dataflow(graph, folding)
    else:
        manager, state = passes_run
        plan = manager.run(state, [passes.Lower()]).plan
        _record_passes(report, manager, options, progress)
    if estimator is not None and any(stage.kind in ("residual", "vvu") for stage in plan.stages):
        report["estimate"] = {
            "estimate": False,
            "note": "the resource estimator does not model residual blocks and depthwise units yet",
        }
    elif estimator is not None:
        from hardwire.estimate.features import network_graph

        report["estimate"] = estimator.estimate(network_graph(plan, graph.name), options.target).to_dict()
    else:
        report["estimate"] = {"estimate": False, "note": estimator_note}
    progress(
        f"[3/5] RTL: {len(plan.stages)} units, FIFO depths {[s.fifo_depth for s in plan.stages[1:]]}; writing Verilog"
    )
    design_files = rtl.write_verilog(plan, work)
    verilog_path, memory_files = design_files[0], design_files[1:]
    verilog_text = verilog_path.read_text()
    if memory_files:
        progress(f"      {len(memory_files)} weight and threshold memories in .hex files beside the Verilog")
    from hardwire.fusesoc import write_core

    report["fusesoc_core"] = write_core(
        work,
        plan.top_name,
        [verilog_path.name],
        library="compile",
        description=f"hardwire compile: {graph.name} streaming dataflow",
        data_files=[f.relative_to(work).as_posix() for f in memory_files],
    ).name
    np.savez_compressed(
        work / "layers.npz",
        **{
            f"{layer.name}.{what}": value
            for layer in flat_layers(graph.layers)
            if isinstance(layer, MatVecLayer)
            for what, value in (("weights", layer.weights), ("thresholds", layer.thresholds))
            if value is not None
        },
    )
    write_json_atomic(work / "plan.json", plan.to_dict())
    cycles = rtl.network_cycles(plan)
    report["plan"] = plan.to_dict()
    report["cycle_model"] = cycles
    report["throughput"] = {
        "clock_mhz": options.clock_mhz,
        "inferences_per_s": options.clock_mhz * 1e6 / cycles["initiation_interval"],
        "latency_us": cycles["latency_cycles"] / options.clock_mhz,
    }
    key = checkpoint.simulation_key(design_files, codes, golden, reference)
    if options.simulate:
        saved = checkpoint.load_verdict(out_dir, key)
        if saved is not None:
            progress(
                f"[4/5] simulation: the verdict of an earlier run of this very design on these inputs, "
                f"kept in {saved['folder']}, is reused"
            )
            report["simulation"] = {**saved["simulation"], "reused_from": saved["folder"]}
            if "accuracy" in report and saved["accuracy_rtl"] is not None:
                report["accuracy"]["rtl"] = saved["accuracy_rtl"]
        else:
            total = simulation_cycles(plan, len(codes))
            estimate_s = simulation_estimate_s(total, options.sim_driver)
            driver = "a C++ harness (fastsim)" if options.sim_driver == "fastsim" else "the cocotb testbench"
            progress(
                f"[4/5] simulating {len(codes)} inferences on Verilator driven by {driver} (paced at the "
                f"initiation interval, then {min(STRESS_FRAMES, len(codes))} flooded and "
                f"{min(STRESS_FRAMES, len(codes))} with random stalls): about {total} cycles, ~{estimate_s:.0f} s"
                + (" with the C++ build, less when cached" if options.sim_driver == "fastsim" else "")
            )
            with heartbeat(progress, "simulation", every_s=60, estimate_s=estimate_s):
                report["simulation"] = simulate_network(
                    plan,
                    graph,
                    codes,
                    golden,
                    reference,
                    work / "sim",
                    verilog_text,
                    memory_files,
                    sim_driver=options.sim_driver,
                )
            predicted = np.asarray(report["simulation"].pop("argmax"))
            if "accuracy" in report:
                report["accuracy"]["rtl"] = float((predicted == labels).mean())
    if options.synthesize:
        report["tools"] = tool_versions()
        checkpoint.save(work, out_dir, report, key=key, status="synthesis had not finished", markdown=markdown_report)
        _late_step("synthesis", out_dir, lambda: _synthesize(plan, [verilog_path], options, report, progress))
        if options.place_route and options.target in PNR_TARGETS:
            _late_step(
                "place and route",
                out_dir,
                lambda: _place_route(plan, [verilog_path], options, report, progress, cycles),
            )
        if report["estimate"].get("estimate"):
            from hardwire.estimate.predict import compare

            report["estimate_vs_measured"] = compare(
                report["estimate"], report["synthesis"], report.get("place_route", {}).get("fmax_mhz")
            )
    report["tools"] = tool_versions()


def _late_step(step: str, out_dir: Path, run) -> None:
    """Run a step after the simulation; when it fails, say so in the kept folder and in the error."""
    try:
        run()
    except HardwireError as error:
        kept = checkpoint.mark_failed(out_dir, step, error)
        if kept is None:
            raise
        raise checkpoint.IncompleteCompile(step, kept, error) from None


def _timed_out(error: ToolError, what: str, options: CompileOptions) -> HardwireError:
    """A tool run that ran out of time as one error naming the unit, the tool's step and the option."""
    step = yosys_step(error.log_path) if error.tool == "yosys" else None
    return HardwireError(
        f"{what} for {options.target} timed out after {options.synth_timeout_s:g} s"
        + (f" in yosys' {step!r}" if step else "")
        + f" (log: {error.log_path}); "
        "give it longer with --synth-timeout SECONDS"
    )


def _synthesize(plan, design_files, options, report, progress) -> None:
    from hardwire.flows.synth import synth

    if options.per_unit:
        from hardwire.hls import units

        progress(
            f"[5/5] yosys synthesis for {options.target}, each unit on its own ({options.jobs} in parallel, "
            f"timeout {options.synth_timeout_s:g} s each; units whose Verilog did not change are reused)"
        )
        report["synthesis"] = units.synthesize_units(
            plan,
            options.target,
            design_files[0].parent / "units",
            workers=options.jobs,
            timeout_s=options.synth_timeout_s,
        )
        s = report["synthesis"]
        progress(f"      {s['units_synthesized']} units synthesized, {s['units_reused']} reused from the cache")
        return

    progress(f"[5/5] yosys synthesis for {options.target} (timeout {options.synth_timeout_s:g} s)")
    log = []
    try:
        with heartbeat(
            progress,
            f"yosys synthesis of {plan.top_name}",
            limit_s=options.synth_timeout_s,
            status=lambda: f"in {yosys_step(log[-1])}" if log and yosys_step(log[-1]) else None,
        ):
            result = synth(
                design_files, plan.top_name, options.target, timeout_s=options.synth_timeout_s, watch_log=log.append
            )
    except ToolError as error:
        if "timed out" in error.reason:
            raise _timed_out(error, f"yosys synthesis of network {plan.top_name}", options) from None
        raise
    report["synthesis"] = result.to_dict()


def _place_route(plan, design_files, options, report, progress, cycles) -> None:
    from hardwire.flows.fmax import wrapped_fmax

    device, package = PNR_TARGETS[options.target]
    progress(
        f"      nextpnr-{options.target} place and route on {device}/{package} for Fmax"
        + (" (the units' netlists stitched)" if options.per_unit else "")
    )
    log = []
    try:
        with heartbeat(
            progress,
            f"synthesis and place and route of {plan.top_name} in the I/O wrapper",
            limit_s=options.synth_timeout_s,
            status=lambda: f"in {yosys_step(log[-1])}" if log and yosys_step(log[-1]) else None,
        ):
            if options.per_unit:  # the units' own netlists, stitched: no flat synthesis of the network
                from hardwire.hls import units

                pnr = units.stitched_fmax(
                    plan,
                    options.target,
                    design_files[0].parent / "units",
                    device=device,
                    package=package,
                    timeout_s=options.synth_timeout_s,
                    watch_log=log.append,
                )
            else:
                pnr = wrapped_fmax(
                    design_files,
                    plan.top_name,
                    options.target,
                    device=device,
                    package=package,
                    timeout_s=options.synth_timeout_s,
                    watch_log=log.append,
                )
    except ToolError as error:
        if "timed out" in error.reason:
            raise _timed_out(error, f"{error.tool} on network {plan.top_name} in the I/O wrapper", options) from None
        raise
    report["place_route"] = pnr.to_dict()
    report["place_route"]["netlist"] = (
        "the units' netlists stitched (no flat synthesis)" if options.per_unit else "flat synthesis of the network"
    )
    if pnr.fmax_mhz:
        report["throughput"]["fmax_mhz"] = pnr.fmax_mhz
        report["throughput"]["inferences_per_s_at_fmax"] = pnr.fmax_mhz * 1e6 / cycles["initiation_interval"]
        report["throughput"]["latency_us_at_fmax"] = cycles["latency_cycles"] / pnr.fmax_mhz


def simulation_cycles(plan, frames: int) -> int:
    """Cycles the three simulation cases of `simulate_network` take, about (from the cycle model; the random
    stalls case counted at half speed): what its time is estimated from."""
    stress = min(STRESS_FRAMES, frames)
    paced = rtl.network_cycles(plan, frames=max(frames, 1))["total_cycles"]
    short = rtl.network_cycles(plan, frames=max(stress, 1))["total_cycles"]
    return paced + short + 2 * short


def simulation_estimate_s(cycles: int, sim_driver: str) -> float:
    """Seconds a simulation of `cycles` cycles takes with `sim_driver`, about: its start-up (the model's build
    when not cached) plus the cycles at the driver's measured rate (bench/sim_speed.py)."""
    if sim_driver == "fastsim":
        from hardwire.sim import fastsim

        return cycles / fastsim.CYCLES_PER_S + fastsim.BUILD_S
    return cycles / COCOTB_CYCLES_PER_S + SIM_STARTUP_S


def network_cases(plan, codes, golden) -> tuple[dict, dict]:
    """(the simulation cases, the stream geometry) both drivers take: "paced", every inference offered at the
    initiation interval to an always-ready sink, with the handshake cycles the cycle model predicts; "flood"
    and "stalls", the first few inferences sent as fast as possible, to an always-ready sink and with random
    bubbles (valid 0.7) and back-pressure (ready 0.6)."""
    frames = len(codes)
    offers = rtl.paced_offers(plan, frames, plan.interval)
    schedule = rtl.network_schedule(plan, offers)
    beats = rtl.pack_inputs(plan, codes)
    expected = rtl.encode_outputs(plan, golden).astype(int).tolist()
    stress = min(STRESS_FRAMES, frames)
    last = schedule.produced[-1]
    cases = {
        "paced": {
            "inputs": beats,
            "expected": expected,
            "offers": offers,
            "ready_probability": 1.0,
            "model_accepted": schedule.accepted,
            "model_produced": schedule.produced,
            "budget_cycles": 2 * last + 1000,
        },
        "flood": {
            "inputs": beats[:stress],
            "expected": expected[:stress],
            "valid_probability": 1.0,
            "ready_probability": 1.0,
            "model_accepted": None,
            "model_produced": None,
            "budget_cycles": 4 * last + 1000,
        },
        "stalls": {
            "inputs": beats[:stress],
            "expected": expected[:stress],
            "valid_probability": 0.7,
            "ready_probability": 0.6,
            "model_accepted": None,
            "model_produced": None,
            "budget_cycles": 10 * last + 1000,
        },
    }
    geometry = {
        "in_lanes": plan.in_lanes,
        "in_width": plan.in_shape.width,
        "out_lanes": plan.out_lanes,
        "out_width": plan.out_shape.width,
        "out_signed": plan.out_shape.signed,
        "out_beats": plan.out_beats,
    }
    return cases, geometry


def simulate_network(
    plan,
    graph,
    codes,
    golden,
    reference,
    test_dir: Path,
    verilog_text: str | None = None,
    memory_files=(),
    sim_driver: str = "fastsim",
) -> dict:
    """Full-rate run of every inference (outputs bit-exact, handshake cycles equal to the cycle model) and a
    short run with random bubbles and back-pressure. Raises SimulationError on any disagreement.
    `memory_files`: the .hex files `verilog_text` reads (rtl.write_verilog). `sim_driver`: "fastsim" (the C++
    harness, sim/fastsim.py) or "cocotb" (sim/tb_network.py); both check the same way (sim/network_check.py)."""
    from hardwire.sim.runner import simulate

    frames = len(codes)
    cases, geometry = network_cases(plan, codes, golden)
    schedule = cases["paced"]
    stress = len(cases["stalls"]["inputs"])
    verilog_text = verilog_text if verilog_text is not None else rtl.to_verilog(plan)
    started = time.monotonic()
    if sim_driver not in SIM_DRIVERS:
        raise ParameterError("sim_driver", sim_driver, " | ".join(SIM_DRIVERS))
    if sim_driver == "fastsim":
        from hardwire.sim import fastsim

        try:
            run = fastsim.simulate_network_cases(
                verilog_text, plan.top_name, geometry, cases, seed=1, run_dir=test_dir, data_files=memory_files
            )
        except SimulationError as error:
            raise SimulationError(f"RTL simulation of {plan.top_name} failed: {error}") from None
        results, log_path = run["results"], run["log"]
        speed = {
            "driver": "fastsim",
            "cycles": run["cycles"],
            "run_s": run["run_s"],
            "build_s": run["build_s"],
            "build_cached": run["build_cached"],
            "cycles_per_s": round(run["cycles"] / run["run_s"]) if run["run_s"] else None,
        }
    else:
        try:
            result = simulate(
                verilog_text,
                plan.top_name,
                "hardwire.sim.tb_network",
                config={"geometry": geometry, "cases": cases, "seed": 1},
                test_dir=test_dir,
                timeout_s=3600,
                data_files=memory_files,
            )
        except SimulationError as error:
            raise SimulationError(f"RTL simulation of {plan.top_name} failed: {error}") from None
        results, log_path = result.results, result.log_path
        speed = {
            "driver": "cocotb",
            "build_s": round(result.build_s, 2),
            "build_cached": result.build_cached,
            "run_s": round(result.wall_s, 3),
        }
    full = results["paced"]
    hardware = rtl.decode_outputs(plan, np.asarray(full["outputs"], dtype=np.int64))
    hardware_float = frontend.model_output(graph, hardware)
    check = _compare(hardware_float, reference)
    if check["mismatches"] and graph_is_exact(graph):
        raise SimulationError(f"RTL outputs differ from qonnx execution on {check['mismatches']} outputs")
    cycles = rtl.network_cycles(plan, frames=max(2, min(frames, 3)))
    return {
        "inferences": frames,
        "bit_exact_vs_golden": full["mismatched_frames"] == 0,
        "rtl_vs_qonnx": check,
        "timing_matches_model": full["timing_matches_model"],
        "measured_first_input_to_last_output_cycles": full["first_input_to_last_output_cycles"],
        "model_first_input_to_last_output_cycles": (schedule["model_produced"][-1] - schedule["model_accepted"][0] + 1),
        "model": cycles,
        "stalls_case_inferences": stress,
        "stalls_case_ok": results["stalls"]["mismatched_frames"] == 0,
        "flood_case_ok": results["flood"]["mismatched_frames"] == 0,
        "wall_s": round(time.monotonic() - started, 1),
        **speed,
        "log": str(Path(log_path).resolve().relative_to(Path(test_dir).resolve().parent)),
        "argmax": hardware_float.reshape(len(hardware_float), -1).argmax(1).tolist(),
    }


def graph_is_exact(graph: IntGraph) -> bool:
    return all(layer.exact for layer in flat_layers(graph.layers) if isinstance(layer, MatVecLayer))


def _hls4ml(model_path, graph, folding, inputs, work: Path, report: dict, progress) -> None:
    from hardwire.hls import hls4ml_backend

    # hls4ml's reuse factor is the number of multiplications one multiplier does per output vector, which
    # is our synapse folds x neuron folds
    reuse = [
        (layer.in_features // folding.folds[layer.name].simd) * (layer.out_features // folding.folds[layer.name].pe)
        for layer in flat_layers(graph.layers)
        if isinstance(layer, MatVecLayer)
    ]
    progress(f"[3/5] hls4ml project (reuse factors {reuse} from the folding)")
    project = hls4ml_backend.hls4ml_project(model_path, work / "hls4ml", reuse_factors=reuse)
    progress(f"[4/5] hls4ml C simulation (g++) on {len(inputs)} inputs vs qonnx execution")
    check = hls4ml_backend.csim_check(project, model_path, inputs)
    report["hls4ml"] = project.to_dict()
    report["csim_vs_qonnx"] = check.to_dict()
    report["host"] = {
        "before": (
            [
                f"pre-processing {', '.join(project.host_before)} in float32 (qonnx' own executor; hls4ml "
                "would compute it at its default fixed<16,6>)"
            ]
            if project.host_before
            else []
        )
        + ["the float input converted to the input quantizer's fixed-point type by the project's C++ wrapper"],
        "hardware": [
            f"the hls4ml project: {', '.join(layer.name + ' (' + layer.class_name + ')' for layer in project.layers)}"
        ],
        "after": (
            [
                f"the float tail {', '.join(project.host_after)} in float32 (qonnx' own executor) on the "
                "project's exact output"
            ]
            if project.host_after
            else ["nothing: the project's output is the model's"]
        ),
    }
    if check.mismatches and graph_is_exact(graph):
        raise SimulationError(
            f"hls4ml C-simulation differs from qonnx execution on {check.mismatches} of "
            f"{check.outputs} outputs (max abs diff {check.max_abs_diff:g}); project kept out"
        )
    if "accuracy" in report and not check.mismatches:
        # every output bit equals qonnx', so the classifications are the same ones
        report["accuracy"]["hls4ml"] = report["accuracy"]["qonnx"]
    report["note"] = (
        "The hls4ml project is ready for Vitis HLS synthesis (run `vitis_hls` / hls4ml's build() "
        "where Vitis is installed); hardwire did not synthesize it: no vendor tools are used here."
    )


def markdown_report(report: dict) -> str:
    from hardwire.flows.report import markdown_table

    lines = [
        f"# {report['network']}: {report['backend']} back end",
        "",
        f"Model: `{report['model']}`. {report['exactness']}.",
        "",
    ]
    rows = []
    folds = report["folding"]["folds"]
    for layer in report["layers"]:
        fold = folds.get(layer["name"], {})
        rows.append(
            [
                layer["name"],
                layer["kind"],
                "x".join(map(str, layer.get("in_shape", layer["out_shape"]))),
                "x".join(map(str, layer["out_shape"])),
                layer.get("in_type", layer.get("type", "")),
                layer.get("w_type", ""),
                layer.get("out_type", ""),
                fold.get("pe", ""),
                fold.get("simd", ""),
                report["folding"]["cycles"].get(layer["name"], ""),
            ]
        )
    lines += [
        "## Layers and folding",
        "",
        markdown_table(
            ["layer", "kind", "in", "out", "in type", "w type", "out type", "PE", "SIMD", "cycles/inference"], rows
        ),
        "",
    ]
    if report["folding"].get("note"):
        lines += [f"Folding: {report['folding']['note']}", ""]
    host = report.get("host")
    if host:
        lines += [
            "## What runs where",
            "",
            "- On the host, before the hardware: " + "; ".join(host["before"]) + ".",
            "- In hardware: " + ", ".join(host["hardware"]) + ".",
            "- On the host, after the hardware: " + "; ".join(host["after"]) + ".",
            "",
        ]
    g = report["golden_vs_qonnx"]
    lines += [
        "## Checks",
        "",
        f"- Verification inputs: {report['verification_inputs']}.",
        (
            f"- Integer golden model vs qonnx execution: {g['mismatches']} of {g['outputs']} outputs differ "
            f"(max abs diff {g['max_abs_diff']:g})."
        ),
    ]
    sim = report.get("simulation")
    if sim:
        c = sim["rtl_vs_qonnx"]
        lines.append(
            f"- RTL (Verilator, driven by {sim.get('driver', 'cocotb')}) on {sim['inferences']} inferences vs "
            f"qonnx: {c['mismatches']} of "
            f"{c['outputs']} outputs differ; handshake cycles equal the cycle model: "
            f"{sim['timing_matches_model']}; with random stalls ({sim['stalls_case_inferences']} "
            f"inferences) bit-exact: {sim['stalls_case_ok']}."
        )
    csim = report.get("csim_vs_qonnx")
    if csim:
        lines.append(
            f"- hls4ml C-simulation vs qonnx: {csim.get('mismatches')} of {csim.get('outputs', csim.get('n'))}"
            f" outputs differ (max abs diff {csim.get('max_abs_diff')})."
        )
    if report.get("accuracy"):
        a = report["accuracy"]
        lines.append(
            f"- Accuracy on {a['inputs']} labelled inputs: qonnx {a['qonnx']:.4f}"
            + (f", RTL {a['rtl']:.4f}" if "rtl" in a else "")
            + (f", hls4ml C-sim {a['hls4ml']:.4f}" if "hls4ml" in a else "")
            + "."
        )
    if report.get("note"):
        lines += ["", report["note"]]
    if report.get("passes"):
        lines += ["", *passes.markdown(report["passes"])]
    cycles = report.get("cycle_model")
    if cycles:
        t = report["throughput"]
        lines += [
            "",
            "## Performance",
            "",
            (
                f"- Latency {cycles['latency_cycles']} cycles, initiation interval "
                f"{cycles['initiation_interval']} cycles: {t['inferences_per_s']:.0f} inferences/s and "
                f"{t['latency_us']:.2f} us at {t['clock_mhz']:g} MHz."
            ),
        ]
        if t.get("fmax_mhz"):
            lines.append(
                f"- At the place-and-route Fmax of {t['fmax_mhz']:.1f} MHz: "
                f"{t['inferences_per_s_at_fmax']:.0f} inferences/s, {t['latency_us_at_fmax']:.2f} us."
            )
    synth = report.get("synthesis")
    if synth:
        lines += [
            "",
            f"## Resources ({report['target']}, yosys)",
            "",
            markdown_table(
                ["LUT", "FF", "DSP", "BRAM", "LUTRAM"],
                [[synth.get("lut"), synth.get("ff"), synth.get("dsp"), synth.get("bram"), synth.get("lutram")]],
            ),
        ]
    est = report.get("estimate") or {}
    if est.get("estimate"):
        measured = report.get("estimate_vs_measured", {})
        rows = []
        for label, value in est["resources"].items():
            m = measured.get(label, {})
            error = m.get("relative_error")
            rows.append(
                [
                    label.upper(),
                    f"{value:.0f}",
                    f"±{100 * (math.exp(est['relative_spread'][label]) - 1):.0f}%",
                    m.get("measured", ""),
                    "" if error is None else f"{100 * error:+.1f}%",
                ]
            )
        if est.get("fmax_mhz"):
            m = measured.get("fmax_mhz", {})
            rows.append(
                [
                    "Fmax MHz",
                    f"{est['fmax_mhz']:.0f}",
                    f"±{100 * (math.exp(est['fmax_relative_spread']) - 1):.0f}%",
                    f"{m['measured']:.0f}" if m else "",
                    f"{100 * m['relative_error']:+.1f}%" if m else "",
                ]
            )
        lines += [
            "",
            f"## Estimate ({est['model']} surrogate; not a measurement) next to the measurement",
            "",
            markdown_table(["", "estimate", "uncertainty", "measured", "error"], rows),
        ]
    elif est.get("note"):
        lines += ["", f"No resource estimate: {est['note']}."]
    return "\n".join(lines) + "\n"
