"""Benchmark the network compiler on the digits networks: accuracy, resources, Fmax, latency, throughput, and
the cycle model against simulation, for a few foldings per network; plus the hls4ml back end's C-simulation.

    python bench/compile.py                       # all networks, three foldings each, ecp5 + xilinx, hls4ml
    python bench/compile.py --nets mlp4 --fps 100000 --jobs 2

Every RTL design is simulated in Verilator on the whole digits test split (360 images) and must equal qonnx'
execution bit for bit; measured handshake cycles must equal the cycle model. Resources: yosys on the bare
design (ecp5, xilinx); Fmax: nextpnr-ecp5 on an LFE5U-85F with the design inside the serial-I/O wrapper.
Throughput and latency are quoted at that Fmax. hls4ml: projects for Vitis HLS, checked by C simulation only
(hls4ml gives no resource estimate without the vendor tools).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from hardwire.flows.report import markdown_table, text_table, tool_versions

from hardwire.cache import cache_root, write_json_atomic, write_text_atomic

NETS = ("mlp4", "mlp2", "cnn4")
# inferences/s targets at 100 MHz: fully folded (PE = SIMD = 1), and two unfolded points
FOLDINGS = {"mlp4": (None, 100_000, 1_000_000), "mlp2": (None, 100_000, 1_000_000), "cnn4": (None, 50_000, 250_000)}


def _compile(net: str, fps: float | None, backend: str, out: str) -> dict:
    from hardwire.hls import zoo
    from hardwire.hls.compile import CompileOptions, compile_model

    entry = zoo.build(net)
    _, _, x, y = zoo.load_digits_split()
    x = x.reshape((-1, *entry.input_shape[1:]))
    options = CompileOptions(backend=backend, fps=fps, target="ecp5")
    report = compile_model(entry.onnx_path, out, options, inputs=x, labels=y, name=net, progress=lambda _: None)
    if backend == "rtl":
        from hardwire.flows.synth import synth

        report["synthesis_xilinx"] = synth([Path(out) / f"{net}.v"], net, "xilinx").to_dict()
    return report


def _row(net: str, fps, report: dict) -> dict:
    if report["backend"] == "hls4ml":
        csim = report["csim_vs_qonnx"]
        return {
            "net": net,
            "backend": "hls4ml",
            "folding": f"reuse {[la['reuse_factor'] for la in report['hls4ml']['layers'] if la.get('reuse_factor')]}",
            "acc_qonnx": report["accuracy"]["qonnx"],
            "acc_hw": report["accuracy"].get("hls4ml"),
            "exact": f"{csim['outputs'] - csim['mismatches']}/{csim['outputs']}",
        }
    folds = report["folding"]["folds"]
    s, x = report["synthesis"], report["synthesis_xilinx"]
    t, c, sim = report["throughput"], report["cycle_model"], report["simulation"]
    return {
        "net": net,
        "backend": "rtl",
        "fps_target": fps,
        "folding": " ".join(f"{f['pe']}x{f['simd']}" for f in folds.values()),
        "acc_qonnx": report["accuracy"]["qonnx"],
        "acc_hw": report["accuracy"]["rtl"],
        "exact": f"{sim['rtl_vs_qonnx']['outputs'] - sim['rtl_vs_qonnx']['mismatches']}/{sim['rtl_vs_qonnx']['outputs']}",
        "ecp5_lut": s["lut"],
        "ecp5_ff": s["ff"],
        "ecp5_dsp": s["dsp"],
        "ecp5_bram": s["bram"],
        "xc7_lut": x["lut"],
        "xc7_ff": x["ff"],
        "xc7_dsp": x["dsp"],
        "xc7_bram": x["bram"],
        "fmax_mhz": t.get("fmax_mhz"),
        "latency_cycles": c["latency_cycles"],
        "ii_cycles": c["initiation_interval"],
        "latency_us": t.get("latency_us_at_fmax"),
        "inferences_per_s": t.get("inferences_per_s_at_fmax"),
        "cycles_sim": sim["measured_first_input_to_last_output_cycles"],
        "cycles_model": sim["model_first_input_to_last_output_cycles"],
        "fifo_depths": [st["fifo_depth"] for st in report["plan"]["stages"][1:]],
    }


HEADERS = [
    "net",
    "backend",
    "PExSIMD per layer",
    "acc qonnx",
    "acc hw",
    "bit-exact",
    "ECP5 LUT",
    "FF",
    "DSP",
    "BRAM",
    "xc7 LUT",
    "FF",
    "DSP",
    "BRAM",
    "Fmax MHz",
    "latency cyc",
    "II cyc",
    "latency us",
    "inf/s",
    "sim cycles",
    "model cycles",
]


def _cells(r: dict) -> list:
    return [
        r["net"],
        r["backend"],
        r["folding"],
        f"{r['acc_qonnx']:.4f}",
        f"{r['acc_hw']:.4f}" if r.get("acc_hw") is not None else "-",
        r["exact"],
        *[
            r.get(k, "-")
            for k in ("ecp5_lut", "ecp5_ff", "ecp5_dsp", "ecp5_bram", "xc7_lut", "xc7_ff", "xc7_dsp", "xc7_bram")
        ],
        f"{r['fmax_mhz']:.1f}" if r.get("fmax_mhz") else "-",
        r.get("latency_cycles", "-"),
        r.get("ii_cycles", "-"),
        f"{r['latency_us']:.2f}" if r.get("latency_us") else "-",
        f"{r['inferences_per_s']:.0f}" if r.get("inferences_per_s") else "-",
        r.get("cycles_sim", "-"),
        r.get("cycles_model", "-"),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    parser.add_argument("--fps", type=float, nargs="+", help="override the throughput targets (0 = fully folded)")
    parser.add_argument("--no-hls4ml", dest="hls4ml", action="store_false")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    work = cache_root() / "bench-compile"
    tasks = {}
    for net in args.nets:
        targets = [t or None for t in args.fps] if args.fps else FOLDINGS[net]
        for fps in targets:
            tasks[(net, fps, "rtl")] = str(work / f"{net}-{int(fps or 0)}")
        if args.hls4ml:
            tasks[(net, FOLDINGS[net][1], "hls4ml")] = str(work / f"{net}-hls4ml")
    started = time.monotonic()
    rows = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {
            pool.submit(_compile, net, fps, backend, out): (net, fps, backend)
            for (net, fps, backend), out in tasks.items()
        }
        for done, future in enumerate(as_completed(futures), 1):
            net, fps, backend = futures[future]
            row = _row(net, fps, future.result())
            rows.append(row)
            print(
                f"[{time.strftime('%H:%M:%S')}] {done}/{len(tasks)} {net} {backend} fps={fps}: exact {row['exact']}",
                file=sys.stderr,
                flush=True,
            )
    order = {net: i for i, net in enumerate(NETS)}
    rows.sort(key=lambda r: (order[r["net"]], r["backend"] != "rtl", r.get("fps_target") or 0))
    table = [_cells(r) for r in rows]
    print(text_table(HEADERS, table))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        args.out / "compile.json",
        {"rows": rows, "tools": tool_versions(), "wall_s": round(time.monotonic() - started, 1)},
    )
    write_text_atomic(args.out / "compile.md", markdown_table(HEADERS, table) + "\n")
    print(
        f"wrote {args.out / 'compile.json'} and {args.out / 'compile.md'} ({time.monotonic() - started:.0f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
