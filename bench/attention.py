"""Benchmark the attention head: cycles measured in simulation against the cycle model for a few (seq, d)
pairs, the error against float64 scaled_dot_product_attention in output LSBs, resources (yosys, ecp5 and
xilinx) and ecp5 Fmax of one configuration, and on-chip buffer bits as the sequence grows.

    python bench/attention.py            # everything (a few minutes: two Verilator builds, synthesis, nextpnr)
    python bench/attention.py --no-synth # cycles, error and buffers only
    python bench/attention.py --groups   # query groups: steady-state MAC utilization for queries = 1, 2, 4
                                         # (model; the small ones simulated) and ecp5 resources, Q=1 vs Q=4

Cycles: a whole head (seq queries, each over the same seq keys) streamed at full rate through Verilator; the
measured count (first q handshake to last output handshake) must equal `attention_cycles`. Error: every
output of those runs plus `--error-queries` random golden-model queries (the RTL is bit-exact to the golden
model, so their error is the hardware's).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from hardwire.flows.report import markdown_table, text_table, tool_versions
from hardwire.gen import registry
from hardwire.gen.attention import (
    AttentionParams,
    attend_golden,
    attention_cycles,
    error_bound_lsb,
    reference_float,
    steady_state_utilization,
)

from hardwire.cache import cache_root, write_json_atomic, write_text_atomic
from hardwire.errors import ToolError
from hardwire.params import int_range

# (parameters, sequence lengths simulated as whole heads)
SIMULATED = [
    (AttentionParams(head_dim=4, tile=4, seq_max=16), (4, 16)),
    (AttentionParams(head_dim=8, tile=8, seq_max=64), (8, 24, 64)),
    (AttentionParams(head_dim=16, tile=8, seq_max=32, causal=True), (32,)),
]
SYNTHESIZED = AttentionParams(head_dim=4, tile=4, seq_max=16)
BUFFER_SEQS = (16, 64, 256, 1024)


def _log(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)


def _head_case(p: AttentionParams, seq: int, rng) -> dict:
    q_lo, q_hi = int_range(p.q_width, True)
    v_lo, v_hi = int_range(p.v_width, True)
    # keys and queries at half range: scores spread over a few units, so the softmax is neither flat nor
    # one-hot
    q = rng.integers(q_lo // 2, q_hi // 2 + 1, (seq, p.head_dim))
    k = rng.integers(q_lo // 2, q_hi // 2 + 1, (seq, p.head_dim))
    v = rng.integers(v_lo, v_hi + 1, (seq, p.head_dim))
    queries = [
        {"q": q[i].tolist(), "k": k.tolist(), "v": v.tolist(), "position": i if p.causal else None} for i in range(seq)
    ]
    return {"name": f"head_seq{seq}", "queries": queries, "valid_probability": 1.0, "ready_probability": 1.0}


def simulate_cycles(started: float) -> list[dict]:
    from hardwire.sim.verify import verify_block

    rng = np.random.default_rng(1)
    records = []
    for p, seqs in SIMULATED:
        cases = [_head_case(p, seq, rng) for seq in seqs]
        _log(started, f"simulating {p.top_name}: seq {', '.join(map(str, seqs))}")
        result = verify_block("attention", p, cases=cases)
        for case, seq in zip(cases, seqs):
            measured = result.cases[case["name"]]
            model = attention_cycles(p, seq)
            records.append(
                {
                    "top": p.top_name,
                    "d": p.head_dim,
                    "tile": p.tile,
                    "seq": seq,
                    "causal": p.causal,
                    "cycles": measured.get("cycles"),
                    "model_cycles": model["total_cycles"],
                    "match": measured.get("cycles") == model["total_cycles"],
                    "exact": measured.get("exact"),
                    "max_error_lsb": measured.get("max_error_lsb"),
                    "mean_error_lsb": measured.get("mean_error_lsb"),
                    "macs_per_cycle": model["macs"] / model["total_cycles"],
                }
            )
        if not result.ok:
            records[-1]["failure"] = result.failure
    return records


def golden_error(p: AttentionParams, queries: int, rng) -> dict:
    """Max and mean |golden - float64 SDPA| in output LSBs over random queries of random lengths."""
    q_lo, q_hi = int_range(p.q_width, True)
    v_lo, v_hi = int_range(p.v_width, True)
    errors = []
    for index in range(queries):
        n = int(rng.integers(1, p.seq_max + 1))
        scale = 1 + index % 4  # from one-hot-like (full range) to flat softmaxes
        q = rng.integers(q_lo // scale, q_hi // scale + 1, p.head_dim)
        k = rng.integers(q_lo // scale, q_hi // scale + 1, (n, p.head_dim))
        v = rng.integers(v_lo, v_hi + 1, (n, p.head_dim))
        position = int(rng.integers(0, n)) if p.causal else None
        out = attend_golden(p, q, k, v, position)
        ref = reference_float(p, [q], [k], [v], [position] if p.causal else None)[0]
        errors.append(np.abs(out - ref))
    errors = np.concatenate(errors)
    return {
        "max_error_lsb": float(errors.max()),
        "mean_error_lsb": float(errors.mean()),
        "bound_lsb": error_bound_lsb(p),
        "outputs": int(errors.size),
    }


def resources(p: AttentionParams, started: float) -> dict:
    from hardwire.flows.fmax import wrapped_fmax
    from hardwire.flows.synth import synth

    meta = registry.generate("attention", p, cache_root() / "bench-rtl")
    out = {}
    for target in ("ecp5", "xilinx"):
        _log(started, f"synthesizing {p.top_name} for {target}")
        out[target] = {
            k: v
            for k, v in synth([meta["verilog"]], meta["top"], target).to_dict().items()
            if k in ("lut", "ff", "dsp", "bram", "lutram")
        }
    _log(started, f"placing {p.top_name} on ecp5 (nextpnr)")
    try:
        placed = wrapped_fmax([meta["verilog"]], meta["top"], "ecp5", device="85k", package="CABGA381", timeout_s=1800)
        out["ecp5"]["fmax_mhz"] = placed.fmax_mhz
    except ToolError as error:
        out["ecp5"]["fmax_mhz"] = None
        out["ecp5"]["error"] = str(error).splitlines()[0]
    return out


# query groups: (d, tile, seq) shapes, group sizes, the shapes also simulated, the synthesized shape and sizes
GROUP_SHAPES = [(4, 4, 16), (4, 4, 64), (8, 8, 64), (16, 16, 256)]
GROUP_SIZES = (1, 2, 4)
GROUP_SIMULATED = [(4, 4, 16), (4, 4, 64)]
GROUP_SYNTH = ((8, 8, 64), (1, 4))
STEADY_GROUPS = 8


def _steady_period(out: list[int], group: int, groups: int) -> float:
    """Cycles per group between the last groups' last outputs, as `steady_state_utilization` takes them."""
    last = min(4, groups - 2)
    return (out[-1] - out[-1 - last * group]) / last


