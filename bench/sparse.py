"""Benchmark the N:M sparse DSP chain engine: throughput per pattern, the selector's cost, INT4 packing, and
what N:M pruning does to a small real network. Prints Markdown tables and writes bench/results/sparse.json/.md.

    python bench/sparse.py              # everything (synthesis + Fmax take a few minutes)
    python bench/sparse.py --quick      # no place-and-route, fewer fine-tune epochs

1. Throughput (cycle model, checked against Verilator here on long rows): effective MACs per cycle (dense
   equivalent: K per row), multiplies per cycle, multiplier utilization and cycles against dense for the
   same layer, per pattern.
2. Resources: LUT/FF/DSP from yosys (synth_xilinx xc7 and synth_ecp5) and ECP5 Fmax (nextpnr behind the
   serial-I/O wrapper) of a sparse chain with every pattern against a dense-only chain of the same length
   (pattern set "dense": no selector), and INT4 packing against unpacked INT4; the Xilinx netlist is read
   back to count DSP48E1s whose PCIN is wired to the previous stage's PCOUT (the cascade).
3. Accuracy: an MLP (64-64-64-10) on scikit-learn's digits trained deterministically in torch, quantized
   (per-row symmetric weights, INT8 or INT4; INT8 activations), then N:M-pruned per pattern with and without
   a short masked fine-tune; inference runs the integer layers through `sparse_golden` (the hardware's
   arithmetic) on the 360-image test split. INT4 with packing needs one mask per row pair.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
from hardwire.flows.report import markdown_table, tool_versions
from hardwire.gen import registry
from hardwire.gen.sparse import (
    SparseParams,
    compress,
    nm_mask,
    prune_nm,
    sparse_cycles,
    sparse_golden,
)

from hardwire.cache import cache_root, write_json_atomic, write_text_atomic
from hardwire.errors import ToolError
from hardwire.jobs import run_jobs

PATTERNS = ("dense", "1:2", "2:4", "1:4", "2:8", "4:8")
ECP5 = ("85k", "CABGA381")
PNR_TIMEOUT_S = 1800


def _synth(verilog: str, top: str, target: str) -> dict:
    from hardwire.flows.synth import cascaded_dsp_count, synth

    report = synth([verilog], top, target)
    out = report.to_dict()
    if target == "xilinx":
        out["dsp_cascaded"] = cascaded_dsp_count(report.netlist_json)
    return out


def _fmax(verilog: str, top: str) -> dict:
    from hardwire.flows.fmax import wrapped_fmax

    try:
        placed = wrapped_fmax([verilog], top, "ecp5", device=ECP5[0], package=ECP5[1], timeout_s=PNR_TIMEOUT_S)
        return {"fmax_mhz": placed.fmax_mhz}
    except ToolError as error:
        return {"fmax_mhz": None, "error": str(error).splitlines()[0]}


# --------------------------------------------------------------------------------------------------
# 1. Throughput


def throughput(p: SparseParams, rows: int, k: int) -> list[dict]:
    """Cycle model of a rows x k layer (one vector) per pattern, against dense."""
    dense = sparse_cycles(p, k, "dense", rows)
    out = []
    for pattern in PATTERNS:
        c = sparse_cycles(p, k, pattern, rows)
        out.append(
            {
                "pattern": pattern,
                "rows": rows,
                "k": k,
                "beats": c["beats"],
                "cycles": c["total_cycles"],
                "multiplies": c["multiplies"],
                "effective_macs_per_cycle": round(c["dense_macs"] / c["total_cycles"], 2),
                "multiplies_per_cycle": round(c["multiplies"] / c["total_cycles"], 2),
                "utilization": round(c["multiplies"] / (c["total_cycles"] * p.lanes * p.chains), 4),
                "utilization_steady": round(c["utilization"], 4),
                "cycles_vs_dense": round(c["total_cycles"] / dense["total_cycles"], 4),
            }
        )
    return out


def simulate_long_rows(k: int) -> list[dict]:
    """One K-deep row per chain per pattern on the tested configuration, in Verilator: cycles and outputs."""
    from hardwire.sim.tb_sparse import _job
    from hardwire.sim.verify import verify_block

    p = SparseParams()
    rng = np.random.default_rng(3)
    cases = []
    for pattern in PATTERNS:
        w = rng.integers(-128, 128, size=(p.chains, k))
        x = rng.integers(-128, 128, size=(1, k))
        cases.append(
            {
                "name": f"long_{pattern.replace(':', 'of')}",
                "jobs": [_job(p, pattern, w, x)],
                "valid_probability": 1.0,
                "ready_probability": 1.0,
            }
        )
    result = verify_block("sparse", p, cases=cases)
    out = []
    for pattern, case in zip(PATTERNS, cases):
        measured = result.cases[case["name"]]
        model = sparse_cycles(p, k, pattern, p.chains)
        out.append(
            {
                "pattern": pattern,
                "k": k,
                "config": p.top_name,
                "cycles": measured.get("cycles"),
                "model_cycles": model["total_cycles"],
                "exact": measured.get("exact"),
                "utilization": round(model["multiplies"] / (measured.get("cycles", 1) * p.lanes * p.chains), 4),
            }
        )
    return out


# --------------------------------------------------------------------------------------------------
# 3. Accuracy on digits


def _train_mlp(x, y, hidden=(64, 64), epochs=60, seed=0, masks=None, init=None, lr=0.01):
    import torch

    torch.manual_seed(seed)
    sizes = (x.shape[1], *hidden, 10)
    layers = [torch.nn.Linear(a, b) for a, b in itertools.pairwise(sizes)]
    if init is not None:
        for layer, (w, b) in zip(layers, init):
            layer.weight.data[:] = torch.as_tensor(w)
            layer.bias.data[:] = torch.as_tensor(b)
    model = torch.nn.Sequential(*[m for layer in layers[:-1] for m in (layer, torch.nn.ReLU())], layers[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    generator = torch.Generator().manual_seed(seed)

    def apply_masks():
        if masks is not None:
            with torch.no_grad():
                for layer, mask in zip(layers, masks):
                    layer.weight.mul_(torch.as_tensor(mask, dtype=layer.weight.dtype))

    apply_masks()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for i in range(0, len(xt), 64):
            batch = order[i : i + 64]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[batch]), yt[batch]).backward()
            optimizer.step()
            apply_masks()
    return [
        (layer.weight.detach().numpy().astype(np.float64), layer.bias.detach().numpy().astype(np.float64))
        for layer in layers
    ]


def _quantize_rows(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric integer weights and their scales."""
    top = (1 << (bits - 1)) - 1
    scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / top
    return np.clip(np.round(w / scale[:, None]), -top - 1, top).astype(np.int64), scale


