"""Benchmark the PE families in standard cells: area and Fmax per PE on a liberty library (yosys + OpenSTA,
flows/asic.py) next to the FPGA numbers (yosys on ecp5 and xilinx), and area per (MAC/cycle) at 8-bit and
4-bit precision.

    python bench/asic.py                     # osu018
    python bench/asic.py --library osu035 --jobs 1

Designs: the foundation's INT8 MAC (output-stationary systolic array, 1x1 and 4x4), the Stripes-style
bit-serial array (INT8 weights, activations up to 8 bits), BitMoD (4-bit weight datatypes against INT8
activations), BitVert (INT8 weights, bit-column skipping with BBS) and the N:M sparse multiply-add chain (one
chain of 4 stages, all patterns and dense only). Area per PE = the whole block's cell area / its PEs (rows x
lanes, pes, or chain stages), the same normalisation as the FPGA benches; control, FIFOs and accumulators of
the block are included, shared over the PEs. The softmax variants (N <= 16) get a table of their own
(area and Fmax of the whole block; no MAC rate).

MAC/cycle per PE (steady state, pipeline fill not counted), at b-bit precision:
- INT8 MAC: 1 at 8 and at 4 bits (a bit-parallel multiplier gains nothing from narrower operands).
- Stripes (simd S): S / b, activations are serial, b = activation bits.
- BitMoD (lanes L): 4-bit weights only; every 3- and 4-bit datatype costs 2 cycles per chunk of L weights
  (its `terms`), so L / 2 at 4 bits; no 8-bit weights ("-").
- BitVert (group G, lanes L): BBS leaves at most G/2 effectual bits per weight-bit column, so a column takes
  at most ceil(G / 2 / L) cycles: G / (n * ceil(G / 2 / L)) guaranteed, with n = 8 processed columns at 8
  bits and n = 4 at 4 bits (4-bit weights in the 8-bit PE: sign merging folds the equal top columns; checked
  below against the cycle model `group_cycles` on random weights).
- Sparse chain: 1 multiply per stage per cycle, dense; N:M sparsity raises the effective rate (2:4 -> 2)
  without changing the area (not in the table).

Two standard-cell runs per design, because ABC maps for a delay target and trades area for speed: the area
columns come from a relaxed 10 ns target (area-oriented mapping), Fmax from a tight 2 ns target (ABC sizes
and restructures for speed; its area is shown too). Timing: OpenSTA, ideal clock, inputs and outputs at the
clock edge, Fmax from the worst slack (flows/asic.py). Writes bench/results/asic.json and asic.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from math import ceil
from pathlib import Path

import numpy as np

from hardwire.flows.report import markdown_table, text_table, tool_versions
from hardwire.gen import registry
from hardwire.gen.bitmod import BitmodParams
from hardwire.gen.bitmod_quant import max_terms
from hardwire.gen.bitserial import BitSerialParams
from hardwire.gen.bitvert import BitVertParams, group_cycles
from hardwire.gen.softmax import VARIANTS as SOFTMAX_VARIANTS
from hardwire.gen.softmax import SoftmaxParams
from hardwire.gen.sparse import SparseParams
from hardwire.gen.systolic import SystolicParams

from hardwire.cache import cache_root, write_json_atomic, write_text_atomic
from hardwire.jobs import run_jobs

FPGA_TARGETS = ("ecp5", "xilinx")
AREA_NS = 10.0  # ABC delay target of the area run
SPEED_NS = 2.0  # ABC delay target and clock of the Fmax run
PRECISIONS = (8, 4)
INT8 = {"a_max": 8, "w_width": 8}


def designs() -> dict[str, tuple[str, object, int]]:
    """label -> (block name, params, PEs)."""
    out: dict[str, tuple[str, object, int]] = {}
    for size in (1, 4):
        out[f"INT8 MAC (systolic OS {size}x{size})"] = (
            "systolic",
            SystolicParams(rows=size, cols=size, dataflow="output_stationary"),
            size * size,
        )
    for rows, simd in ((1, 8), (4, 8), (4, 1)):
        p = BitSerialParams(rows=rows, lanes=rows, simd=simd, **INT8)
        out[f"Stripes bit-serial {rows}x{rows} simd{simd}"] = ("bitserial", p, rows * rows)
    for pes in (1, 4):
        out[f"BitMoD P={pes} L=8"] = ("bitmod", BitmodParams(pes=pes, lanes=8), pes)
    for pes in (1, 4):
        out[f"BitVert P={pes} G=8 L=2"] = ("bitvert", BitVertParams(group_size=8, lanes=2, pes=pes), pes)
    out["sparse chain, 4 stages (all patterns)"] = ("sparse", SparseParams(lanes=4, chains=1), 4)
    out["sparse chain, 4 stages (dense only)"] = ("sparse", SparseParams(lanes=4, chains=1, patterns="dense"), 4)
    return out


def softmax_designs() -> dict[str, tuple[str, object, int]]:
    """The softmax variants at their default size (N <= 16, Q4.4 in, 8-bit out): area and Fmax only."""
    return {f"softmax {v}": ("softmax", SoftmaxParams(variant=v), 1) for v in SOFTMAX_VARIANTS}


def macs_per_cycle(block: str, p, bits: int) -> float | None:
    """Steady-state multiply-accumulates per cycle per PE at `bits` precision (see the module docstring)."""
    if block in ("systolic", "sparse"):
        return 1.0
    if block == "bitserial":
        return p.simd / bits
    if block == "bitmod":
        return p.lanes / max_terms() if bits <= 4 else None
    if block == "bitvert":
        columns = min(bits, p.w_width)
        return p.group_size / (columns * ceil(p.group_size / 2 / p.lanes))
    raise ValueError(block)


def check_bitvert_bound(p: BitVertParams, bits: int, groups: int = 20000, seed: int = 0) -> tuple[float, float]:
    """(guaranteed, mean on random `bits`-bit weights) MAC/cycle from the cycle model; the guarantee must hold."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(groups * p.group_size,))
    cycles = group_cycles(w, p)
    bound = macs_per_cycle("bitvert", p, bits)
    worst = p.group_size / cycles.max()
    if worst < bound - 1e-9:
        raise AssertionError(
            f"BitVert {p.top_name}: {bits}-bit weights took {cycles.max()} cycles per group, more than the bound"
        )
    return bound, float(p.group_size * cycles.size / cycles.sum())