def simulate_groups(p: AttentionParams, started: float) -> dict:
    """STEADY_GROUPS full groups over seq_max keys through Verilator (bit-exact and cycle-exact checks in
    the testbench): the measured steady-state cycles per group."""
    from hardwire.sim.verify import verify_block

    rng = np.random.default_rng(3)
    q_lo, q_hi = int_range(p.q_width, True)
    v_lo, v_hi = int_range(p.v_width, True)
    seq, d = p.seq_max, p.head_dim
    queries = []
    for _ in range(STEADY_GROUPS):
        k = rng.integers(q_lo // 2, q_hi // 2 + 1, (seq, d)).tolist()
        v = rng.integers(v_lo, v_hi + 1, (seq, d)).tolist()
        for _ in range(p.queries):
            q = rng.integers(q_lo // 2, q_hi // 2 + 1, d).tolist()
            queries.append({"q": q, "k": k, "v": v, "position": p.seq_max - 1 if p.causal else None})
    case = {"name": "steady_groups", "queries": queries, "valid_probability": 1.0, "ready_probability": 1.0}
    _log(started, f"simulating {p.top_name}: {STEADY_GROUPS} groups of {p.queries} over {seq} keys")
    result = verify_block("attention", p, cases=[case])
    measured = result.cases.get("steady_groups", {})
    out = measured.get("output_cycles")
    period = _steady_period(out, p.queries, STEADY_GROUPS) if out else None
    return {
        "ok": result.ok and bool(measured.get("exact")) and measured.get("cycles") == measured.get("model_cycles"),
        "cycles_per_group": period,
        "utilization": p.queries * seq / period if period else None,
        "failure": None if result.ok else result.failure,
    }


def groups_main(args, started: float) -> int:
    rows = []
    for d, tile, seq in GROUP_SHAPES:
        for group in GROUP_SIZES:
            p = AttentionParams(head_dim=d, tile=tile, seq_max=seq, queries=group)
            steady = steady_state_utilization(p, groups=STEADY_GROUPS)
            record = {"d": d, "tile": tile, "seq": seq, "queries": group, **steady, "simulated": None}
            if not args.no_sim and (d, tile, seq) in GROUP_SIMULATED:
                record["simulated"] = simulate_groups(p, started)
            rows.append(record)
    resources = {}
    if not args.no_synth:
        from hardwire.flows.synth import synth

        (d, tile, seq), sizes = GROUP_SYNTH
        for group in sizes:
            p = AttentionParams(head_dim=d, tile=tile, seq_max=seq, queries=group)
            meta = registry.generate("attention", p, cache_root() / "bench-rtl")
            _log(started, f"synthesizing {p.top_name} for ecp5")
            report = synth([meta["verilog"]], meta["top"], "ecp5").to_dict()
            resources[group] = {
                "top": p.top_name,
                **{k: report.get(k) for k in ("lut", "ff", "dsp", "bram")},
                "buffer_bits": sum(p.buffer_bits.values()),
            }
    headers = [
        "d",
        "tile",
        "seq",
        "Q",
        "cycles/group",
        "MAC util (model)",
        "MAC util (sim)",
        "sim exact",
        "K/V beats/query",
    ]
    table = [
        [
            r["d"],
            r["tile"],
            r["seq"],
            r["queries"],
            f"{r['cycles_per_group']:.1f}",
            f"{r['utilization']:.1%}",
            f"{r['simulated']['utilization']:.1%}" if r["simulated"] and r["simulated"]["utilization"] else "-",
            ("yes" if r["simulated"]["ok"] else "NO") if r["simulated"] else "-",
            f"{r['kv_beats_per_query']:g}",
        ]
        for r in rows
    ]
    sections = [
        (
            "Query groups: steady-state MAC utilization of the 2d MAC/cycle peak (exact schedule; "
            f"{STEADY_GROUPS} full groups back to back)",
            headers,
            table,
        )
    ]
    if resources:
        (d, tile, seq), _ = GROUP_SYNTH
        res_headers = ["design", "Q", "LUT", "FF", "DSP", "BRAM", "buffer bits"]
        res_rows = [
            [r["top"], q, r["lut"], r["ff"], r["dsp"], r["bram"], r["buffer_bits"]] for q, r in resources.items()
        ]
        sections.append((f"Resources, ecp5 (yosys synth_ecp5), d{d}/t{tile}/s{seq}", res_headers, res_rows))
    for title, headers_, rows_ in sections:
        print(f"\n{title}\n{text_table(headers_, rows_)}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        args.out / "attention_groups.json",
        {
            "steady_state": rows,
            "resources_ecp5": resources,
            "tools": tool_versions(),
            "wall_s": round(time.monotonic() - started, 1),
        },
    )
    md = "\n\n".join(f"### {title}\n\n{markdown_table(h, r)}" for title, h, r in sections)
    write_text_atomic(args.out / "attention_groups.md", md + "\n")
    print(f"wrote {args.out / 'attention_groups.json'} and {args.out / 'attention_groups.md'}")
    bad = [r for r in rows if r["simulated"] and not r["simulated"]["ok"]]
    return 1 if bad else 0


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-synth", action="store_true", help="skip yosys and nextpnr")
    parser.add_argument("--no-sim", action="store_true", help="skip the Verilator runs")
    parser.add_argument("--groups", action="store_true", help="query groups: utilization and resources only")
    parser.add_argument("--error-queries", type=int, default=300)
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    rng = np.random.default_rng(7)
    if args.groups:
        return groups_main(args, started)

    cycles = [] if args.no_sim else simulate_cycles(started)
    _log(started, "golden model against float64 SDPA")
    errors = {p.top_name: golden_error(p, args.error_queries, rng) for p, _ in SIMULATED}
    buffers = []
    for d, tile in ((4, 4), (64, 16)):
        for seq in BUFFER_SEQS:
            p = AttentionParams(head_dim=d, tile=tile, seq_max=seq)
            bits = p.buffer_bits
            buffers.append({"d": d, "tile": tile, "seq_max": seq, **bits, "total": sum(bits.values())})
    synthesized = {} if args.no_synth else resources(SYNTHESIZED, started)

    cycle_headers = [
        "design",
        "d",
        "tile",
        "seq",
        "causal",
        "measured cycles",
        "model cycles",
        "equal",
        "bit-exact",
        "MAC/cycle",
        "of peak 2d",
        "max err LSB",
        "mean err LSB",
    ]
    cycle_rows = [
        [
            c["top"],
            c["d"],
            c["tile"],
            c["seq"],
            c["causal"],
            c["cycles"],
            c["model_cycles"],
            c["match"],
            c["exact"],
            f"{c['macs_per_cycle']:.2f}",
            f"{c['macs_per_cycle'] / (2 * c['d']):.0%}",
            _number(c["max_error_lsb"]),
            _number(c["mean_error_lsb"]),
        ]
        for c in cycles
    ]
    error_headers = ["design", "outputs", "max err LSB", "mean err LSB", "bound LSB"]
    error_rows = [
        [top, e["outputs"], f"{e['max_error_lsb']:.3f}", f"{e['mean_error_lsb']:.3f}", f"{e['bound_lsb']:.3f}"]
        for top, e in errors.items()
    ]
    buffer_headers = ["d", "tile", "seq_max", "query", "scores", "v_tile", "state (m, l, o)", "output", "total bits"]
    buffer_rows = [
        [b["d"], b["tile"], b["seq_max"], b["query"], b["scores"], b["v_tile"], b["state"], b["output"], b["total"]]
        for b in buffers
    ]
    sections = [
        ("Cycles: simulated whole heads vs the cycle model", cycle_headers, cycle_rows),
        ("Error vs float64 scaled_dot_product_attention (golden model = RTL)", error_headers, error_rows),
        ("On-chip buffer bits vs sequence length", buffer_headers, buffer_rows),
    ]
    if synthesized:
        res_headers = ["design", "target", "LUT", "FF", "DSP", "BRAM", "Fmax MHz"]
        res_rows = [
            [
                SYNTHESIZED.top_name,
                t,
                r["lut"],
                r["ff"],
                r["dsp"],
                r["bram"],
                f"{r['fmax_mhz']:.1f}" if r.get("fmax_mhz") else r.get("error", "-"),
            ]
            for t, r in synthesized.items()
        ]
        sections.append(
            ("Resources (yosys) and ecp5 Fmax (nextpnr, serial-I/O wrapper, LFE5U-85F)", res_headers, res_rows)
        )
    for title, headers, rows in sections:
        print(f"\n{title}\n{text_table(headers, rows)}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        args.out / "attention.json",
        {
            "cycles": cycles,
            "errors": errors,
            "buffers": buffers,
            "resources": synthesized,
            "synthesized_params": SYNTHESIZED.to_dict(),
            "tools": tool_versions(),
            "wall_s": round(time.monotonic() - started, 1),
        },
    )
    md = "\n\n".join(f"### {title}\n\n{markdown_table(headers, rows)}" for title, headers, rows in sections)
    write_text_atomic(args.out / "attention.md", md + "\n")
    print(f"wrote {args.out / 'attention.json'} and {args.out / 'attention.md'} ({time.monotonic() - started:.0f} s)")
    bad = [c for c in cycles if not (c["match"] and c["exact"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