def _integer_accuracy(layers, pattern, bits, x_train, x_test, y_test, row_group=1) -> float:
    """Quantize, run every layer's integer dot products through `sparse_golden` (the engine's arithmetic),
    rescale in float, ReLU, requantize the activations to INT8 (scales from the training set)."""
    p = SparseParams(w_width=bits if bits in (4, 8) else 8, patterns=pattern, lanes=4, chains=2, int4_packing=False)
    # input pixels are k/16 with k in 0..15: the integer k is the INT8 activation, scale 1/16
    act_scale = 1.0 / 16
    xq_train, xq_test = np.round(x_train * 16).astype(np.int64), np.round(x_test * 16).astype(np.int64)
    for index, (w, b) in enumerate(layers):
        wq, w_scale = _quantize_rows(w, bits)
        wq = prune_nm(wq, pattern, row_group)
        c = compress(wq, pattern, row_group)
        outs = []
        for xq in (xq_train, xq_test):
            acc = sparse_golden(p, c, xq)
            outs.append(acc * (w_scale[None, :] * act_scale) + b[None, :])
        if index == len(layers) - 1:
            return float((outs[1].argmax(axis=1) == y_test).mean())
        h_train, h_test = (np.maximum(o, 0.0) for o in outs)
        act_scale = max(h_train.max(), 1e-12) / 127
        xq_train = np.clip(np.round(h_train / act_scale), 0, 127).astype(np.int64)
        xq_test = np.clip(np.round(h_test / act_scale), 0, 127).astype(np.int64)
    raise AssertionError("unreachable")


