"""Benchmark `hardwire explore` (LUT against throughput, ECP5): the verified front, the share of the true front
it finds where the space is small enough to synthesize completely, and the real synthesis runs it needs
against exhaustive search and against FINN-style greedy folding (hls.rtl.solve_folding with fps: the cheapest
folding meeting each throughput of the true front, one synthesis per target). Writes
bench/results/explore.json/.md.

    python bench/explore.py                           # the small enumerable networks, then zoo:mlp2
    python bench/explore.py --zoo mlp4,mlp2,cnn4 --max-verify 24 --workers 16

Enumerable cases are random integer networks of estimate.designs (weights from the seed) whose foldings are
all synthesized: their true front is the Pareto front of every measurement. Zoo networks' spaces are too large
to synthesize completely; for them only the verified front, the runs and the wall time are reported.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hardwire.estimate.explore import explore, model_source, network_spec_source, parse_budget, source_for
from hardwire.hls import rtl

from hardwire.cache import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"
OBJECTIVES = ("lut", "throughput")

SMALL = {
    "dense 8-4": {
        "kind": "network",
        "seed": 11,
        "a_bits": 4,
        "a_signed": False,
        "shape": [1, 1, 8],
        "layers": [{"op": "dense", "out": 4, "pe": 1, "simd": 1, "w_bits": 4, "out_bits": 0}],
    },
    "dense 4-4-2": {
        "kind": "network",
        "seed": 12,
        "a_bits": 2,
        "a_signed": False,
        "shape": [1, 1, 4],
        "layers": [
            {"op": "dense", "out": 4, "pe": 1, "simd": 1, "w_bits": 2, "out_bits": 2},
            {"op": "dense", "out": 2, "pe": 1, "simd": 1, "w_bits": 2, "out_bits": 0},
        ],
    },
    "conv 3x3 2-4ch": {
        "kind": "network",
        "seed": 13,
        "a_bits": 2,
        "a_signed": False,
        "shape": [4, 4, 2],
        "layers": [
            {
                "op": "conv",
                "out": 4,
                "kernel": 3,
                "stride": 1,
                "padding": 0,
                "pe": 1,
                "simd": 1,
                "w_bits": 2,
                "out_bits": 0,
            }
        ],
    },
}

# block families: (space, fixed parameters, workload) of `hardwire explore BLOCK --space ... --param ... --workload`
BLOCKS = {
    "systolic 18": (
        ["rows=1,2,4", "cols=1,2,4", "dataflow=weight_stationary,output_stationary"],
        ["a_width=4", "w_width=4", "k_max=64", "acc_depth=16"],
        "m=16,k=16,n=16",
    ),
}


def front_keys(points) -> set:
    front = set()
    for p in points:
        if not any(
            q["lut"] <= p["lut"]
            and q["throughput"] >= p["throughput"]
            and (q["lut"] < p["lut"] or q["throughput"] > p["throughput"])
            for q in points
        ):
            front.add(p["key"])
    return front


def greedy(source, throughputs, by_folds) -> dict:
    """FINN-style folding for each throughput target: the folding solve_folding picks, and whether its measured
    point is on the true front."""
    out = []
    for fps in sorted(set(throughputs)):
        folding = rtl.solve_folding(source.graph, fps=fps, clock_mhz=100.0)
        folds = tuple((folding.folds[layer.name].pe, folding.folds[layer.name].simd) for layer in source.layers)
        out.append({"fps": fps, "folds": folds, "point": by_folds.get(folds)})
    return out


def small_case(name: str, spec, out: Path, workers: int, max_verify: int) -> dict:
    source = (
        network_spec_source(spec)
        if isinstance(spec, dict)
        else source_for(name.split()[0], space=spec[0], params=spec[1], workload=spec[2])
    )
    started = time.monotonic()
    guided = explore(source, objectives=OBJECTIVES, out=out / "guided", workers=workers, max_verify=max_verify)
    guided_s = time.monotonic() - started
    started = time.monotonic()
    full = explore(source, objectives=OBJECTIVES, out=out / "full", workers=workers, verify_all=True)
    full_s = time.monotonic() - started
    measured = [
        {"key": p.key, "folds": tuple(tuple(f) if isinstance(f, list) else f for f in p.folds.values()), **p.measured}
        for p in full.points
        if p.measured
    ]
    true = front_keys(measured)
    found = {p.key for p in guided.verified_front} & true
    by_folds = {m["folds"]: m for m in measured}
    fps_targets = [m["throughput"] for m in measured if m["key"] in true]
    # FINN-style greedy folding exists for networks only
    greedy_points = greedy(source, fps_targets, by_folds) if source.kind == "network" else []
    on_front = sum(g["point"] is not None and g["point"]["key"] in true for g in greedy_points)
    return {
        "case": name,
        "kind": source.kind,
        "space": len(full.points),
        "true_front": len(true),
        "found": len(found),
        "share_found": len(found) / len(true),
        "guided_synth_runs": len(guided.kept),
        "exhaustive_synth_runs": len(full.kept),
        "greedy_synth_runs": len(greedy_points),
        "greedy_on_true_front": on_front,
        "guided_front": [(p.folds, p.measured["lut"], p.measured["throughput"]) for p in guided.verified_front],
        "rounds": guided.stats["rounds"],
        "guided_wall_s": round(guided_s, 1),
        "exhaustive_wall_s": round(full_s + guided_s, 1),
    }


def zoo_case(name: str, out: Path, workers: int, max_verify: int, max_points: int, budget: dict) -> dict:
    source = model_source(f"zoo:{name}")
    started = time.monotonic()
    result = explore(
        source,
        objectives=OBJECTIVES,
        out=out,
        workers=workers,
        max_verify=max_verify,
        max_points=max_points,
        budget=budget,
    )
    return {
        "case": f"zoo:{name}",
        "space": result.space_size,
        "scored": len(result.points),
        "enumerated": result.enumerated,
        "guided_synth_runs": len(result.kept),
        "verified_front": [(p.folds, p.measured["lut"], p.measured["throughput"]) for p in result.verified_front],
        "budget": budget,
        "score_s": result.stats["score_seconds"],
        "wall_s": round(time.monotonic() - started, 1),
        "rounds": result.stats["rounds"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default="mlp2", help="zoo networks, comma-separated ('' for none)")
    parser.add_argument("--small", default=",".join(SMALL), help="enumerable cases, comma-separated")
    parser.add_argument("--blocks", default=",".join(BLOCKS), help="enumerable block-family cases ('' for none)")
    parser.add_argument("--max-verify", type=int, default=12)
    parser.add_argument("--max-points", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget", default="", help="zoo networks: resource budget, e.g. lut=20000")
    parser.add_argument("--work", type=Path, default=Path("explore-bench"))
    parser.add_argument("--name", default="explore", help="results file name under bench/results (default explore)")
    args = parser.parse_args(argv)
    small, zoo = [], []
    for i, name in enumerate(n for n in args.small.split(",") if n):
        small.append(small_case(name, SMALL[name], args.work / f"small{i}", args.workers, args.max_verify))
        print(small[-1], file=sys.stderr, flush=True)
    for i, name in enumerate(n for n in args.blocks.split(",") if n):
        small.append(small_case(name, BLOCKS[name], args.work / f"block{i}", args.workers, args.max_verify))
        print(small[-1], file=sys.stderr, flush=True)
    for name in (n for n in args.zoo.split(",") if n):
        zoo.append(
            zoo_case(name, args.work / name, args.workers, args.max_verify, args.max_points, parse_budget(args.budget))
        )
        print(zoo[-1], file=sys.stderr, flush=True)
    lines = [
        "# hardwire explore: LUT against throughput on ECP5 (yosys)",
        "",
        f"Command: python bench/explore.py {' '.join(argv or sys.argv[1:])}",
        "",
        "Synthesis runs count the points each method needs synthesized (a cold start); wall times are "
        "those of this run, with whatever the tool cache already held.",
        "",
        "## Spaces synthesized completely",
        "",
        "| case | legal points | true front | found | synth runs: explore / exhaustive / greedy | greedy on front "
        "| wall s explore / exhaustive |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in small:
        lines.append(
            f"| {r['case']} | {r['space']} | {r['true_front']} | {r['found']} ({100 * r['share_found']:.0f}%) "
            f"| {r['guided_synth_runs']} / {r['exhaustive_synth_runs']} / {r['greedy_synth_runs']} "
            f"| {str(r['greedy_on_true_front']) + ' of ' + str(r['greedy_synth_runs']) if r['greedy_synth_runs'] else '-'} "
            f"| {r['guided_wall_s']} / "
            f"{r['exhaustive_wall_s']} |"
        )
    if zoo:
        lines += [
            "",
            "## Zoo networks",
            "",
            "| network | foldings | scored | synth runs | verified front (LUT @ inferences/s) | scoring s | wall s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in zoo:
            front = "; ".join(f"{lut:,.0f} @ {fps:,.0f}" for _, lut, fps in r["verified_front"])
            lines.append(
                f"| {r['case']} | {r['space']:,} | {r['scored']:,}{'' if r['enumerated'] else ' (sampled)'} "
                f"| {r['guided_synth_runs']} | {front} | {r['score_s']} | {r['wall_s']} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(RESULTS / f"{args.name}.json", {"small": small, "zoo": zoo})
    write_text_atomic(RESULTS / f"{args.name}.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
