"""Benchmark the Stripes-style bit-serial array: area per PE against a bit-parallel INT8 MAC, cycles per
128-element dot product against precision (model for 1..16 bits, simulation for a few), ecp5 Fmax.

    python bench/bitserial.py                   # everything (synthesis on ice40/ecp5/xilinx/generic, pnr, sim)
    python bench/bitserial.py --no-pnr --no-sim # synthesis and the cycle model only

Area: yosys on the bare core (flows.synth) of whole arrays, divided by the number of PEs (rows x lanes), the
same per-PE normalisation bench/systolic.py uses. The INT8 reference is the foundation's systolic array,
output-stationary (its PE is a multiply-accumulate and a hold register, the nearest to a plain MAC), at
1x1 and 4x4. "generic" is yosys' technology-independent `synth` mapped to two-input gates and muxes (its
cell count, flip-flops included). Fmax: nextpnr-ecp5 with the core inside the serial-I/O wrapper
(flows.fmax) on an ECP5-85F.

The table-making helpers (`area_designs`, `area_records`, `area_table`, `cycle_table`, `fmax_records`) take
and return plain data, so other bench scripts (bitmod, bitvert) can import this module and merge tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hardwire.flows.report import markdown_table, text_table, tool_versions
from hardwire.gen import registry
from hardwire.gen.bitserial import BitSerialParams, dot_cycles
from hardwire.gen.systolic import SystolicParams

from hardwire.cache import cache_root, write_json_atomic, write_text_atomic
from hardwire.errors import ToolError
from hardwire.jobs import run_jobs

TARGETS = ("ice40", "ecp5", "xilinx", "generic")
ECP5_DEVICE = ("85k", "CABGA381")
PNR_TIMEOUT_S = 1200
DOT_LENGTH = 128
MEASURED_PRECISIONS = (1, 2, 4, 8, 12, 16)
# INT8 activations against INT8 weights: the bit-serial arrays run up to a_max = 8 bits here, so their
# accumulators have the same width as the INT8 MAC's (k_max = 4096 for both).
INT8 = {"a_max": 8, "w_width": 8}


# --------------------------------------------------------------------------------------------------
# Designs and area


def area_designs() -> dict[str, tuple[str, object]]:
    """label -> (block name, params) of every design whose area is measured."""
    designs = {
        "bit-serial 1x1 simd1": BitSerialParams(rows=1, lanes=1, simd=1, **INT8),
        "bit-serial 1x1 simd8": BitSerialParams(rows=1, lanes=1, simd=8, **INT8),
        "bit-serial 4x4 simd1": BitSerialParams(rows=4, lanes=4, simd=1, **INT8),
        "bit-serial 4x4 simd8": BitSerialParams(rows=4, lanes=4, simd=8, **INT8),
        "bit-serial 4x4 simd8 LSB-first": BitSerialParams(rows=4, lanes=4, simd=8, msb_first=False, **INT8),
        "bit-serial 4x4 simd8 a16": BitSerialParams(rows=4, lanes=4, simd=8, a_max=16, w_width=8),
    }
    out = {label: ("bitserial", p) for label, p in designs.items()}
    for size in (1, 4):
        out[f"INT8 MAC (systolic OS) {size}x{size}"] = (
            "systolic",
            SystolicParams(rows=size, cols=size, dataflow="output_stationary"),
        )
    return out


def pes_of(params) -> int:
    return params.rows * (params.lanes if hasattr(params, "lanes") else params.cols)


def macs_per_cycle(params, precision: int) -> float:
    """Multiply-accumulates per cycle per PE at `precision` activation bits (full rate)."""
    if isinstance(params, BitSerialParams):
        return params.simd / precision
    return 1.0


def _synth(verilog: str, top: str, target: str) -> dict:
    from hardwire.flows.synth import synth

    return synth([verilog], top, target).to_dict()


def _fmax(verilog: str, top: str) -> dict:
    from hardwire.flows.fmax import wrapped_fmax

    device, package = ECP5_DEVICE
    try:
        placed = wrapped_fmax([verilog], top, "ecp5", device=device, package=package, timeout_s=PNR_TIMEOUT_S)
        return {"fmax_mhz": placed.fmax_mhz}
    except ToolError as error:
        return {"fmax_mhz": None, "error": str(error).splitlines()[0]}


def generate_all(designs: dict, out_dir: Path) -> dict[str, tuple[str, str]]:
    """label -> (top, Verilog path)."""
    return {
        label: (p.top_name, registry.generate(block, p, out_dir)["verilog"]) for label, (block, p) in designs.items()
    }


def area_records(designs: dict, verilog: dict, targets=TARGETS, jobs: int = 2, started: float | None = None):
    """Synthesize every design on every target; one record per design with totals and per-PE figures."""
    work = {(label, t): (_synth, verilog[label][1], verilog[label][0], t) for label in designs for t in targets}
    results = run_jobs(work, jobs, started)
    records = []
    for label, (block, p) in designs.items():
        pes = pes_of(p)
        record = {"label": label, "block": block, "top": p.top_name, "params": p.to_dict(), "pes": pes}
        for t in targets:
            s = results[(label, t)]
            record[t] = {k: s[k] for k in ("lut", "ff", "dsp", "bram", "lutram")}
            if t == "generic":
                record[t]["cells"] = sum(s["cells"].values())
        records.append(record)
    return records


def area_table(records: list[dict], targets=TARGETS, precision: int = 8) -> tuple[list[str], list[list]]:
    """(headers, rows): resources per PE on each target, and MACs per cycle per PE at `precision` bits."""
    headers = ["design", "PEs"]
    for t in targets:
        headers += ["generic cells/PE"] if t == "generic" else [f"{t} LUT/PE", f"{t} FF/PE", f"{t} DSP/PE"]
    headers += [f"MAC/cycle/PE @{precision}b", f"ecp5 LUT+FF per MAC/cycle @{precision}b"]
    rows = []
    for r in records:
        pes = r["pes"]
        row = [r["label"], pes]
        for t in targets:
            s = r[t]
            row += (
                [round(s["cells"] / pes, 1)]
                if t == "generic"
                else [round(s["lut"] / pes, 1), round(s["ff"] / pes, 1), round(s["dsp"] / pes, 2)]
            )
        params = _params_of(r)
        rate = macs_per_cycle(params, precision)
        row.append(f"{rate:.3g}")
        ecp5 = r.get("ecp5")
        row.append(round((ecp5["lut"] + ecp5["ff"]) / pes / rate, 1) if ecp5 else "-")
        rows.append(row)
    return headers, rows


def _params_of(record: dict):
    values = dict(record["params"])
    if record["block"] == "bitserial":
        return BitSerialParams.from_dict(values)
    values.pop("name", None)
    return SystolicParams(**values)


# --------------------------------------------------------------------------------------------------
# Cycles


def cycle_table(simds=(1, 8), measured: dict | None = None, length: int = DOT_LENGTH):
    """(headers, rows): cycles of one `length`-element dot product per precision 1..16 from the cycle model
    for each simd, with simulated cycles beside them where `measured[(simd, precision)]` has them."""
    measured = measured or {}
    headers = ["precision (bits)"]
    for simd in simds:
        headers += [f"simd{simd} model", f"simd{simd} simulated"]
    headers += [f"INT8 MAC ({length} MACs, latency not counted)"]
    rows = []
    for precision in range(1, 17):
        row = [precision]
        for simd in simds:
            p = BitSerialParams(rows=1, lanes=1, simd=simd, a_max=16)
            row += [dot_cycles(p, length, precision), measured.get((simd, precision), "-")]
        row.append(length)
        rows.append(row)
    return headers, rows


def simulate_dot_products(simds=(1, 8), precisions=MEASURED_PRECISIONS, length: int = DOT_LENGTH, seed: int = 5):
    """Measure one `length`-element dot product per precision in Verilator (one build per simd). Returns
    {(simd, precision): cycles} and per-case details (bit-exact, model cycles)."""
    import numpy as np
    from hardwire.sim.verify import verify_block

    rng = np.random.default_rng(seed)
    measured, details = {}, []
    for simd in simds:
        p = BitSerialParams(rows=2, lanes=2, simd=simd, a_max=16, w_width=8, k_max=length)
        cases = []
        for precision in precisions:
            lo, hi = p.a_range(precision)
            a = rng.integers(lo, hi + 1, (p.rows, length))
            a[0, 0], a[1, 0] = lo, hi
            w = rng.integers(-128, 128, (length, p.lanes))
            cases.append(
                {
                    "name": f"dot{length}_p{precision}",
                    "a": a.tolist(),
                    "w": w.tolist(),
                    "precision": precision,
                    "valid_probability": 1.0,
                    "ready_probability": 1.0,
                    "check_cycles": True,
                }
            )
        result = verify_block("bitserial", p, cases=cases)
        for precision, case in zip(precisions, cases):
            got = result.cases[case["name"]]
            model = dot_cycles(p, length, precision)
            measured[(simd, precision)] = got.get("cycles")
            details.append(
                {
                    "top": p.top_name,
                    "simd": simd,
                    "precision": precision,
                    "cycles": got.get("cycles"),
                    "model_cycles": model,
                    "exact": got.get("exact"),
                    "agree": got.get("cycles") == model,
                }
            )
    return measured, details


# --------------------------------------------------------------------------------------------------
# Fmax


def fmax_records(labels: list[str], verilog: dict, jobs: int = 2, started: float | None = None) -> dict:
    """label -> {"fmax_mhz": ...} on an ECP5-85F behind the serial-I/O wrapper."""
    work = {(label, "ecp5-pnr"): (_fmax, verilog[label][1], verilog[label][0]) for label in labels}
    return {label: value for (label, _), value in run_jobs(work, jobs, started).items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-pnr", dest="pnr", action="store_false", help="skip nextpnr (Fmax)")
    parser.add_argument("--no-sim", dest="simulate", action="store_false", help="skip the Verilator runs")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    started = time.monotonic()

    designs = area_designs()
    verilog = generate_all(designs, cache_root() / "bench-rtl")
    records = area_records(designs, verilog, args.targets, args.jobs, started)
    fmax_labels = ["bit-serial 4x4 simd8", "INT8 MAC (systolic OS) 4x4"]
    fmax = fmax_records(fmax_labels, verilog, args.jobs, started) if args.pnr else {}
    for record in records:
        if record["label"] in fmax:
            record["ecp5_fmax_mhz"] = fmax[record["label"]].get("fmax_mhz")
            if fmax[record["label"]].get("error"):
                record["ecp5_fmax_error"] = fmax[record["label"]]["error"]
    measured, details = simulate_dot_products() if args.simulate else ({}, [])

    area_headers, area_rows = area_table(records, args.targets)
    cycle_headers, cycle_rows = cycle_table(measured=measured)
    fmax_headers = ["design", "ecp5 Fmax (MHz)", f"cycles per {DOT_LENGTH}-dot @8b", "dot products per us @8b"]
    fmax_rows = []
    for record in records:
        if "ecp5_fmax_mhz" in record:
            p = _params_of(record)
            cycles = dot_cycles(p, DOT_LENGTH, 8) if isinstance(p, BitSerialParams) else DOT_LENGTH
            mhz = record["ecp5_fmax_mhz"]
            fmax_rows.append(
                [
                    record["label"],
                    round(mhz, 1) if mhz else record.get("ecp5_fmax_error", "-"),
                    cycles,
                    round(mhz * pes_of(p) / cycles, 2) if mhz else "-",
                ]
            )

    print(text_table(area_headers, area_rows))
    print()
    print(text_table(cycle_headers, cycle_rows))
    if fmax_rows:
        print()
        print(text_table(fmax_headers, fmax_rows))
    disagree = [d for d in details if not d["agree"] or not d["exact"]]
    if details:
        print(
            f"simulated {len(details)} dot products: {len(details) - len(disagree)} bit-exact with cycles equal "
            "to the model" + (f"; DISAGREE: {disagree}" if disagree else "")
        )

    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        args.out / "bitserial.json",
        {
            "area": records,
            "cycles_model_and_simulated": cycle_rows,
            "simulated": details,
            "fmax": fmax,
            "tools": tool_versions(),
            "wall_s": round(time.monotonic() - started, 1),
        },
    )
    md = [
        "## Area per PE (whole arrays / PEs; INT8 reference: systolic output-stationary)",
        "",
        markdown_table(area_headers, area_rows),
        "",
        f"## Cycles per {DOT_LENGTH}-element dot product (first input to result handshake)",
        "",
        markdown_table(cycle_headers, cycle_rows),
    ]
    if fmax_rows:
        md += ["", "## ecp5 Fmax (ECP5-85F, serial-I/O wrapper)", "", markdown_table(fmax_headers, fmax_rows)]
    write_text_atomic(args.out / "bitserial.md", "\n".join(md) + "\n")
    print(f"wrote {args.out / 'bitserial.json'} and {args.out / 'bitserial.md'} ({time.monotonic() - started:.0f} s)")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