def accuracy(fine_tune_epochs: int) -> dict:
    import torch
    from hardwire.hls.zoo import load_digits_split

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_train, y_train, x_test, y_test = load_digits_split(0)
    base = _train_mlp(x_train, y_train)

    def float_accuracy(layers):
        h = x_test.astype(np.float64)
        for i, (w, b) in enumerate(layers):
            h = h @ w.T + b
            if i < len(layers) - 1:
                h = np.maximum(h, 0)
        return float((h.argmax(axis=1) == y_test).mean())

    rows = []
    for pattern in PATTERNS:
        record = {"pattern": pattern}
        for bits, row_group, tag in ((8, 1, "int8"), (4, 1, "int4"), (4, 2, "int4_pairs")):
            masks = [nm_mask(w, pattern, row_group) for w, _ in base]
            pruned = [(w * mask, b) for (w, b), mask in zip(base, masks)]
            record[f"{tag}_pruned"] = _integer_accuracy(pruned, pattern, bits, x_train, x_test, y_test, row_group)
            if fine_tune_epochs and pattern != "dense":
                tuned = _train_mlp(x_train, y_train, epochs=fine_tune_epochs, masks=masks, init=pruned, lr=0.003)
                record[f"{tag}_finetuned"] = _integer_accuracy(tuned, pattern, bits, x_train, x_test, y_test, row_group)
            else:
                record[f"{tag}_finetuned"] = record[f"{tag}_pruned"]
        record["float_pruned"] = float_accuracy([(w * nm_mask(w, pattern), b) for w, b in base])
        rows.append(record)
        print(f"accuracy {pattern}: {record}", file=sys.stderr, flush=True)
    return {
        "float_dense": float_accuracy(base),
        "patterns": rows,
        "fine_tune_epochs": fine_tune_epochs,
        "test_images": len(y_test),
    }


# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lanes", type=int, default=8, help="chain length of the synthesized designs")
    parser.add_argument("--quick", action="store_true", help="no place-and-route, 5 fine-tune epochs")
    parser.add_argument("--no-synth", dest="synthesize", action="store_false")
    parser.add_argument("--no-sim", dest="simulate", action="store_false")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    report: dict = {"tools": tool_versions()}

    # 1. throughput: a 256 x 4096 layer on 4 chains of 8 stages (model); 2 x 4096 rows simulated
    p = SparseParams(lanes=8, chains=4)
    report["throughput"] = {"config": p.to_dict(), "layer": [256, 4096], "rows": throughput(p, 256, 4096)}
    if args.simulate:
        report["simulated"] = simulate_long_rows(4096)

    # 2. resources
    if args.synthesize:
        lanes = args.lanes
        designs = {
            "sparse (all patterns)": SparseParams(lanes=lanes, chains=1),
            "dense only": SparseParams(lanes=lanes, chains=1, patterns="dense"),
            "sparse INT4, 2 chains": SparseParams(lanes=lanes, chains=2, w_width=4),
            "sparse INT4 packed, 2 chains": SparseParams(lanes=lanes, chains=2, w_width=4, int4_packing=True),
        }
        rtl = cache_root() / "bench-rtl"
        files = {label: registry.generate("sparse", q, rtl) for label, q in designs.items()}
        jobs = {
            (label, target): (_synth, meta["verilog"], meta["top"], target)
            for label, meta in files.items()
            for target in ("xilinx", "ecp5")
        }
        if not args.quick:
            jobs |= {
                (label, "fmax"): (_fmax, files[label]["verilog"], files[label]["top"])
                for label in ("sparse (all patterns)", "dense only")
            }
        results = run_jobs(jobs, args.jobs, started, errors=(ToolError,))
        report["resources"] = [
            {
                "design": label,
                "top": files[label]["top"],
                "params": designs[label].to_dict(),
                "xilinx": results[(label, "xilinx")],
                "ecp5": results[(label, "ecp5")],
                "ecp5_fmax": results.get((label, "fmax"), {}),
            }
            for label in designs
        ]

    # 3. accuracy
    report["accuracy"] = accuracy(5 if args.quick else 30)
    report["wall_s"] = round(time.monotonic() - started, 1)

    md = render(report)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "sparse.json", report)
    write_text_atomic(args.out / "sparse.md", md + "\n")
    print(f"wrote {args.out / 'sparse.json'} and {args.out / 'sparse.md'} ({time.monotonic() - started:.0f} s)")
    return 0