def _asic(verilog: str, top: str, library: str, clock_ns: float) -> dict:
    from hardwire.flows.asic import asic_synth

    return asic_synth([verilog], top, library, clock_ns=clock_ns).to_dict()


def _fpga(verilog: str, top: str, target: str) -> dict:
    from hardwire.flows.synth import synth

    return synth([verilog], top, target).to_dict()


def measure(library: str, jobs: int) -> list[dict]:
    started = time.monotonic()
    rtl = cache_root() / "bench-rtl"
    chosen = designs() | softmax_designs()
    verilog = {
        label: (p.top_name, registry.generate(block, p, rtl)["verilog"]) for label, (block, p, _) in chosen.items()
    }
    work = {}
    for label, (top, path) in verilog.items():
        work[(label, "asic")] = (_asic, path, top, library, AREA_NS)
        work[(label, "asic-fast")] = (_asic, path, top, library, SPEED_NS)
        for target in FPGA_TARGETS:
            work[(label, target)] = (_fpga, path, top, target)
    results = run_jobs(work, jobs, started)
    records = []
    for label, (block, p, pes) in chosen.items():
        a, fast = results[(label, "asic")], results[(label, "asic-fast")]
        record = {
            "label": label,
            "block": block,
            "top": p.top_name,
            "params": p.to_dict(),
            "pes": pes,
            "asic": {
                k: a[k]
                for k in (
                    "library",
                    "area_um2",
                    "sequential_area_um2",
                    "cell_count",
                    "sequential_cells",
                    "combinational_cells",
                    "buffer_cells",
                    "clock_period_ns",
                    "worst_slack_ns",
                    "fmax_mhz",
                    "critical_path",
                )
            },
            "asic_fast": {
                k: fast[k]
                for k in ("area_um2", "cell_count", "clock_period_ns", "worst_slack_ns", "fmax_mhz", "critical_path")
            },
            "macs_per_cycle": (
                {str(b): macs_per_cycle(block, p, b) for b in PRECISIONS} if block != "softmax" else None
            ),
        }
        for target in FPGA_TARGETS:
            s = results[(label, target)]
            record[target] = {k: s[k] for k in ("lut", "ff", "dsp")}
        records.append(record)
    return records


