"""Benchmark the systolic array: resources per PE, Fmax, and GEMM utilization, across sizes, widths,
dataflows and targets. Prints a table and writes JSON + Markdown.

    python bench/systolic.py                      # the full sweep (2,4,8,16 x INT4/INT8 x WS/OS)
    python bench/systolic.py --sizes 2 4 --quick  # a smaller one

Resources come from yosys on the bare core (flows.synth); Fmax from nextpnr with the core inside the
serial-I/O wrapper (flows.fmax), on an iCE40 UP5K (8 DSPs, 5280 LCs) and an ECP5-85F (156 18x18
multipliers, 83640 LUTs); a configuration needing more DSPs or LUTs than the part has is reported as
"no fit" instead of being placed.
Utilization = useful MACs / (PEs x cycles) from the cycle model, which the cocotb tests check against
simulation cycle for cycle; --simulate also measures the 64x64x64 GEMM on the 8x8 arrays in Verilator.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hardwire.flows.report import markdown_table, text_table, tool_versions
from hardwire.gen import registry
from hardwire.gen.systolic import SystolicParams, gemm_cycles, gemm_utilization

from hardwire.cache import cache_root, write_json_atomic, write_text_atomic
from hardwire.errors import ToolError
from hardwire.jobs import run_jobs

# device, package, DSP blocks, LUTs (iCE40 logic cells / ECP5 LUT4s) of the parts we place on
DEVICES = {"ice40": ("up5k", "sg48", 8, 5280), "ecp5": ("85k", "CABGA381", 156, 83640)}
PNR_TIMEOUT_S = 900
GEMMS = ((64, 64, 64), (256, 256, 256))


def _synth(verilog: str, top: str, target: str) -> dict:
    from hardwire.flows.synth import synth

    return synth([verilog], top, target).to_dict()


def _fmax(verilog: str, top: str, target: str) -> dict:
    from hardwire.flows.fmax import wrapped_fmax

    device, package, _, _ = DEVICES[target]
    try:
        placed = wrapped_fmax([verilog], top, target, device=device, package=package, timeout_s=PNR_TIMEOUT_S)
        return {"fmax_mhz": placed.fmax_mhz}
    except ToolError as error:
        label = "no fit" if "could not fit" in str(error) else "pnr failed"
        return {"fmax_mhz": None, "error": label, "detail": str(error).splitlines()[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--dataflows", nargs="+", default=["weight_stationary", "output_stationary"])
    parser.add_argument("--targets", nargs="+", default=["ice40", "ecp5", "xilinx"])
    parser.add_argument("--pipeline", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--simulate", action="store_true", help="also measure 64^3 GEMMs on 8x8 in Verilator")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    started = time.monotonic()

    rtl = cache_root() / "bench-rtl"
    designs = {}
    for size in [1, *args.sizes]:
        for width in args.widths:
            for dataflow in args.dataflows:
                p = SystolicParams(
                    rows=size, cols=size, a_width=width, w_width=width, dataflow=dataflow, pipeline=args.pipeline
                )
                designs[p.top_name] = (p, registry.generate("systolic", p, rtl)["verilog"])

    # synthesis first; place-and-route only where the part has the DSPs
    jobs = {(top, "synth", t): (_synth, v, top, t) for top, (_, v) in designs.items() for t in args.targets}
    results = run_jobs(jobs, args.jobs, started, describe=_describe)
    fmax_jobs = {}
    for top, (_, verilog) in designs.items():
        for target in ("ice40", "ecp5"):
            if target in args.targets:
                synthesized = results[(top, "synth", target)]
                _, _, dsps, luts = DEVICES[target]
                if synthesized["dsp"] > dsps:
                    results[(top, "fmax", target)] = {"fmax_mhz": None, "error": "no fit (DSP)"}
                elif synthesized["lut"] > luts:
                    results[(top, "fmax", target)] = {"fmax_mhz": None, "error": "no fit (LUT)"}
                else:
                    fmax_jobs[(top, "fmax", target)] = (_fmax, verilog, top, target)
    results |= run_jobs(fmax_jobs, args.jobs, started, describe=_describe)

    rows, records = [], []
    for top, (p, _) in designs.items():
        pes = p.rows * p.cols
        record = {"top": top, "params": p.to_dict(), "pes": pes}
        for target in args.targets:
            s = results[(top, "synth", target)]
            record[target] = {k: s[k] for k in ("lut", "ff", "dsp", "bram", "lutram")}
            if (top, "fmax", target) in results:
                record[target] |= results[(top, "fmax", target)]
        record["utilization"] = {f"{m}x{k}x{n}": gemm_utilization(p, m, k, n) for m, k, n in GEMMS}
        record["cycles"] = {f"{m}x{k}x{n}": gemm_cycles(p, m, k, n) for m, k, n in GEMMS}
        single = SystolicParams(
            rows=1, cols=1, a_width=p.a_width, w_width=p.w_width, dataflow=p.dataflow, pipeline=p.pipeline
        ).top_name
        pe_fmax = results.get((single, "fmax", "ecp5"), {}).get("fmax_mhz")
        arr_fmax = record.get("ecp5", {}).get("fmax_mhz")
        record["ecp5_fmax_vs_single_pe"] = arr_fmax / pe_fmax if arr_fmax and pe_fmax else None
        records.append(record)
        rows.append(_row(record, args.targets))

    simulated = _simulate_gemms(args) if args.simulate else []
    headers = _headers(args.targets)
    table = text_table(headers, rows)
    print(table)
    for s in simulated:
        print(
            f"simulated {s['top']} {s['shape']}: {s['cycles']} cycles, model {s['model_cycles']}, "
            f"bit-exact {s['exact']}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        args.out / "systolic.json",
        {
            "records": records,
            "simulated": simulated,
            "tools": tool_versions(),
            "wall_s": round(time.monotonic() - started, 1),
        },
    )
    md = markdown_table(headers, rows)
    if simulated:
        md += "\n\n" + markdown_table(
            ["design", "GEMM", "simulated cycles", "model cycles", "bit-exact"],
            [[s["top"], s["shape"], s["cycles"], s["model_cycles"], s["exact"]] for s in simulated],
        )
    write_text_atomic(args.out / "systolic.md", md + "\n")
    print(f"wrote {args.out / 'systolic.json'} and {args.out / 'systolic.md'} ({time.monotonic() - started:.0f} s)")
    return 0


def _headers(targets) -> list[str]:
    headers = ["config", "PEs"]
    for t in targets:
        headers += [f"{t} LUT/PE", f"{t} FF/PE", f"{t} DSP/PE"]
    headers += [f"{t} Fmax" for t in ("ice40", "ecp5") if t in targets]
    headers += ["ECP5 Fmax / 1 PE", "util 64^3", "util 256^3"]
    return headers


def _row(record: dict, targets) -> list:
    p = record["params"]
    flow = "WS" if p["dataflow"] == "weight_stationary" else "OS"
    row = [f"{p['rows']}x{p['cols']} INT{p['a_width']} {flow}", record["pes"]]
    for t in targets:
        r = record[t]
        row += [
            round(r["lut"] / record["pes"], 1),
            round(r["ff"] / record["pes"], 1),
            round(r["dsp"] / record["pes"], 2),
        ]
    for t in ("ice40", "ecp5"):
        if t in targets:
            r = record[t]
            row.append(round(r["fmax_mhz"], 1) if r.get("fmax_mhz") else r.get("error", "-"))
    ratio = record["ecp5_fmax_vs_single_pe"]
    row += [f"{ratio:.2f}" if ratio else "-"] + [f"{u:.1%}" for u in record["utilization"].values()]
    return row


def _describe(key) -> str:
    return f"{key[1]} {key[0]} on {key[2]}"


def _simulate_gemms(args) -> list[dict]:
    import numpy as np
    from hardwire.sim.verify import verify_block

    out = []
    rng = np.random.default_rng(7)
    for dataflow in args.dataflows:
        p = SystolicParams(rows=8, cols=8, dataflow=dataflow, pipeline=args.pipeline)
        a = rng.integers(-128, 128, (64, 64))
        w = rng.integers(-128, 128, (64, 64))
        case = {
            "name": "gemm_64",
            "a": a.tolist(),
            "w": w.tolist(),
            "valid_probability": 1.0,
            "ready_probability": 1.0,
            "check_cycles": True,
        }
        result = verify_block("systolic", p, cases=[case])
        measured = result.cases["gemm_64"]
        out.append(
            {
                "top": p.top_name,
                "shape": "64x64x64",
                "cycles": measured.get("cycles"),
                "model_cycles": gemm_cycles(p, 64, 64, 64),
                "exact": measured.get("exact"),
            }
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
