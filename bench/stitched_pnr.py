"""Place and route from the units' own netlists (`hardwire compile --per-unit`) against a flat synthesis.

For each network: the flat path (yosys on the whole network in the serial-I/O wrapper, then nextpnr) and the
stitched path (each unit synthesized on its own and cached, the wrapper and the stitch module synthesized with
the units as black boxes, nextpnr on the merged netlist), both on an LFE5U-85F, from one empty tool cache per
network so that every time is a cold one. Prints a table; writes bench/results/stitched_pnr.{json,md}.

    python bench/stitched_pnr.py --nets mlp2,mlp4,cnn4,mlp1024
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from hardwire.cache import write_json_atomic, write_text_atomic  # noqa: E402

DEVICE, PACKAGE = "85k", "CABGA381"


def _plan(net: str):
    from hardwire.hls import frontend, rtl, zoo

    if net == "mlp1024":
        from compile_time import mlp1024_graph

        graph = mlp1024_graph()
    else:
        graph = frontend.build_graph(frontend.load_model(zoo.build(net).onnx_path), net)
    return rtl.plan_dataflow(graph, rtl.solve_folding(graph))


def measure(net: str, work: Path, jobs: int, timeout: float) -> dict:
    from hardwire.flows.fmax import wrapped_fmax
    from hardwire.hls import rtl, units

    plan = _plan(net)
    files = rtl.write_verilog(plan, work / "flat")
    row = {"net": net}
    started = time.monotonic()
    flat = wrapped_fmax([files[0]], plan.top_name, "ecp5", device=DEVICE, package=PACKAGE, timeout_s=timeout)
    row["flat_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    per_unit = units.synthesize_units(plan, "ecp5", work / "units", workers=jobs, timeout_s=timeout)
    row["per_unit_synth_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    stitched = units.stitched_fmax(plan, "ecp5", work / "units", device=DEVICE, package=PACKAGE, timeout_s=timeout)
    row["stitched_pnr_s"] = round(time.monotonic() - started, 1)
    for name, report in (("flat", flat), ("stitched", stitched)):
        row[name] = {
            "fmax_mhz": report.fmax_mhz,
            "seed": report.seed,
            **{
                cell: report.utilization.get(cell, {}).get("used")
                for cell in ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "MULT18X18D")
            },
        }
    row["per_unit_totals"] = {k: per_unit[k] for k in units.RESOURCES}
    return row


def main(argv=None) -> int:
    from hardwire.flows.report import markdown_table, tool_versions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="mlp2,mlp4,cnn4,mlp1024")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stitched_pnr")
    args = parser.parse_args(argv)
    json_path = args.out.with_suffix(".json")
    measured = args.nets.split(",")
    rows = [
        r
        for r in (json.loads(json_path.read_text())["rows"] if json_path.is_file() else [])
        if r["net"] not in measured
    ]
    for net in measured:
        saved = os.environ.get("HARDWIRE_CACHE")
        with tempfile.TemporaryDirectory(prefix=f"stitched-{net}-") as work:
            os.environ["HARDWIRE_CACHE"] = str(Path(work) / "cache")
            try:
                rows.append(measure(net, Path(work), args.jobs, args.timeout))
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
    table = [
        [
            r["net"],
            r["flat_s"],
            r["per_unit_synth_s"],
            r["stitched_pnr_s"],
            round(r["per_unit_synth_s"] + r["stitched_pnr_s"], 1),
            f"{r['flat']['fmax_mhz']:.1f} (seed {r['flat']['seed']})",
            f"{r['stitched']['fmax_mhz']:.1f} (seed {r['stitched']['seed']})",
            *[f"{r['flat'][c]}/{r['stitched'][c]}" for c in ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD")],
        ]
        for r in rows
    ]
    headers = [
        "net",
        "flat synth + P&R s",
        "per-unit synth s (cold)",
        "stitched P&R s",
        "per-unit total s",
        "flat Fmax MHz",
        "stitched Fmax MHz",
        "COMB flat/stitched",
        "FF flat/stitched",
        "DP16KD flat/stitched",
    ]
    text = markdown_table(headers, table)
    print(text)
    write_text_atomic(args.out.with_suffix(".md"), text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