def _per(value, n):
    return None if value is None or not n else round(value / n, 1)


def table(records: list[dict]) -> tuple[list[str], list[list]]:
    lib = records[0]["asic"]["library"]
    headers = [
        "design",
        "PEs",
        f"{lib} um2/PE",
        "cells/PE",
        "FF cells/PE",
        f"Fmax MHz ({SPEED_NS:g} ns run)",
        f"um2/PE ({SPEED_NS:g} ns run)",
        "ecp5 LUT/PE",
        "ecp5 FF/PE",
        "ecp5 DSP/PE",
        "xc7 LUT/PE",
        "xc7 DSP/PE",
    ]
    for b in PRECISIONS:
        headers += [f"MAC/cyc/PE @{b}b", f"um2 per MAC/cyc @{b}b"]
    rows = []
    for r in records:
        pes, a = r["pes"], r["asic"]
        area = a["area_um2"] / pes
        row = [
            r["label"],
            pes,
            round(area),
            _per(a["cell_count"], pes),
            _per(a["sequential_cells"], pes),
            r["asic_fast"]["fmax_mhz"],
            round(r["asic_fast"]["area_um2"] / pes),
            _per(r["ecp5"]["lut"], pes),
            _per(r["ecp5"]["ff"], pes),
            round(r["ecp5"]["dsp"] / pes, 2),
            _per(r["xilinx"]["lut"], pes),
            round(r["xilinx"]["dsp"] / pes, 2),
        ]
        for b in PRECISIONS:
            rate = r["macs_per_cycle"][str(b)]
            row += [None if rate is None else f"{rate:.3g}", None if rate is None else round(area / rate)]
        rows.append(row)
    return headers, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", default="osu018")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    checks = []
    for label, (block, p, _) in designs().items():
        if block == "bitvert" and p.pes == 1:
            for bits in PRECISIONS:
                bound, mean = check_bitvert_bound(p, bits)
                checks.append({"design": label, "bits": bits, "guaranteed": bound, "random_weights_mean": mean})
    records = measure(args.library, args.jobs)
    headers, rows = table([r for r in records if r["block"] != "softmax"])
    print(text_table(headers, rows))
    # the softmax blocks: the same columns without the MAC rates
    cut = -2 * len(PRECISIONS)
    softmax_headers, softmax_rows = table(
        [r | {"macs_per_cycle": {str(b): None for b in PRECISIONS}} for r in records if r["block"] == "softmax"]
    )
    softmax_headers, softmax_rows = softmax_headers[:cut], [row[:cut] for row in softmax_rows]
    print(text_table(softmax_headers, softmax_rows))
    lib = records[0]["asic"]["library"]
    check_rows = [[c["design"], c["bits"], f"{c['guaranteed']:.3g}", f"{c['random_weights_mean']:.3g}"] for c in checks]
    md = [
        f"### Area and Fmax per PE: {lib} standard cells (yosys + OpenSTA; area: {AREA_NS:g} ns ABC target, "
        f"Fmax: {SPEED_NS:g} ns) beside the FPGA resources (yosys)",
        "",
        markdown_table(headers, rows),
        "",
        "### BitVert MAC/cycle: guaranteed by BBS vs. the cycle model on uniform random weights",
        "",
        markdown_table(["design", "weight bits", "guaranteed", "random weights (mean)"], check_rows),
        "",
        "### Softmax variants (N <= 16, Q4.4 in, 8-bit out; the whole block)",
        "",
        markdown_table(softmax_headers, softmax_rows),
        "",
    ]
    write_text_atomic(args.out / "asic.md", "\n".join(md))
    write_json_atomic(
        args.out / "asic.json",
        {
            "library": lib,
            "area_ns": AREA_NS,
            "speed_ns": SPEED_NS,
            "records": records,
            "bitvert_rate_checks": checks,
            "tools": tool_versions(),
        },
    )
    print(f"wrote {args.out / 'asic.md'} and asic.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
