"""Benchmark hard DSP PEs against inferred ones: the systolic array on ECP5 with `dsp=inferred` (yosys infers a
combinational MULT18X18D between fabric registers) and `dsp=ecp5` (MULT18X18D instantiated with its input,
pipeline and output registers), INT8 weight-stationary. Prints a table and writes JSON + Markdown.

    python bench/systolic_dsp.py                    # 1x1, 8x8 and 16x16
    python bench/systolic_dsp.py --sizes 8          # 1x1 and 8x8 only

Per size and kind: LUT and FF per PE from yosys on the bare core (flows.synth), the MULT18X18D count and how
many have all four registers enabled (read from the netlist), Fmax from nextpnr-ecp5 with the core inside the
serial-I/O wrapper on an ECP5-85F (flows.fmax, as bench/systolic.py places it), and the array's Fmax over the
one-PE Fmax of the same kind. On Xilinx (yosys only, no place and route): DSP48E1 count and cascaded DSPs on
7-series (inferred vs dsp48e1), and INT8 MACs per DSP48E2 on UltraScale+ (inferred vs dsp48e2, the packed
pairs). Then the sparse chain engine (gen/sparse.py, 4 stages x 2 chains, INT8) the same way on ECP5.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hardwire.flows.report import markdown_table, text_table, tool_versions
from hardwire.gen import registry
from hardwire.gen.dsp import Int8Packing
from hardwire.gen.sparse import SparseParams
from hardwire.gen.systolic import SystolicParams

from hardwire.cache import cache_root, write_json_atomic, write_text_atomic
from hardwire.errors import ToolError
from hardwire.jobs import run_jobs

DEVICE, PACKAGE = "85k", "CABGA381"
PNR_TIMEOUT_S = 1800
ECP5_REGISTERS = ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_PIPELINE_CLK", "REG_OUTPUT_CLK")


def registered_mult18x18d(netlist_json: str) -> tuple[int, int]:
    """(MULT18X18D cells, those with the A/B input, pipeline and output registers all clocked)."""
    modules = json.loads(Path(netlist_json).read_text())["modules"]
    cells = [
        cell for module in modules.values() for cell in module.get("cells", {}).values() if cell["type"] == "MULT18X18D"
    ]
    registered = sum(all(cell["parameters"].get(reg, "NONE") != "NONE" for reg in ECP5_REGISTERS) for cell in cells)
    return len(cells), registered


def _synth(verilog: str, top: str, target: str) -> dict:
    from hardwire.flows.synth import cascaded_dsp_count, synth

    report = synth([verilog], top, target)
    out = {k: getattr(report, k) for k in ("lut", "ff", "dsp")}
    if target == "ecp5":
        out["mult18x18d"], out["registered"] = registered_mult18x18d(report.netlist_json)
    else:
        out["cascaded"] = cascaded_dsp_count(report.netlist_json)
    return out


def _fmax(verilog: str, top: str) -> dict:
    from hardwire.flows.fmax import wrapped_fmax

    try:
        return {
            "fmax_mhz": wrapped_fmax(
                [verilog], top, "ecp5", device=DEVICE, package=PACKAGE, timeout_s=PNR_TIMEOUT_S
            ).fmax_mhz
        }
    except ToolError as error:
        return {"fmax_mhz": None, "error": str(error).splitlines()[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    started = time.monotonic()

    rtl = cache_root() / "bench-rtl"
    designs = {}
    for size in [1, *args.sizes]:
        for kind in ("inferred", "ecp5"):
            p = SystolicParams(rows=size, cols=size, a_width=args.width, w_width=args.width, dsp=kind)
            designs[(size, kind)] = (p, registry.generate("systolic", p, rtl)["verilog"])
    xilinx = {}
    for size in args.sizes:
        for kind in ("inferred", "dsp48e1"):
            p = SystolicParams(rows=size, cols=size, a_width=args.width, w_width=args.width, dsp=kind)
            xilinx[(size, kind)] = (p, registry.generate("systolic", p, rtl)["verilog"])
    usp = {}
    for size in args.sizes:
        if size <= Int8Packing.most_terms(args.width, True, args.width, True) and size % 2 == 0:
            for kind in ("inferred", "dsp48e2"):
                p = SystolicParams(rows=size, cols=size, a_width=args.width, w_width=args.width, dsp=kind)
                usp[(size, kind)] = (p, registry.generate("systolic", p, rtl)["verilog"])
    sparse = {}
    for kind in ("inferred", "ecp5"):
        q = SparseParams(lanes=4, chains=2, dsp=kind)
        sparse[kind] = (q, registry.generate("sparse", q, rtl)["verilog"])

    jobs = {("synth", "ecp5", size, kind): (_synth, v, p.top_name, "ecp5") for (size, kind), (p, v) in designs.items()}
    jobs |= {
        ("synth", "xilinx", size, kind): (_synth, v, p.top_name, "xilinx") for (size, kind), (p, v) in xilinx.items()
    }
    jobs |= {
        ("synth", "xilinx-usp", size, kind): (_synth, v, p.top_name, "xilinx-usp")
        for (size, kind), (p, v) in usp.items()
    }
    jobs |= {("fmax", "ecp5", size, kind): (_fmax, v, p.top_name) for (size, kind), (p, v) in designs.items()}
    jobs |= {("synth", "ecp5", "sparse", kind): (_synth, v, q.top_name, "ecp5") for kind, (q, v) in sparse.items()}
    jobs |= {("fmax", "ecp5", "sparse", kind): (_fmax, v, q.top_name) for kind, (q, v) in sparse.items()}
    results = run_jobs(
        jobs, args.jobs, started, describe=lambda key: f"{key[0]} {key[2]}x{key[2]} {key[3]} on {key[1]}"
    )

    records, rows = [], []
    for (size, kind), (p, _) in designs.items():
        pes = size * size
        synth_ecp5 = results[("synth", "ecp5", size, kind)]
        fmax = results[("fmax", "ecp5", size, kind)]
        single = results[("fmax", "ecp5", 1, kind)].get("fmax_mhz")
        ratio = fmax["fmax_mhz"] / single if fmax.get("fmax_mhz") and single else None
        record = {
            "top": p.top_name,
            "params": p.to_dict(),
            "pes": pes,
            "ecp5": synth_ecp5 | fmax,
            "fmax_vs_single_pe": ratio,
        }
        xilinx_kind = "dsp48e1" if kind == "ecp5" else "inferred"
        if (size, xilinx_kind) in xilinx:
            record["xilinx"] = results[("synth", "xilinx", size, xilinx_kind)] | {"dsp_kind": xilinx_kind}
        records.append(record)
        usp_kind = "dsp48e2" if kind == "ecp5" else "inferred"
        if (size, usp_kind) in usp:
            u = results[("synth", "xilinx-usp", size, usp_kind)]
            record["xilinx_usp"] = u | {"dsp_kind": usp_kind, "macs_per_dsp": pes / u["dsp"]}
        x = record.get("xilinx", {})
        u = record.get("xilinx_usp", {})
        rows.append(
            [
                f"{size}x{size} INT{args.width} WS",
                kind,
                pes,
                round(synth_ecp5["lut"] / pes, 1),
                round(synth_ecp5["ff"] / pes, 1),
                f"{synth_ecp5['registered']}/{synth_ecp5['mult18x18d']}",
                round(fmax["fmax_mhz"], 1) if fmax.get("fmax_mhz") else fmax.get("error", "-"),
                f"{ratio:.2f}" if ratio else "-",
                f"{x['dsp']} ({x['cascaded']} cascaded)" if x else "-",
                f"{u['dsp']} ({u['macs_per_dsp']:g} MAC/DSP, {u['cascaded']} cascaded)" if u else "-",
            ]
        )
    headers = [
        "config",
        "dsp",
        "PEs",
        "ECP5 LUT/PE",
        "ECP5 FF/PE",
        "registered MULT18X18D",
        "ECP5 Fmax MHz",
        "Fmax / 1 PE",
        "7-series DSP48E1 (dsp48e1)",
        "UltraScale+ DSP48E2 (dsp48e2)",
    ]
    sparse_rows = []
    for kind, (q, _) in sparse.items():
        s = results[("synth", "ecp5", "sparse", kind)]
        f = results[("fmax", "ecp5", "sparse", kind)]
        records.append({"top": q.top_name, "params": q.to_dict(), "ecp5": s | f})
        sparse_rows.append(
            [
                q.top_name,
                kind,
                s["lut"],
                s["ff"],
                f"{s['registered']}/{s['mult18x18d']}",
                round(f["fmax_mhz"], 1) if f.get("fmax_mhz") else f.get("error", "-"),
                q.latency_cycles,
            ]
        )
    sparse_headers = [
        "sparse engine",
        "dsp",
        "ECP5 LUT",
        "ECP5 FF",
        "registered MULT18X18D",
        "ECP5 Fmax MHz",
        "latency cycles",
    ]
    print(text_table(headers, rows))
    print(text_table(sparse_headers, sparse_rows))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        args.out / "systolic_dsp.json",
        {
            "records": records,
            "device": f"ECP5-{DEVICE} {PACKAGE}",
            "tools": tool_versions(),
            "wall_s": round(time.monotonic() - started, 1),
        },
    )
    write_text_atomic(
        args.out / "systolic_dsp.md",
        markdown_table(headers, rows) + "\n\n" + markdown_table(sparse_headers, sparse_rows) + "\n",
    )
    print(
        f"wrote {args.out / 'systolic_dsp.json'} and {args.out / 'systolic_dsp.md'} "
        f"({time.monotonic() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
