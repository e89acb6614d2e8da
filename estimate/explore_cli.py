"""`hardwire explore`: the command-line side of design-space exploration, and its report (report.json,
report.md, pareto.png)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .explore import DEFAULT_MAX_POINTS, DEFAULT_MAX_VERIFY, OBJECTIVES, ExploreResult, Point


def add_parsers(sub) -> dict:
    p = sub.add_parser(
        "explore",
        help="surrogate-guided design-space exploration of a network's folding, verified with yosys",
        description="Score every legal per-layer (PE, SIMD) folding of a network (all of them when the space is "
        "small, else an NSGA-II search or a random sample) with the surrogates and the exact schedule "
        "models, "
        "keep the estimated Pareto front plus a margin for the surrogates' uncertainty, synthesize "
        "those points for real (yosys; nextpnr for fmax) in parallel, and report the verified front. "
        "Resumable: a rerun with the same -o synthesizes only what is missing.",
    )
    p.add_argument(
        "design",
        help="zoo:NAME, a QONNX .onnx file, a network spec .json (estimate.designs), or a "
        "block family (systolic, mvu, ...) with --space",
    )
    p.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="blocks: the values to explore of one parameter (repeat for each explored parameter)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="blocks: a fixed parameter (the others keep their defaults)",
    )
    p.add_argument(
        "--workload",
        metavar="K=V,...",
        help="blocks: the workload that throughput and latency are measured on (systolic/bitserial: "
        "m,k,n = 64; sparse: k,pattern,rows,vectors; attention: seq; softmax: n; streaming blocks: "
        "frames)",
    )
    p.add_argument("--target", default="ecp5", help="ice40, ecp5 (default), xilinx, xilinx-us, xilinx-usp")
    p.add_argument(
        "--objectives",
        default="lut,throughput",
        help="two or more of " + ", ".join(OBJECTIVES) + " (default lut,throughput)",
    )
    p.add_argument("--budget", help="resource limits, e.g. lut=20000,dsp=0 (estimated, then checked on measured)")
    p.add_argument("--fps-min", type=float, help="lowest acceptable inferences per second at --clock-mhz")
    p.add_argument("--clock-mhz", type=float, default=100.0, help="clock for throughput (default 100)")
    p.add_argument(
        "--margin",
        type=float,
        default=2.0,
        help="uncertainty margin in standard deviations of log error (default 2; 0 keeps only the estimated front)",
    )
    p.add_argument(
        "--max-points",
        type=int,
        default=DEFAULT_MAX_POINTS,
        help=f"enumerate spaces up to this size, else score this many (default {DEFAULT_MAX_POINTS})",
    )
    p.add_argument(
        "--max-verify",
        type=int,
        default=DEFAULT_MAX_VERIFY,
        help=f"synthesize at most this many points (default {DEFAULT_MAX_VERIFY})",
    )
    p.add_argument(
        "--verify-all", action="store_true", help="synthesize every candidate (small spaces: the true front)"
    )
    p.add_argument(
        "--search",
        choices=("random", "nsga2"),
        default="random",
        help="spaces larger than --max-points: a uniform random sample (default) or Optuna's NSGA-II",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    p.add_argument("--ray", metavar="ADDRESS", help="run synthesis on Ray (ADDRESS for ray.init; 'local' starts one)")
    p.add_argument("--timeout", type=float, default=1800, help="per tool run, seconds (default 1800)")
    p.add_argument(
        "--dataset",
        type=Path,
        help="also append the verified rows to this dataset (.jsonl.gz) for `hardwire dataset train`",
    )
    p.add_argument("--weights", type=Path, help="surrogate weights (default: the shipped ones)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (its work/ keeps the rows)")
    return {"explore": cmd_explore}


def cmd_explore(args) -> int:
    from hardwire.api import explore

    result = explore(
        args.design,
        out=args.out,
        target=args.target,
        objectives=args.objectives,
        budget=args.budget,
        fps_min=args.fps_min,
        clock_mhz=args.clock_mhz,
        margin=args.margin,
        max_points=args.max_points,
        max_verify=args.max_verify,
        verify_all=args.verify_all,
        search=args.search,
        seed=args.seed,
        workers=args.workers,
        ray=args.ray,
        timeout_s=args.timeout,
        dataset=args.dataset,
        weights=args.weights,
        space=args.space,
        params=args.param,
        workload=args.workload,
    )
    print(markdown(result.report))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Report


def estimate_error(points: list[Point], objectives) -> dict:
    """Per estimated quantity over the verified points: median and max |estimate - measured| / measured."""
    out = {}
    for name in ("lut", "ff", "dsp", "bram", "lutram", "fmax"):
        errors = []
        for p in points:
            if not p.measured or name not in p.measured:
                continue
            measured, estimate = p.measured[name], p.estimate.get(name)
            if estimate is None or measured == 0:
                continue
            errors.append(abs(estimate - measured) / measured)
        if errors:
            errors.sort()
            out[name] = {
                "points": len(errors),
                "median_relative_error": round(errors[len(errors) // 2], 4),
                "max_relative_error": round(errors[-1], 4),
            }
    return out


def report_dict(result: ExploreResult, design: str) -> dict:
    objectives = result.objectives
    verified = [p for p in result.kept if p.measured]
    est_front = {p.key for p in result.estimated_front}
    ver_front = {p.key for p in result.verified_front}
    chosen = result.chosen
    return {
        "design": design,
        "network": result.source.name,
        "kind": result.source.kind,
        "axes": result.source.axis_label,
        "target": result.target,
        "objectives": list(objectives),
        "senses": {o: "max" if OBJECTIVES[o][0] > 0 else "min" for o in objectives},
        "budget": result.budget,
        "fps_min": result.fps_min,
        "clock_mhz": result.clock_mhz,
        "space": {
            "size": result.space_size,
            "enumerated": result.enumerated,
            "scored": len(result.points),
            "method": result.stats["method"],
        },
        "counts": {
            "feasible": len(result.feasible),
            "estimated_front": len(result.estimated_front),
            "verified": len(verified),
            "kept_for_verification": len(result.kept),
            "verified_front": len(result.verified_front),
            "over_budget_measured": len(result.over_budget),
        },
        "stats": result.stats,
        "estimate_vs_measured": estimate_error(verified, objectives),
        "estimated_front_found": {
            "on_verified_front": len(est_front & ver_front),
            "verified_front_points_not_on_estimated_front": len(ver_front - est_front),
        },
        "verified_front": [
            {**p.to_dict(), "described": result.source.describe(p.folds)} for p in result.verified_front
        ],
        "chosen": None
        if chosen is None
        else {
            **chosen.to_dict(),
            "rule": "knee: nearest the ideal point, objectives scaled over the front",
            "command": result.source.compile_command(chosen.folds, result.target, result.clock_mhz),
        },
        "points": [
            {
                **p.to_dict(),
                "estimated_front": p.key in est_front,
                "verified_front": p.key in ver_front,
            }
            for p in result.kept
        ],
        "all_estimates": [{"folds": p.folds, "estimate": p.estimate} for p in result.points],
    }


def _fmt(value: float) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.3g}"


def markdown(report: dict) -> str:
    objectives = report["objectives"]
    lines = [
        f"# hardwire explore: {report['design']} on {report['target']}",
        "",
        "Objectives: " + ", ".join(f"{o} ({s})" for o, s in report["senses"].items()) + "; throughput at "
        f"{report['clock_mhz']:g} MHz."
        + (
            " Budget: " + ", ".join(f"{k} <= {v:g}" for k, v in report["budget"].items()) + "."
            if report["budget"]
            else ""
        )
        + (f" At least {report['fps_min']:g} inferences/s." if report["fps_min"] else ""),
        "",
        f"Space: {report['space']['size']:,} foldings, {report['space']['scored']:,} scored "
        f"({report['space']['method']}); {report['counts']['feasible']:,} within the constraints; "
        f"estimated front {report['counts']['estimated_front']} points; "
        f"{report['counts']['kept_for_verification']} kept with the uncertainty margin and verified "
        f"({report['stats']['synthesized']} synthesized in this run, {report['stats']['reused']} from an "
        f"earlier one, {report['stats']['failed']} failed). Wall time {report['stats']['wall_seconds']:.0f} s "
        f"(scoring {report['stats']['score_seconds']:.1f} s).",
        "",
        "## Verified Pareto front (measured: yosys" + (", nextpnr" if "fmax" in objectives else "") + ")",
        "",
        f"| {report['axes']} | " + " | ".join(f"{o} measured | {o} estimated" for o in objectives) + " |",
        "|---|" + "---|---|" * len(objectives),
    ]
    for p in report["verified_front"]:
        folds = p["described"]
        lines.append(
            f"| {folds} | "
            + " | ".join(f"{_fmt(p['measured'][o])} | {_fmt(p['estimate'][o])}" for o in objectives)
            + " |"
        )
    lines += ["", "## Estimate against measurement (verified points)", ""]
    for name, e in report["estimate_vs_measured"].items():
        lines.append(
            f"- {name}: median |error| {100 * e['median_relative_error']:.0f}%, max "
            f"{100 * e['max_relative_error']:.0f}% over {e['points']} points"
        )
    found = report["estimated_front_found"]
    lines.append(
        f"- {found['on_verified_front']} estimated-front points are on the verified front; "
        f"{found['verified_front_points_not_on_estimated_front']} verified-front points were found only "
        "through the margin"
    )
    chosen = report["chosen"]
    lines += ["", "## Chosen design", ""]
    if chosen is None:
        lines.append("No verified point within the constraints.")
    else:
        values = ", ".join(f"{o} {_fmt(chosen['measured'][o])}" for o in objectives)
        lines.append(f"The knee of the verified front: {values}.")
        if chosen["command"]:
            lines += ["", "```", chosen["command"], "```"]
    lines += ["", "![Pareto front](pareto.png)", ""]
    return "\n".join(lines)


def plot(result: ExploreResult, path: Path) -> None:
    """The first two objectives: every estimate, the kept points' estimates and their measurements, and the
    verified front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = result.objectives[:2]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    ax.scatter(
        [p.estimate[x] for p in result.points],
        [p.estimate[y] for p in result.points],
        s=6,
        c="0.75",
        label=f"estimated ({len(result.points)} scored)",
    )
    kept = [p for p in result.kept if p.measured]
    ax.scatter(
        [p.estimate[x] for p in kept],
        [p.estimate[y] for p in kept],
        s=22,
        marker="o",
        facecolors="none",
        edgecolors="tab:blue",
        label="estimated (verified points)",
    )
    ax.scatter(
        [p.measured[x] for p in kept], [p.measured[y] for p in kept], s=22, marker="x", c="tab:orange", label="measured"
    )
    for p in kept:
        ax.plot([p.estimate[x], p.measured[x]], [p.estimate[y], p.measured[y]], c="0.6", lw=0.5)
    front = sorted(result.verified_front, key=lambda p: p.measured[x])
    ax.plot(
        [p.measured[x] for p in front], [p.measured[y] for p in front], "-o", c="tab:red", ms=4, label="verified front"
    )
    for axis, name, setter in ((ax.xaxis, x, ax.set_xscale), (ax.yaxis, y, ax.set_yscale)):
        values = [p.estimate[name] for p in result.points if p.estimate[name] > 0]
        if values and max(values) / max(min(values), 1e-9) > 30:
            setter("log")
    ax.set_xlabel(f"{x} ({OBJECTIVES[x][1]})")
    ax.set_ylabel(f"{y} ({OBJECTIVES[y][1]})")
    ax.set_title(f"{result.source.name} on {result.target}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def write_report(result: ExploreResult, out: Path, design: str) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = report_dict(result, design)
    for name, text in (
        ("report.json", json.dumps(report, indent=2, default=_json_default) + "\n"),
        ("report.md", markdown(report)),
    ):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    plot(result, out / "pareto.png")
    return report


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(type(value).__name__)
