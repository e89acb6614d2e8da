"""Simulation speed of compiled networks: the cocotb testbench (sim/tb_network.py) against the C++ harness
(sim/fastsim.py), both on Verilator, on the zoo networks.

    python bench/sim_speed.py                       # mlp2, mlp4, cnn4 on 64 digits images
    python bench/sim_speed.py --nets mlp2 --frames 16

Each network (fully folded, as `hardwire compile` folds it by default) runs the three cases `hardwire compile`
verifies with (paced at the initiation interval, flood, random stalls) on the first --frames images of the
digits test split, with each driver; both must agree with the golden model. Cycles are the clock cycles
simulated (cocotb: simulated time / clock period; fastsim: the harness' own count, reset excluded); cycles/s is
cycles over the run's wall time without the model's build (cocotb's includes its Python start-up, as a compile
pays it). fastsim is also timed with Verilator's --threads 2. Each run starts with an empty tool cache, so
build times are cold (ccache included); "rebuild, warm ccache" is the fastsim build again once ccache holds its
objects (the usual case in a cache that has built a network before). Writes bench/results/sim_speed.json and prints one table.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hardwire.cache import write_json_atomic

NETS = ("mlp2", "mlp4", "cnn4")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _network(name: str, frames: int):
    from hardwire.hls import frontend, rtl, zoo
    from hardwire.hls.compile import network_cases
    from hardwire.hls.graph import run_integer

    entry = zoo.build(name)
    graph = frontend.build_graph(frontend.load_model(entry.onnx_path), name)
    plan = rtl.plan_dataflow(graph, rtl.solve_folding(graph))
    _, _, x, _ = zoo.load_digits_split()
    x = x[:frames].reshape((-1, *entry.input_shape[1:]))
    codes = frontend.quantize_input(graph, x)
    golden = run_integer(graph, codes).reshape(len(codes), -1)
    cases, geometry = network_cases(plan, codes, golden)
    return plan, cases, geometry


def measure(name: str, frames: int, network, work: Path) -> dict:
    from hardwire.hls import rtl
    from hardwire.sim import fastsim
    from hardwire.sim.runner import simulate

    plan, cases, geometry = network
    verilog = rtl.to_verilog(plan)
    started = time.monotonic()
    # one short case first: the build, so that the CPU time of the measured run is the simulation's alone
    warm = {
        "flood": {**cases["flood"], "inputs": cases["flood"]["inputs"][:1], "expected": cases["flood"]["expected"][:1]}
    }
    simulate(
        verilog,
        plan.top_name,
        "hardwire.sim.tb_network",
        config={"geometry": geometry, "cases": warm, "seed": 1},
        test_dir=work / f"{name}-cocotb-build",
        timeout_s=3600,
    )
    build_s = time.monotonic() - started
    before = _children_cpu_s()
    slow = simulate(
        verilog,
        plan.top_name,
        "hardwire.sim.tb_network",
        config={"geometry": geometry, "cases": cases, "seed": 1},
        test_dir=work / f"{name}-cocotb",
        timeout_s=3600,
    )
    cocotb_cpu_s = _children_cpu_s() - before
    cocotb_cycles = round(slow.sim_time_ns / 10)
    row = {
        "net": name,
        "frames": frames,
        "interval": plan.interval,
        "cocotb": {
            "cycles": cocotb_cycles,
            "build_s": round(build_s, 1),
            "run_s": round(slow.wall_s, 2),
            "cpu_s": round(cocotb_cpu_s, 2),
            "cycles_per_s": round(cocotb_cycles / slow.wall_s),
            "cycles_per_cpu_s": round(cocotb_cycles / cocotb_cpu_s),
            "total_s": round(time.monotonic() - started, 1),
        },
    }
    for threads in (1, 2):
        started = time.monotonic()
        fast = fastsim.simulate_network_cases(
            verilog, plan.top_name, geometry, cases, seed=1, run_dir=work / f"{name}-fastsim-{threads}", threads=threads
        )
        same = all(
            fast["results"][c]["outputs"] == slow.results[c]["outputs"]
            and fast["results"][c]["output_cycles"] == slow.results[c]["output_cycles"]
            for c in cases
        )
        row[f"fastsim_threads{threads}"] = {
            "cycles": fast["cycles"],
            "build_s": fast["build_s"],
            "run_s": fast["run_s"],
            "cpu_s": fast["cpu_s"],
            "cycles_per_cpu_s": round(fast["cycles"] / fast["cpu_s"]) if fast["cpu_s"] else None,
            "cycles_per_s": round(fast["cycles"] / fast["run_s"]),
            "total_s": round(time.monotonic() - started, 1),
            "same_outputs_and_cycles_as_cocotb": same,
        }
    # the same build again with ccache warm (Verilator's runtime and the model's files already compiled once):
    # what a compile pays for a network whose Verilog changed, in a cache that has built any network before
    binary, _, _ = fastsim.build(verilog, plan.top_name, fastsim.Geometry(**geometry))
    shutil.rmtree(binary.parent)
    _, cached, rebuild_s = fastsim.build(verilog, plan.top_name, fastsim.Geometry(**geometry))
    assert not cached
    row["fastsim_threads1"]["rebuild_warm_ccache_s"] = round(rebuild_s, 1)
    f1 = row["fastsim_threads1"]
    row["speedup_run"] = round(f1["cycles_per_s"] / row["cocotb"]["cycles_per_s"], 1)
    row["speedup_cpu"] = round(f1["cycles_per_cpu_s"] / row["cocotb"]["cycles_per_cpu_s"], 1)
    row["speedup_total"] = round((row["cocotb"]["build_s"] + row["cocotb"]["run_s"]) / (f1["build_s"] + f1["run_s"]), 1)
    return row


def table(rows: list[dict]) -> str:
    from hardwire.flows.report import markdown_table

    def rate(d):
        return f"{d['cycles_per_s']:,} ({d['cycles_per_cpu_s']:,})"

    headers = [
        "net",
        "frames",
        "cycles",
        "cocotb build s",
        "cocotb run s",
        "cocotb cycles/s (per CPU s)",
        "fastsim build s (rebuild, warm ccache)",
        "fastsim run s",
        "fastsim cycles/s (per CPU s)",
        "fastsim --threads 2 cycles/s (per CPU s)",
        "speedup run (CPU)",
        "speedup build + run",
        "same outputs and cycles",
    ]
    body = []
    for r in rows:
        c, f1, f2 = r["cocotb"], r["fastsim_threads1"], r["fastsim_threads2"]
        body.append(
            [
                r["net"],
                r["frames"],
                f1["cycles"],
                c["build_s"],
                c["run_s"],
                rate(c),
                f"{f1['build_s']} ({f1['rebuild_warm_ccache_s']})",
                f1["run_s"],
                rate(f1),
                rate(f2),
                f"{r['speedup_run']}x ({r['speedup_cpu']}x)",
                f"{r['speedup_total']}x",
                f1["same_outputs_and_cycles_as_cocotb"] and f2["same_outputs_and_cycles_as_cocotb"],
            ]
        )
    return markdown_table(headers, body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sim_speed.json")
    args = parser.parse_args(argv)
    rows = []
    networks = {name: _network(name, args.frames) for name in args.nets}  # the zoo from the usual cache
    with tempfile.TemporaryDirectory(prefix="hardwire-sim-speed-") as tmp:
        os.environ["HARDWIRE_CACHE"] = str(Path(tmp) / "cache")  # cold builds, ccache included
        for name in args.nets:
            rows.append(measure(name, args.frames, networks[name], Path(tmp)))
            print(f"{name}: done", file=sys.stderr)
    text = table(rows)
    print(text)
    write_json_atomic(
        args.out,
        {
            "command": "python bench/sim_speed.py " + " ".join(argv or sys.argv[1:]),
            "cpus": os.cpu_count(),
            "rows": rows,
            "table": text,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
