"""Benchmark the corpus of real architectures (hls/corpus.py: MLPerf Tiny's ResNet-8, DS-CNN and anomaly
autoencoder): bit-exactness in Verilator against qonnx, resources on ECP5 and xc7, latency and initiation
interval, FIFO bits, and for ResNet-8 the residual blocks' FIFO depths against what a simulation-based sizing
would choose.

    python bench/corpus.py                                   # the scaled-down networks
    python bench/corpus.py --nets resnet8 dscnn autoencoder  # the published-size ones (slow)

Per network: `hardwire compile` with the corpus' throughput target (the RTL simulated on grid inputs with the
extremes, every output compared with qonnx bit for bit, the paced run's handshakes with the composed schedule
model), yosys on the whole design for ecp5 and xilinx (xc7). FIFO bits: every FIFO between units (depth x width),
the depths from the composed schedule model. Residual FIFOs: the same network simulated in Amaranth's simulator
with every FIFO made deep (4 x ours + 16), inferences offered one per initiation interval, and the most beats
each FIFO ever held recorded: the depth FINN's simulation-based sizing would give it.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

from hardwire.flows.report import markdown_table, text_table, tool_versions

from hardwire.cache import cache_root, write_json_atomic, write_text_atomic

TINY = ("resnet8-tiny", "dscnn-tiny", "autoencoder-tiny")
SIM_INFERENCES = 8


def _stream_width(component, port: str) -> int:
    from amaranth.hdl import Shape

    component._MustUse__silence = True
    return Shape.cast(getattr(component, port).payload.shape()).width


def fifos(plan) -> list[dict]:
    """Every FIFO between units: where it is, its depth and width (the width of the stream it carries)."""
    rows = []

    def walk(stages, width, where, first_has_fifo):
        for index, stage in enumerate(stages):
            if index > 0 or first_has_fifo:
                rows.append({"where": f"{where}{stage.name}", "depth": stage.fifo_depth, "width": width})
            if stage.kind == "residual":
                unit = stage.params
                ends = []
                for path in (unit.branch, unit.shortcut):
                    ends.append(walk(path, width, f"{where}{stage.name}/", True))
                rows.append({"where": f"{where}{stage.name}/add_a", "depth": unit.a_fifo_depth, "width": ends[0]})
                rows.append({"where": f"{where}{stage.name}/add_b", "depth": unit.b_fifo_depth, "width": ends[1]})
            width = _stream_width(stage.build(), "out")
        return width

    walk(plan.stages, _stream_width(plan.stages[0].build(), "inp"), "", False)
    return rows


def observed_occupancy(plan, beats: list[list[int]], interval: int) -> list[tuple[str, int]]:
    """Simulate `plan` with every FIFO deep (4 x its depth + 16) in Amaranth's simulator, inferences offered one
    per `interval` cycles, the sink always ready; the most beats each FIFO inside a residual block held."""
    from amaranth.sim import Simulator
    from hardwire.hls import rtl

    deep = copy.deepcopy(plan)
    for stage in deep.stages:
        stage.fifo_depth = 4 * stage.fifo_depth + 16
        if stage.kind == "residual":
            unit = stage.params
            unit.a_fifo_depth, unit.b_fifo_depth = 4 * unit.a_fifo_depth + 16, 4 * unit.b_fifo_depth + 16
            for path in (unit.branch, unit.shortcut):
                for inner in path:
                    inner.fifo_depth = 4 * inner.fifo_depth + 16
    queues = []
    link = rtl._link

    def recording(m, source, sink, depth, name):
        link(m, source, sink, depth, name)
        queues.append((name, m.submodules[name]))

    rtl._link = recording
    try:
        top = rtl.DataflowAccelerator(deep)
        sim = Simulator(top)
    finally:
        rtl._link = link
    inner = [(name, queue) for name, queue in queues if name.startswith("add_") or "/" not in name]
    names = {s.name for s in deep.stages}
    inner = [(name, queue) for name, queue in inner if name.removesuffix("_fifo") not in names]
    most = [0] * len(inner)
    frames, per_frame = len(beats), len(beats[0])
    lanes = deep.in_lanes
    width = deep.in_shape.width
    total_out = frames * deep.out_beats

    async def bench(ctx):
        ctx.set(top.out.ready, 1)
        received, cycle, sent = 0, 0, 0
        while received < total_out:
            frame = sent // per_frame
            offer = sent < frames * per_frame and cycle >= frame * interval
            if offer:
                word = 0
                for lane, value in enumerate(beats[frame][sent % per_frame]):
                    word |= (int(value) & ((1 << width) - 1)) << (lane * width)
                ctx.set(top.inp.payload.as_value(), word)
            ctx.set(top.inp.valid, int(offer))
            for index, (_, queue) in enumerate(inner):
                most[index] = max(most[index], ctx.get(queue.level))
            took = offer and ctx.get(top.inp.ready)
            received += ctx.get(top.out.valid)
            await ctx.tick()
            sent += int(bool(took))
            cycle += 1
            assert lanes and cycle < 50 * interval * (frames + 4), "the simulation does not finish"

    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return [(name, value) for (name, _), value in zip(inner, most)]


def measure(net: str, targets: tuple[str, ...], inferences: int) -> dict:
    from hardwire.flows.synth import synth
    from hardwire.hls import corpus, frontend, rtl
    from hardwire.hls.compile import CompileOptions, compile_model

    spec = corpus.get_spec(net)
    path = corpus.export(net)
    out = cache_root() / "bench-corpus" / net
    started = time.monotonic()
    report = compile_model(
        path,
        out,
        CompileOptions(synthesize=False, n_random=inferences, fps=spec.fps()),
        name=net.replace("-", "_"),
        progress=lambda line: print(f"  {net}: {line}", file=sys.stderr),
    )
    sim = report["simulation"]
    row = {
        "net": net,
        "layers": len(report["layers"]),
        "units": len(report["plan"]["stages"]),
        "exact": f"{sim['rtl_vs_qonnx']['outputs'] - sim['rtl_vs_qonnx']['mismatches']}/"
        f"{sim['rtl_vs_qonnx']['outputs']}",
        "timing_matches_model": sim["timing_matches_model"],
        "latency_cycles": report["cycle_model"]["latency_cycles"],
        "ii_cycles": report["cycle_model"]["initiation_interval"],
        "sim_cycles": sim["measured_first_input_to_last_output_cycles"],
        "model_cycles": sim["model_first_input_to_last_output_cycles"],
    }
    graph = frontend.build_graph(frontend.load_model(path), net)
    plan = rtl.plan_dataflow(graph, rtl.solve_folding(graph, fps=spec.fps()), name=net.replace("-", "_"))
    table = fifos(plan)
    row["fifo_bits"] = sum(f["depth"] * f["width"] for f in table)
    row["fifos"] = table
    verilog = out / f"{plan.top_name}.v"
    for target in targets:
        result = synth([verilog], plan.top_name, target)
        label = "xc7" if target == "xilinx" else target
        row.update({f"{label}_{k}": getattr(result, k) for k in ("lut", "ff", "dsp", "bram")})
    if any(stage.kind == "residual" for stage in plan.stages) and not spec.slow:
        codes = frontend.quantize_input(graph, corpus.grid_inputs(net, 3, seed=1))
        observed = observed_occupancy(plan, rtl.pack_inputs(plan, codes), plan.interval)
        row["residual_fifos"] = _pair(plan, observed)
    row["wall_s"] = round(time.monotonic() - started, 1)
    return row


def _pair(plan, observed: list) -> list[dict]:
    """(block, FIFO, our depth, most beats held in simulation): the blocks' FIFOs were elaborated in block order,
    each block's path FIFOs (branch, shortcut) then its two add FIFOs, and share names across blocks."""
    seen = list(observed)
    out = []
    index = 0
    for stage in plan.stages:
        if stage.kind != "residual":
            continue
        unit = stage.params
        ours = [(f"{s.name}", s.fifo_depth) for s in unit.branch + unit.shortcut]
        ours += [("add_a", unit.a_fifo_depth), ("add_b", unit.b_fifo_depth)]
        for name, depth in ours:
            sim_name, most = seen[index]
            index += 1
            out.append({"block": stage.name, "fifo": name, "ours": depth, "simulated_max": most, "sim_name": sim_name})
    return out


