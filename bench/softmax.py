"""Benchmark the softmax variants: error vs float64 in output LSBs, throughput and passes, buffer bits,
resources (yosys ecp5 + xilinx) and ecp5 Fmax. Prints Markdown tables and writes JSON + Markdown.

    python bench/softmax.py                  # everything (synthesis + place-and-route: a few minutes)
    python bench/softmax.py --no-synth       # accuracy, throughput and buffers only (seconds)
    python bench/softmax.py --widths 8 --fmax-seeds 1 2 3    # every variant's ecp5 Fmax over three placements

The last table sets every variant's ecp5 Fmax (the median over the placement seeds, and their range) beside its
throughput at N = n_max back to back, each as a ratio to `online`: the speed of one recurrence cycle, the
elements per cycle, and their product, elements per microsecond.

Errors come from the golden model, which the cocotb tests check bit for bit against the RTL; cycles from
the cycle model, which the same tests check handshake for handshake. The row functions (`accuracy_row`,
`throughput_row`, `buffer_rows`, `resource_row`) are importable, for the attention benchmark beside this one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hardwire.flows.report import markdown_table, tool_versions
from hardwire.gen import registry
from hardwire.gen.softmax import (
    VARIANTS,
    SoftmaxParams,
    error_bound_lsb,
    needs_fallback,
    softmax_cycles,
    softmax_golden,
)

from hardwire.cache import cache_root, write_json_atomic, write_text_atomic
from hardwire.errors import ToolError
from hardwire.jobs import run_jobs
from hardwire.params import int_range

ECP5_DEVICE = ("25k", "CABGA256")
PNR_TIMEOUT_S = 1800


def params_for(variant: str, out_width: int = 8, n_max: int = 64, **overrides) -> SoftmaxParams:
    """The benchmarked configuration of `variant` at `out_width` bits (8-bit Q4.4 inputs); the internal
    precisions are the ones the softmax derives from out_width and n_max."""
    values = {
        "variant": variant,
        "n_max": n_max,
        "in_width": 8,
        "in_frac": 4,
        "out_width": out_width,
        "max_estimate": 64,
        "estimate_window": 48,
    }
    return SoftmaxParams(**(values | overrides))


def bench_vectors(p: SoftmaxParams, count: int = 600, seed: int = 0) -> list[np.ndarray]:
    """Random lengths 1..n_max; uniform codes, codes crowded near the top (many similar large scores), a
    Gaussian of logits (sd 2), and the corners: all equal, one dominant, length 1, max length of extremes."""
    rng = np.random.default_rng(seed)
    lo, hi = int_range(p.in_width, True)
    scale = 2**p.in_frac
    vectors = []
    for i in range(count):
        n = int(rng.integers(1, p.n_max + 1))
        kind = i % 3
        if kind == 0:
            x = rng.integers(lo, hi + 1, n)
        elif kind == 1:
            x = rng.integers(hi - 3 * scale, hi + 1, n)
        else:
            x = np.clip(np.round(rng.normal(0, 2 * scale, n)), lo, hi).astype(np.int64)
        vectors.append(x)
    n = p.n_max
    vectors += [
        np.full(n, hi),
        np.full(n, lo),
        np.array([0]),
        np.array([lo]),
        np.array([hi] + [lo] * (n - 1)),
        rng.choice([lo, hi], n),
    ]
    return vectors


def accuracy_row(p: SoftmaxParams, vectors) -> dict:
    """Max and mean |hardware - float64 torch.softmax| in output LSBs over `vectors`, and the same over the
    outputs that are not saturated (true value below 2**out_width - 1)."""
    got = np.concatenate([softmax_golden(p, v) for v in vectors])
    ref = (
        np.concatenate(
            [torch.softmax(torch.tensor(v / 2.0**p.in_frac, dtype=torch.float64), 0).numpy() for v in vectors]
        )
        * 2.0**p.out_width
    )
    error = np.abs(got - ref)
    unsaturated = ref < 2**p.out_width - 1
    return {
        "max_error_lsb": float(error.max()),
        "mean_error_lsb": float(error.mean()),
        "bound_lsb": error_bound_lsb(p),
        "max_error_unsaturated_lsb": float(error[unsaturated].max()),
        "outputs": int(error.size),
        "vectors": len(vectors),
        "fallbacks": sum(needs_fallback(p, v) for v in vectors),
    }


def throughput_row(p: SoftmaxParams, n: int | None = None) -> dict:
    """Cycle model at vector length n (default n_max), back to back; unified_max with and without fallback."""
    row = softmax_cycles(p, n)
    if p.variant == "unified_max":
        fallback = softmax_cycles(p, n, fallback=True)
        row |= {
            "fallback_initiation_interval": fallback["initiation_interval"],
            "fallback_passes": fallback["passes"],
            "fallback_extra_cycles": fallback["initiation_interval"] - row["initiation_interval"],
        }
    return row


def buffer_rows(variant: str, sizes=(16, 64, 256, 1024, 4096), in_width: int = 8) -> list[dict]:
    """Buffer bits for vector lengths N (the input is kept on chip for the replayed passes: N * in_width) and
    the accumulator bits (sum_width, grows with log2 N)."""
    rows = []
    for n in sizes:
        p = SoftmaxParams(variant=variant, n_max=n, in_width=in_width, in_frac=min(4, in_width))
        rows.append({"variant": variant, "n": n, "buffer_bits": p.buffer_bits, "sum_bits": p.sum_width})
    return rows


def _synth(verilog: str, top: str, target: str) -> dict:
    from hardwire.flows.synth import synth

    return synth([verilog], top, target).to_dict()


def _fmax(verilog: str, top: str, seed: int = 1) -> dict:
    from hardwire.flows.fmax import wrapped_fmax

    try:
        placed = wrapped_fmax(
            [verilog], top, "ecp5", device=ECP5_DEVICE[0], package=ECP5_DEVICE[1], timeout_s=PNR_TIMEOUT_S, seed=seed
        )
        return {"fmax_mhz": placed.fmax_mhz}
    except ToolError as error:
        return {"fmax_mhz": None, "error": str(error).splitlines()[0]}


def resource_row(p: SoftmaxParams, targets=("ecp5", "xilinx"), fmax: bool = True, jobs: int = 2) -> dict:
    """LUT/FF/DSP/BRAM per target (yosys) and the ecp5 Fmax (nextpnr, serial-I/O wrapper) of one design."""
    verilog = registry.generate("softmax", p, cache_root() / "bench-rtl")["verilog"]
    work = {t: (_synth, verilog, p.top_name, t) for t in targets}
    if fmax:
        work["fmax"] = (_fmax, verilog, p.top_name)
    return _collect(run_jobs(work, jobs, describe=str))


def _collect(results: dict) -> dict:
    """One design's row: resources per target; ecp5 Fmax (the median over the placement seeds, each seed's
    in `ecp5_fmax_by_seed`)."""
    row = {}
    by_seed = {}
    for key, value in results.items():
        if key == "fmax" or (isinstance(key, tuple) and key[0] == "fmax"):
            seed = key[1] if isinstance(key, tuple) else 1
            by_seed[seed] = value.get("fmax_mhz")
            if value.get("error"):
                row["fmax_error"] = value["error"]
        else:
            row[key] = {k: value[k] for k in ("lut", "ff", "dsp", "bram", "lutram")}
    if by_seed:
        placed = sorted(v for v in by_seed.values() if v)
        row["ecp5_fmax_mhz"] = float(np.median(placed)) if placed else None
        row["ecp5_fmax_by_seed"] = {str(seed): by_seed[seed] for seed in sorted(by_seed)}
    return row


def speed_rows(throughput: dict, resources: dict, baseline: str = "online") -> list[dict]:
    """Per variant: ecp5 Fmax, elements per cycle (N = n_max, back to back) and elements per microsecond, each
    also as a ratio to `baseline`'s."""
    rows = []
    base = resources.get(baseline, {}).get("ecp5_fmax_mhz"), throughput.get(baseline, {}).get("elements_per_cycle")
    for variant, t in throughput.items():
        fmax = resources.get(variant, {}).get("ecp5_fmax_mhz")
        seeds = [v for v in resources.get(variant, {}).get("ecp5_fmax_by_seed", {}).values() if v]
        per_cycle = t["elements_per_cycle"]
        row = {
            "variant": variant,
            "ecp5_fmax_mhz": fmax,
            "fmax_min_mhz": min(seeds, default=None),
            "fmax_max_mhz": max(seeds, default=None),
            "elements_per_cycle": per_cycle,
            "elements_per_us": fmax * per_cycle if fmax else None,
        }
        if base[0] and fmax:
            row["fmax_ratio"] = fmax / base[0]
            row["elements_per_us_ratio"] = row["elements_per_us"] / (base[0] * base[1])
        row["elements_per_cycle_ratio"] = per_cycle / base[1] if base[1] else None
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 12, 16])
    parser.add_argument("--n-max", type=int, default=64)
    parser.add_argument("--vectors", type=int, default=600)
    parser.add_argument("--no-synth", dest="synth", action="store_false")
    parser.add_argument("--no-pnr", dest="pnr", action="store_false")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--fmax-seeds",
        type=int,
        nargs="+",
        default=[1],
        help="nextpnr placement seeds per design (Fmax: their median, and their range)",
    )
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    started = time.monotonic()

    accuracy = []
    for width in args.widths:
        for variant in args.variants:
            p = params_for(variant, width, args.n_max)
            row = {"variant": variant, "out_width": width, "params": p.to_dict()}
            row |= accuracy_row(p, bench_vectors(p, args.vectors))
            accuracy.append(row)
            print(
                f"[{time.monotonic() - started:6.0f} s] accuracy {variant} {width}-bit: max "
                f"{row['max_error_lsb']:.3f} LSB, mean {row['mean_error_lsb']:.3f} LSB",
                file=sys.stderr,
                flush=True,
            )

    designs = {variant: params_for(variant, 8, args.n_max) for variant in args.variants}
    throughput = {variant: throughput_row(p) for variant, p in designs.items()}
    buffers = [row for variant in args.variants for row in buffer_rows(variant)]

    resources = {}
    if args.synth:
        work = {}
        for variant, p in designs.items():
            verilog = registry.generate("softmax", p, cache_root() / "bench-rtl")["verilog"]
            for target in ("ecp5", "xilinx"):
                work[(variant, target)] = (_synth, verilog, p.top_name, target)
            if args.pnr:
                for seed in args.fmax_seeds:
                    work[(variant, ("fmax", seed))] = (_fmax, verilog, p.top_name, seed)
        done = run_jobs(work, args.jobs, started, describe=str)
        for variant in designs:
            resources[variant] = _collect({key[1]: value for key, value in done.items() if key[0] == variant})
    speed = speed_rows(throughput, resources) if resources else []

    md = _markdown(args, accuracy, designs, throughput, buffers, resources, speed)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        args.out / "softmax.json",
        {
            "accuracy": accuracy,
            "throughput": throughput,
            "buffers": buffers,
            "resources": resources,
            "speed": speed,
            "fmax_seeds": args.fmax_seeds if args.synth and args.pnr else [],
            "designs": {v: p.to_dict() for v, p in designs.items()},
            "tools": tool_versions(),
            "wall_s": round(time.monotonic() - started, 1),
        },
    )
    write_text_atomic(args.out / "softmax.md", md + "\n")
    print(f"wrote {args.out / 'softmax.json'} and {args.out / 'softmax.md'} ({time.monotonic() - started:.0f} s)")
    return 0


