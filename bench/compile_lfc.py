"""`hardwire compile --per-unit` on a FINN LFC-style MLP: where the time of a big network's compile goes.

    python bench/compile_lfc.py                         # 784-1024-1024-1024-10, w1a2, 64 random inputs
    python bench/compile_lfc.py --random 8 --no-pnr

The network is FINN's LFC topology (BNN-PYNQ's large fully connected net): 784 -> 1024 -> 1024 -> 1024 -> 10,
1-bit bipolar weights (Brevitas SignedBinaryWeightPerTensorConst), BatchNorm and a 2-bit unsigned QuantReLU
after each hidden layer, an 8-bit unsigned input with the fixed scale 1/256. It is built with Brevitas, given
seeded random weights and BatchNorm statistics (no training: what is measured is the compile, not accuracy) and
exported to QONNX with `export_qonnx` as hls/zoo.py exports the zoo. Every quantizer scale is a power of two,
so the compile checks the RTL against qonnx' execution bit for bit.

The compile runs as the command line runs it (`hardwire compile MODEL --per-unit`, default folding: every
layer fully folded) in a fresh tool cache; each step's wall time is read from the time its progress line
appeared: front end (loading, the integer graph, the golden model against qonnx), RTL (folding, plan, Verilog),
simulation (fastsim, the paced, flood and stalls cases), per-unit synthesis, stitched place and route.
Writes bench/results/compile_lfc.json and prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hardwire.cache import write_json_atomic

SIZES = (784, 1024, 1024, 1024, 10)
STEPS = (
    ("front end", "[1/5]"),
    ("RTL", "[3/5]"),
    ("simulation", "[4/5]"),
    ("synthesis", "[5/5]"),
    ("place and route", "place and route on"),
)


def lfc_model(seed: int = 0):
    """The Brevitas LFC-w1a2 module with seeded random weights and BatchNorm statistics."""
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFixedPoint
    from torch import nn

    class InputQuant(Uint8ActPerTensorFixedPoint):
        bit_width = 8
        scaling_impl_type = "const"
        scaling_init = 1.0  # 256 levels over [0, 1): scale exactly 2^-8

    class ActQuant(Uint8ActPerTensorFixedPoint):
        bit_width = 2

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    layers: list = [qnn.QuantIdentity(act_quant=InputQuant)]
    for index, (k, n) in enumerate(zip(SIZES, SIZES[1:])):
        layers.append(
            qnn.QuantLinear(k, n, bias=False, weight_quant=SignedBinaryWeightPerTensorConst, weight_scaling_const=1.0)
        )
        if index < len(SIZES) - 2:
            bn = nn.BatchNorm1d(n)
            with torch.no_grad():
                # a sum of k bipolar weights times inputs in [0, 1) or {0, .., 3} spreads like sqrt(k)
                spread = (k**0.5) * (0.3 if index == 0 else 1.0)
                bn.running_mean.copy_(torch.randn(n, generator=generator) * spread * 0.2)
                bn.running_var.copy_((torch.rand(n, generator=generator) + 0.5) * spread**2)
                bn.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                bn.bias.copy_(torch.rand(n, generator=generator) * 1.5)
            layers += [bn, qnn.QuantReLU(act_quant=ActQuant)]
    return nn.Sequential(*layers).eval()


def run(args, work: Path) -> dict:
    from hardwire.hls import zoo

    started = time.monotonic()
    model_path = zoo.export(lfc_model(args.seed), work / "lfc_w1a2.onnx", (1, SIZES[0]))
    export_s = time.monotonic() - started
    out = work / "lfc"
    command = [
        str(Path(sys.executable).parent / "hardwire"),
        "compile",
        str(model_path),
        "--per-unit",
        "--random",
        str(args.random),
        "--target",
        "ecp5",
        "--synth-timeout",
        str(args.synth_timeout),
        "-o",
        str(out),
        "--jobs",
        str(args.jobs),
    ] + (["--no-pnr"] if args.no_pnr else [])
    env = {**os.environ, "HARDWIRE_CACHE": str(work / "cache")}
    lines, start = [], time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            lines.append((round(time.monotonic() - start, 1), line.rstrip()))
            print(f"{lines[-1][0]:8.1f}  {line.rstrip()}", flush=True)
    total_s = time.monotonic() - start
    marks = [(name, next((t for t, line in lines if tag in line), None)) for name, tag in STEPS]
    steps = {}
    for index, (name, begin) in enumerate(marks):
        end = next((t for _, t in marks[index + 1 :] if t is not None), total_s)
        steps[name] = None if begin is None else round(end - begin, 1)
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    sim = report.get("simulation", {})
    return {
        "command": "hardwire " + " ".join(command[1:]),
        "returncode": proc.returncode,
        "export_s": round(export_s, 1),
        "total_s": round(total_s, 1),
        "steps_s": steps,
        "simulation": {
            k: sim.get(k)
            for k in (
                "driver",
                "inferences",
                "cycles",
                "run_s",
                "build_s",
                "cycles_per_s",
                "bit_exact_vs_golden",
                "timing_matches_model",
                "stalls_case_ok",
            )
        },
        "rtl_vs_qonnx": sim.get("rtl_vs_qonnx"),
        "cycle_model": report.get("cycle_model"),
        "synthesis": {k: (report.get("synthesis") or {}).get(k) for k in ("lut", "ff", "bram", "dsp")},
        "fmax_mhz": (report.get("place_route") or {}).get("fmax_mhz"),
        "last_lines": [line for _, line in lines[-5:]],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=64, help="random verification inputs (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--synth-timeout", type=float, default=1800)
    parser.add_argument("--no-pnr", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "compile_lfc.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hardwire-lfc-") as tmp:
        result = run(args, Path(tmp))
    from hardwire.flows.report import markdown_table

    steps = result["steps_s"]
    sim = result["simulation"]
    text = markdown_table(
        [
            "network",
            "export s",
            *[f"{name} s" for name in steps],
            "total s",
            "sim cycles",
            "sim cycles/s",
            "bit-exact vs qonnx",
            "LUT/FF/BRAM",
            "Fmax MHz",
        ],
        [
            [
                "LFC w1a2 784-1024x3-10",
                result["export_s"],
                *[("-" if v is None else v) for v in steps.values()],
                result["total_s"],
                sim.get("cycles"),
                sim.get("cycles_per_s"),
                (result["rtl_vs_qonnx"] or {}).get("mismatches") == 0,
                "/".join(str(result["synthesis"].get(k)) for k in ("lut", "ff", "bram")),
                result["fmax_mhz"] or "-",
            ]
        ],
    )
    print(text)
    write_json_atomic(args.out, {**result, "table": text, "cpus": os.cpu_count()})
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