def render(report: dict) -> str:
    t = report["throughput"]
    cfg = t["config"]
    title = (
        f"### Throughput: {t['layer'][0]} x {t['layer'][1]} layer, {cfg['chains']} chains x {cfg['lanes']} "
        f"stages ({cfg['multipliers']} multipliers), cycle model"
    )
    parts = [
        title,
        markdown_table(
            [
                "pattern",
                "beats",
                "cycles",
                "cycles vs dense",
                "effective MACs/cycle",
                "multiplies/cycle",
                "multiplier utilization",
            ],
            [
                [
                    r["pattern"],
                    r["beats"],
                    r["cycles"],
                    f"{r['cycles_vs_dense']:.3f}",
                    r["effective_macs_per_cycle"],
                    r["multiplies_per_cycle"],
                    f"{r['utilization']:.2%}",
                ]
                for r in t["rows"]
            ],
        ),
    ]
    if report.get("simulated"):
        s = report["simulated"]
        parts += [
            f"\n### Verilator, {s[0]['config']}: one {s[0]['k']}-deep row per chain",
            markdown_table(
                ["pattern", "measured cycles", "model cycles", "bit-exact", "utilization"],
                [[r["pattern"], r["cycles"], r["model_cycles"], r["exact"], f"{r['utilization']:.2%}"] for r in s],
            ),
        ]
    if report.get("resources"):
        rows = []
        for r in report["resources"]:
            x, e, f = r["xilinx"], r["ecp5"], r["ecp5_fmax"]
            fmax = f"{f['fmax_mhz']:.1f}" if f.get("fmax_mhz") else f.get("error", "-")
            rows.append(
                [
                    r["design"],
                    r["params"]["multipliers"],
                    x.get("lut"),
                    x.get("ff"),
                    x.get("dsp"),
                    x.get("dsp_cascaded"),
                    x.get("lutram"),
                    e.get("lut"),
                    e.get("ff"),
                    e.get("dsp"),
                    fmax,
                ]
            )
        title = (
            "\n### Resources (yosys 0.70: synth_xilinx xc7 out of context, synth_ecp5; Fmax: nextpnr-ecp5 "
            f"{ECP5[0]} behind the serial-I/O wrapper)"
        )
        parts += [
            title,
            markdown_table(
                [
                    "design",
                    "multipliers",
                    "xc7 LUT",
                    "xc7 FF",
                    "xc7 DSP48E1",
                    "PCIN cascaded",
                    "xc7 LUTRAM/SRL",
                    "ecp5 LUT",
                    "ecp5 FF",
                    "ecp5 MULT18",
                    "ecp5 Fmax MHz",
                ],
                rows,
            ),
        ]
    a = report["accuracy"]
    title = (
        f"\n### Digits MLP 64-64-64-10 (float dense {a['float_dense']:.2%}), test accuracy on "
        f"{a['test_images']} images; integer layers run through sparse_golden; fine-tune "
        f"{a['fine_tune_epochs']} epochs with the mask fixed"
    )
    parts += [
        title,
        markdown_table(
            [
                "pattern",
                "float pruned",
                "INT8 pruned",
                "INT8 + fine-tune",
                "INT4 pruned",
                "INT4 + fine-tune",
                "INT4 pair mask (packing)",
                "INT4 pair mask + fine-tune",
            ],
            [
                [
                    r["pattern"],
                    f"{r['float_pruned']:.2%}",
                    f"{r['int8_pruned']:.2%}",
                    f"{r['int8_finetuned']:.2%}",
                    f"{r['int4_pruned']:.2%}",
                    f"{r['int4_finetuned']:.2%}",
                    f"{r['int4_pairs_pruned']:.2%}",
                    f"{r['int4_pairs_finetuned']:.2%}",
                ]
                for r in a["patterns"]
            ],
        ),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