def _markdown(args, accuracy, designs, throughput, buffers, resources, speed) -> str:
    parts = [
        (
            f"Error vs float64 torch.softmax in output LSBs ({args.vectors} + 6 vectors of length "
            f"1..{args.n_max}, Q4.4 inputs; internal precisions derived from the output width)"
        ),
        "",
    ]
    parts.append(
        markdown_table(
            [
                "variant",
                "out bits",
                "max err LSB",
                "max err LSB (unsaturated)",
                "mean err LSB",
                "analytic bound LSB",
                "fallback vectors",
            ],
            [
                [
                    r["variant"],
                    r["out_width"],
                    f"{r['max_error_lsb']:.3f}",
                    f"{r['max_error_unsaturated_lsb']:.3f}",
                    f"{r['mean_error_lsb']:.4f}",
                    f"{r['bound_lsb']:.3g}",
                    r["fallbacks"] if r["variant"] == "unified_max" else "-",
                ]
                for r in accuracy
            ],
        )
    )
    parts += [
        "",
        (
            f"Throughput at N = {args.n_max} (8-bit output), vectors back to back, cycle model "
            "(= simulation, checked by tests/test_softmax.py)"
        ),
        "",
    ]
    rows = []
    for variant, t in throughput.items():
        note = ""
        if "fallback_initiation_interval" in t:
            note = (
                f"fallback: {t['fallback_passes']} passes, {t['fallback_initiation_interval']} cycles "
                f"(+{t['fallback_extra_cycles']})"
            )
        rows.append(
            [
                variant,
                t["passes"],
                t["latency_cycles"],
                t["initiation_interval"],
                f"{t['elements_per_cycle']:.3f}",
                note,
            ]
        )
    parts.append(
        markdown_table(["variant", "passes over input", "latency", "cycles / vector", "elements / cycle", "note"], rows)
    )
    parts += ["", "Buffer bits (on-chip input buffer N x in_width, every variant replays it) and sum register bits", ""]
    sizes = sorted({b["n"] for b in buffers})
    first = [b for b in buffers if b["variant"] == buffers[0]["variant"]]
    rows = [["buffer bits", *[b["buffer_bits"] for b in first]], ["sum bits", *[b["sum_bits"] for b in first]]]
    pipelined = [b for b in buffers if b["variant"] == "online_pipelined"]
    if pipelined and buffers[0]["variant"] != "online_pipelined":
        rows.append(["online_pipelined buffer bits (three banks)", *[b["buffer_bits"] for b in pipelined]])
    parts.append(markdown_table(["N", *map(str, sizes)], rows))
    if resources:
        parts += [
            "",
            (
                f"Resources at N = {args.n_max}, 8-bit output (yosys; ecp5 Fmax: nextpnr {ECP5_DEVICE[0]} "
                "inside the serial-I/O wrapper)"
            ),
            "",
        ]
        rows = []
        for variant, r in resources.items():
            row = [variant]
            for target in ("ecp5", "xilinx"):
                s = r.get(target, {})
                row += [s.get("lut"), s.get("ff"), s.get("dsp"), s.get("bram"), s.get("lutram")]
            fmax = r.get("ecp5_fmax_mhz")
            row.append(f"{fmax:.1f}" if fmax else r.get("fmax_error", "-"))
            rows.append(row)
        parts.append(
            markdown_table(
                [
                    "variant",
                    "ecp5 LUT",
                    "ecp5 FF",
                    "ecp5 DSP",
                    "ecp5 BRAM",
                    "ecp5 LUTRAM",
                    "xilinx LUT",
                    "xilinx FF",
                    "xilinx DSP",
                    "xilinx BRAM",
                    "xilinx LUTRAM",
                    "ecp5 Fmax MHz",
                ],
                rows,
            )
        )
    if any(r["ecp5_fmax_mhz"] for r in speed):
        seeds = ", ".join(map(str, args.fmax_seeds))
        parts += [
            "",
            (
                f"Speed at N = {args.n_max}, 8-bit output: ecp5 Fmax (nextpnr {ECP5_DEVICE[0]}, median over "
                f"placement seeds {seeds}; range in brackets), elements per cycle back to back (cycle model), and "
                "elements per microsecond; ratios to online"
            ),
            "",
        ]

        def number(value, spec):
            return "-" if value is None else format(value, spec)

        parts.append(
            markdown_table(
                [
                    "variant",
                    "ecp5 Fmax MHz",
                    "Fmax / online",
                    "elements / cycle",
                    "/ online",
                    "elements / us",
                    "/ online",
                ],
                [
                    [
                        r["variant"],
                        f"{number(r['ecp5_fmax_mhz'], '.1f')} [{number(r['fmax_min_mhz'], '.1f')}-"
                        f"{number(r['fmax_max_mhz'], '.1f')}]",
                        number(r.get("fmax_ratio"), ".2f"),
                        f"{r['elements_per_cycle']:.3f}",
                        number(r.get("elements_per_cycle_ratio"), ".2f"),
                        number(r["elements_per_us"], ".1f"),
                        number(r.get("elements_per_us_ratio"), ".2f"),
                    ]
                    for r in speed
                ],
            )
        )
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
