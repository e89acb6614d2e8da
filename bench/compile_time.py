"""Where the time of `hardwire compile` goes: front end, RTL, simulation, synthesis (flat and per unit, cold and
after a one-layer change), place and route, per network, with empty tool caches.

    python bench/compile_time.py                                  # the zoo networks and the 1024-wide MLP
    python bench/compile_time.py --nets mlp2 --no-pnr --sim-inputs 16

Networks: the zoo's mlp4, mlp2, cnn4 (fully folded, PE = SIMD = 1), simulated on the first --sim-inputs images
of the digits test split; and `mlp1024`, a 784-1024-1024-1024-10 MLP with 1-bit {0, 1} weights, 2-bit
activations and 8-bit inputs (about 2.9 Mbit of weights), fully folded, with seeded random weights and
thresholds built straight as an integer graph (no QONNX file, so no front end and no simulation; its RTL,
synthesis and place and route are what this measures); `cnv`, FINN's CNV topology for CIFAR-10 (32x32x3, six 3x3
convolutions 64-64-128-128-256-256 with two max pools, dense 256-512-512-10; w1a2, about 1.5 Mbit), built the
same way.

Every network gets a fresh tool cache (HARDWIRE_CACHE) so that each phase is timed cold; "per unit, warm" is
the same per-unit synthesis again (all units from the cache) and "one layer changed" the per-unit synthesis of
the same network with the first layer's SIMD doubled, which changes one unit. Resources: ECP5 (yosys) flat
and as the per-unit sum; BRAMs next to what the weights and thresholds need (their bits / 18 kbit).
Writes bench/results/compile_time.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from math import ceil
from pathlib import Path

import numpy as np

from hardwire.cache import write_json_atomic, write_text_atomic

NETS = ("mlp2", "mlp4", "cnn4", "mlp1024", "cnv")
RESOURCES = ("lut", "ff", "dsp", "bram", "lutram")


def mlp1024_graph(seed: int = 0):
    """784-1024-1024-1024-10, 1-bit {0, 1} weights, 2-bit activations (thresholds), 8-bit input."""
    from hardwire.hls.graph import InputLayer, IntGraph, IntType, MatVecLayer

    rng = np.random.default_rng(seed)
    u8, u2, w1 = IntType(8, False), IntType(2, False), IntType(1, False)
    layers, in_type, sizes = [], u8, (784, 1024, 1024, 1024, 10)
    for index, (k, n) in enumerate(zip(sizes, sizes[1:])):
        weights = rng.integers(0, 2, size=(n, k))
        last = index == len(sizes) - 2
        thresholds = None
        if not last:
            hi = k * in_type.max
            thresholds = np.sort(rng.integers(hi // 4, 3 * hi // 4, size=(n, 3)), axis=1)
        layers.append(
            MatVecLayer(
                f"Gemm_{index}",
                (1, 1, k),
                in_type,
                weights,
                w1,
                thresholds,
                None if last else u2,
                None if last else 1.0,
            )
        )
        in_type = u2
    return IntGraph("mlp1024", InputLayer("input", (1, 1, 784), u8, 1.0, "NC"), layers, None)


def cnv_graph(seed: int = 0):
    """FINN's CNV topology for 32x32x3 CIFAR-10 images (w1a2): conv3x3 64, 64, maxpool 2, 128, 128, maxpool 2,
    256, 256 (no padding, as FINN's CNV), then dense 256-512-512-10; 1-bit {0, 1} weights, 2-bit activations,
    8-bit input, about 1.5 Mbit of weights."""
    from hardwire.hls.graph import InputLayer, IntGraph, IntType, MatVecLayer, MaxPoolLayer

    rng = np.random.default_rng(seed)
    u8, u2, w1 = IntType(8, False), IntType(2, False), IntType(1, False)
    layers, in_type, shape = [], u8, (32, 32, 3)
    plan = [
        ("conv", 64),
        ("conv", 64),
        ("pool", 2),
        ("conv", 128),
        ("conv", 128),
        ("pool", 2),
        ("conv", 256),
        ("conv", 256),
        ("dense", 512),
        ("dense", 512),
        ("dense", 10),
    ]
    for index, (kind, n) in enumerate(plan):
        if kind == "pool":
            layers.append(MaxPoolLayer(f"MaxPool_{index}", shape, in_type, n))
            shape = (shape[0] // n, shape[1] // n, shape[2])
            continue
        kernel = 3 if kind == "conv" else 1
        if kind == "dense" and shape[:2] != (1, 1):
            shape = (1, 1, shape[0] * shape[1] * shape[2])
        k = kernel * kernel * shape[2]
        last = index == len(plan) - 1
        thresholds = None
        if not last:
            hi = k * in_type.max
            thresholds = np.sort(rng.integers(hi // 4, 3 * hi // 4, size=(n, 3)), axis=1)
        layer = MatVecLayer(
            f"{'Conv' if kernel > 1 else 'Gemm'}_{index}",
            shape,
            in_type,
            rng.integers(0, 2, size=(n, k)),
            w1,
            thresholds,
            None if last else u2,
            None if last else 1.0,
            kernel=kernel,
        )
        layers.append(layer)
        shape, in_type = layer.out_shape, u2
    return IntGraph("cnv", InputLayer("input", (32, 32, 3), u8, 1.0, "NCHW"), layers, None)


SYNTHETIC = {"mlp1024": mlp1024_graph, "cnv": cnv_graph}


def memory_bits(plan) -> int:
    """Bits of every weight and threshold memory (words x width, as the MVU stores them)."""
    bits = 0
    for stage in plan.stages:
        if stage.kind != "mvu":
            continue
        p = stage.params
        words = p.neuron_folds * p.synapse_folds
        if words > 1:
            bits += p.pe * words * p.simd * p.w_width
        if p.thresholds_mode and p.neuron_folds > 1:
            bits += p.pe * p.neuron_folds * p.threshold_count * p.threshold_width
    return bits


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (tool runs, pool workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Timer:
    """Wall seconds per phase (`phases`) and CPU seconds (`cpu`): the machine is shared, so wall time alone
    overstates what a phase costs on an idle one."""

    def __init__(self):
        self.phases: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class Phase:
            def __enter__(self):
                self.start, self.cpu = time.monotonic(), _cpu_s()
                print(f"[{name}] ...", file=sys.stderr, flush=True)

            def __exit__(self, *exc):
                timer.phases[name] = round(time.monotonic() - self.start, 1)
                timer.cpu[name] = round(_cpu_s() - self.cpu, 1)
                print(f"[{name}] {timer.phases[name]} s ({timer.cpu[name]} s CPU)", file=sys.stderr, flush=True)

        return Phase()


def measure(net: str, args, work: Path) -> dict:
    from hardwire.flows.synth import synth
    from hardwire.hls import frontend, rtl, units, zoo
    from hardwire.hls.graph import run_integer

    t = Timer()
    row: dict = {"net": net}
    if net not in SYNTHETIC:
        entry = zoo.build(net)  # trained once, in the normal cache
    os.environ["HARDWIRE_CACHE"] = str(work / "cache")
    if net in SYNTHETIC:
        with t("front end"):
            graph = SYNTHETIC[net]()
    else:
        _, _, x, _ = zoo.load_digits_split()
        x = x.reshape((-1, *entry.input_shape[1:]))[: args.sim_inputs]
        with t("front end"):
            model = frontend.load_model(entry.onnx_path)
            graph = frontend.build_graph(model, net)
            reference = frontend.qonnx_execute(model, x)
            codes = frontend.quantize_input(graph, x)
            golden = run_integer(graph, codes).reshape(len(codes), -1)
    with t("RTL"):
        plan = rtl.plan_dataflow(graph, rtl.solve_folding(graph))
        files = rtl.write_verilog(plan, work / "flat")
    row["verilog_mb"] = round(files[0].stat().st_size / 1e6, 3)
    row["memory_files"] = len(files) - 1
    row["weight_and_threshold_bits"] = memory_bits(plan)
    row["bram_needed"] = ceil(row["weight_and_threshold_bits"] / 18432)
    if net not in SYNTHETIC:
        from hardwire.hls.compile import simulate_network

        with t("simulation"):
            sim = simulate_network(plan, graph, codes, golden, reference, work / "sim", files[0].read_text(), files[1:])
        row["sim_inferences"] = len(codes)
        row["sim_bit_exact"] = sim["bit_exact_vs_golden"] and sim["rtl_vs_qonnx"]["mismatches"] == 0
        row["sim_cycles"] = sim["measured_first_input_to_last_output_cycles"]
    with t("synthesis flat"):
        flat = synth([files[0]], plan.top_name, "ecp5", timeout_s=args.timeout)
    row["flat"] = {k: getattr(flat, k) for k in RESOURCES}
    with t("synthesis per unit"):
        cold = units.synthesize_units(plan, "ecp5", work / "units", workers=args.jobs, timeout_s=args.timeout)
    row["per_unit"] = {k: cold[k] for k in RESOURCES}
    row["glue"] = cold["glue"]
    row["units"] = len(cold["units"])
    row["slowest_unit"] = max(((u["seconds"], name) for name, u in cold["units"].items()))
    with t("per unit, warm"):
        warm = units.synthesize_units(plan, "ecp5", work / "units", workers=args.jobs, timeout_s=args.timeout)
    row["warm_rebuilt"] = warm["units_synthesized"]
    # the first layer that can take more than one input per cycle doubles its SIMD (cnn4's first convolution
    # has one input channel, so there it is the second one, whose window generator changes with it)
    first = next(
        layer for layer in graph.layers if hasattr(layer, "weights") and any(s > 1 for s in rtl.simd_choices(layer))
    )
    simd = [s for s in rtl.simd_choices(first) if s > 1][0]
    changed = rtl.plan_dataflow(graph, rtl.solve_folding(graph, folds={first.name: (1, simd)}))
    row["changed_layer"] = f"{first.name} SIMD 1 -> {simd}"
    with t("one layer changed"):
        again = units.synthesize_units(changed, "ecp5", work / "units2", workers=args.jobs, timeout_s=args.timeout)
    row["changed_rebuilt"] = sorted(n for n, u in again["units"].items() if not u["cached"])
    if args.pnr:
        from hardwire.flows.fmax import wrapped_fmax

        with t("place and route"):
            pnr = wrapped_fmax(
                [files[0]], plan.top_name, "ecp5", device="85k", package="CABGA381", timeout_s=args.timeout
            )
        row["fmax_mhz"] = pnr.fmax_mhz
    row["phases_s"], row["phases_cpu_s"] = t.phases, t.cpu
    return row


PHASES = (
    "front end",
    "RTL",
    "simulation",
    "synthesis flat",
    "synthesis per unit",
    "per unit, warm",
    "one layer changed",
    "place and route",
)


def main(argv=None) -> int:
    from hardwire.flows.report import markdown_table, tool_versions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sim-inputs", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--no-pnr", dest="pnr", action="store_false")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "compile_time")
    args = parser.parse_args(argv)
    json_path = args.out.with_suffix(".json")
    measured = args.nets.split(",")
    # rows of networks not measured this time are kept from the last run
    rows = [
        r
        for r in (json.loads(json_path.read_text())["rows"] if json_path.is_file() else [])
        if r["net"] not in measured
    ]
    for net in measured:
        saved = os.environ.get("HARDWIRE_CACHE")
        with tempfile.TemporaryDirectory(prefix=f"compile-time-{net}-") as work:
            try:
                rows.append(measure(net, args, Path(work)))
            finally:
                if saved is None:
                    os.environ.pop("HARDWIRE_CACHE", None)
                else:
                    os.environ["HARDWIRE_CACHE"] = saved
        write_json_atomic(
            json_path,
            {
                "rows": rows,
                "tools": tool_versions(),
                "cpus": os.cpu_count(),
                "args": {k: str(v) for k, v in vars(args).items()},
            },
        )

    def phase(r, p):
        wall, cpu = r["phases_s"].get(p), r.get("phases_cpu_s", {}).get(p)
        return "-" if wall is None else f"{wall:g} ({cpu:g})" if cpu is not None else f"{wall:g}"

    table = [
        [
            r["net"],
            *[phase(r, p) for p in PHASES],
            r["verilog_mb"],
            f"{r['flat']['lut']}/{r['flat']['ff']}/{r['flat']['bram']}",
            f"{r['per_unit']['lut']}/{r['per_unit']['ff']}/{r['per_unit']['bram']}",
            f"{r['glue']['lut']}/{r['glue']['ff']}",
            r["bram_needed"],
            " ".join(r["changed_rebuilt"]),
            r.get("fmax_mhz", "-"),
        ]
        for r in rows
    ]
    headers = [
        "net",
        *[f"{p} s (CPU s)" for p in PHASES],
        "Verilog MB",
        "flat LUT/FF/BRAM",
        "per-unit LUT/FF/BRAM",
        "glue LUT/FF",
        "BRAM needed",
        "units rebuilt after change",
        "Fmax MHz",
    ]
    text = markdown_table(headers, table)
    print(text)
    write_text_atomic(args.out.with_suffix(".md"), text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