HEADERS = [
    "net",
    "bit-exact",
    "timing = model",
    "ECP5 LUT",
    "FF",
    "DSP",
    "BRAM",
    "xc7 LUT",
    "FF",
    "DSP",
    "BRAM",
    "latency cyc",
    "II cyc",
    "FIFO bits",
]


def _cells(r: dict) -> list:
    return [
        r["net"],
        r["exact"],
        r["timing_matches_model"],
        *[
            r.get(k, "-")
            for k in ("ecp5_lut", "ecp5_ff", "ecp5_dsp", "ecp5_bram", "xc7_lut", "xc7_ff", "xc7_dsp", "xc7_bram")
        ],
        r["latency_cycles"],
        r["ii_cycles"],
        r["fifo_bits"],
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", default=list(TINY))
    parser.add_argument("--targets", nargs="+", default=["ecp5", "xilinx"])
    parser.add_argument("--inferences", type=int, default=SIM_INFERENCES)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    started = time.monotonic()
    rows = []
    for net in args.nets:
        row = measure(net, tuple(args.targets), args.inferences)
        rows.append(row)
        print(f"[{time.strftime('%H:%M:%S')}] {net}: exact {row['exact']}, {row['wall_s']} s", file=sys.stderr)
    table = [_cells(r) for r in rows]
    text = text_table(HEADERS, table)
    md = markdown_table(HEADERS, table)
    fifo_rows = [
        [r["net"], f["block"], f["fifo"], f["ours"], f["simulated_max"]]
        for r in rows
        for f in r.get("residual_fifos", [])
    ]
    if fifo_rows:
        fifo_headers = [
            "net",
            "residual block",
            "FIFO (in front of)",
            "ours (schedule model)",
            "max held in simulation",
        ]
        text += "\n\n" + text_table(fifo_headers, fifo_rows)
        md += "\n\n" + markdown_table(fifo_headers, fifo_rows)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        args.out / "corpus.json",
        {"rows": rows, "tools": tool_versions(), "wall_s": round(time.monotonic() - started, 1)},
    )
    write_text_atomic(args.out / "corpus.md", md + "\n")
    print(f"wrote {args.out / 'corpus.json'} and {args.out / 'corpus.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
