"""What the compile passes (hls/passes.py) cost: per network, each pass's time and change count, and the whole
front end as passes against the one-piece front end it replaced in `hardwire compile` (frontend.load_model +
build_graph), which must give the same layers (checked: weights and thresholds equal).

    python bench/passes.py                 # zoo:mlp2, zoo:mlp4, zoo:cnn4, 5 repeats each (median)

Writes bench/results/passes.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from hardwire.flows.report import markdown_table, text_table

from hardwire.cache import write_json_atomic, write_text_atomic

NETS = ("mlp2", "mlp4", "cnn4")


def _same_layers(a, b) -> bool:
    from hardwire.hls.graph import MatVecLayer, flat_layers

    for x, y in zip(flat_layers(a.layers), flat_layers(b.layers), strict=True):
        if isinstance(x, MatVecLayer):
            if not np.array_equal(x.weights, y.weights):
                return False
            if (x.thresholds is None) != (y.thresholds is None):
                return False
            if x.thresholds is not None and not np.array_equal(x.thresholds, y.thresholds):
                return False
    return True


def measure(net: str, repeats: int) -> dict:
    from hardwire.hls import frontend, passes, rtl, zoo

    path = zoo.build(net).onnx_path
    one_piece, as_passes, logs = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        reference = frontend.build_graph(frontend.load_model(path), net)
        one_piece.append(time.perf_counter() - started)
        started = time.perf_counter()
        state, manager = passes.run_front_end(frontend.load_model(path, clean=False), net, source=str(path))
        as_passes.append(time.perf_counter() - started)
        state.lowering = {}
        manager.run(state, passes.BACK_END)
        logs.append(manager.to_dict())
    assert _same_layers(state.graph, reference), f"{net}: the passes' layers differ from build_graph's"
    assert [s.fifo_depth for s in state.plan.stages] == [
        s.fifo_depth for s in rtl.plan_dataflow(reference, rtl.solve_folding(reference)).stages
    ]
    per_pass = {
        r["pass"]: {"changes": len(r["changes"]), "time_ms": 1e3 * statistics.median(log[i]["wall_s"] for log in logs)}
        for i, r in enumerate(logs[0])
    }
    return {
        "network": net,
        "repeats": repeats,
        "one_piece_front_end_ms": 1e3 * statistics.median(one_piece),
        "front_end_passes_ms": 1e3 * statistics.median(as_passes),
        "passes": per_pass,
        "same_layers": True,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    rows = [measure(net, args.repeats) for net in args.nets]
    names = list(rows[0]["passes"])
    headers = ["network", "build_graph ms", "front-end passes ms"] + [f"{n} ms (changes)" for n in names]
    table = [
        [r["network"], f"{r['one_piece_front_end_ms']:.0f}", f"{r['front_end_passes_ms']:.0f}"]
        + [f"{r['passes'][n]['time_ms']:.1f} ({r['passes'][n]['changes']})" for n in names]
        for r in rows
    ]
    print(text_table(headers, table))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "passes.json", {"rows": rows})
    write_text_atomic(
        args.out / "passes.md",
        "# Compile passes: time and changes per pass\n\n"
        f"`python bench/passes.py` (median of {args.repeats}; load_model + build_graph against the "
        "same steps as passes, same layers checked)\n\n" + markdown_table(headers, table) + "\n",
    )


if __name__ == "__main__":
    main()
