"""`hardwire dataset generate|train|info` and `hardwire estimate`: the command-line side of estimation."""

from __future__ import annotations

import json
import math

from pathlib import Path

from hardwire.errors import ParameterError

DATA = Path(__file__).parent / "data"


def shipped_datasets() -> list[Path]:
    """The dataset files that ship with hardwire: one per split (small, large, real)."""
    return sorted(DATA.glob("*.jsonl.gz"))


def add_parsers(sub) -> dict:
    dataset = sub.add_parser(
        "dataset",
        help="the synthesis dataset behind the estimators: generate, train, info",
        description="Generate rows of (design, target) -> yosys resources (+ nextpnr Fmax), "
        "train the surrogates on them, or summarize a dataset.",
    )
    actions = dataset.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", help="synthesize random designs and append their rows (resumable)")
    gen.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        help="dataset file, .jsonl.gz (default: the shipped one of the split, estimate/data/SIZE.jsonl.gz)",
    )
    gen.add_argument(
        "--size",
        default="small",
        help="small (training distribution), large (deeper and wider "
        "networks: the generalization split) or real (zoo networks)",
    )
    gen.add_argument(
        "--designs",
        type=int,
        default=100,
        help="designs drawn from the seed (default 100); a rerun with the same seed resumes and adds only missing rows",
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--specs",
        type=Path,
        help="a JSON list of design specs to synthesize instead of random ones (the 'spec' field of dataset rows)",
    )
    gen.add_argument("--targets", default="ecp5,xilinx", help="comma-separated yosys targets (default ecp5,xilinx)")
    gen.add_argument(
        "--fmax-share",
        type=float,
        default=0.3,
        help="share of designs also placed and routed on the ECP5-85F for Fmax (default 0.3, as the shipped dataset was made)",
    )
    gen.add_argument("--stages", default="synth,fmax", help="synth (yosys rows), fmax (nextpnr rows) or both")
    gen.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    gen.add_argument(
        "--ray", metavar="ADDRESS", help="run on a Ray cluster (ADDRESS for ray.init; 'local' starts one here)"
    )
    gen.add_argument("--timeout", type=float, default=1800, help="per tool run, seconds (default 1800)")

    train = actions.add_parser("train", help="train the GNN and boosted-tree surrogates on a dataset")
    train.add_argument("datasets", type=Path, nargs="*", help="dataset files (default: the shipped ones)")
    train.add_argument("-o", "--out", type=Path, default=None, help="weights file (default: the shipped one)")
    train.add_argument(
        "--wa-hls4ml",
        type=Path,
        action="append",
        metavar="FILE",
        help="also train on wa-hls4ml's published records (.json/.jsonl[.gz]; repeatable)",
    )
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--ensemble", type=int, default=None)
    train.add_argument("--seed", type=int, default=0)

    merge = actions.add_parser(
        "merge",
        help="append to OUT the rows of other dataset files that OUT lacks (datasets "
        "made on several machines without Ray)",
    )
    merge.add_argument("out", type=Path, help="dataset file to extend (created if missing)")
    merge.add_argument("sources", type=Path, nargs="+", help="dataset files whose new rows are appended")

    info = actions.add_parser("info", help="rows, targets, splits and errors of a dataset")
    info.add_argument("datasets", type=Path, nargs="*", help="dataset files (default: the shipped ones)")
    return {"dataset": cmd_dataset, **add_estimate_parser(sub)}


def cmd_dataset(args) -> int:
    if args.action == "generate":
        from .dataset import generate

        require_positive("designs", args.designs)
        if not 0 <= args.fmax_share <= 1:
            raise ParameterError("fmax-share", args.fmax_share, "0..1")
        targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
        specs = None
        if args.specs is not None:
            specs = _read_specs(args.specs)
        summary = generate(
            args.out or DATA / f"{args.size}.jsonl.gz",
            size=args.size,
            count=args.designs,
            seed=args.seed,
            targets=targets,
            fmax_share=args.fmax_share,
            stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
            workers=args.workers,
            ray_address=args.ray,
            timeout_s=args.timeout,
            specs=specs,
        )
        print(
            f"{summary['path']}: {summary['rows']} rows added ({summary['errors']} with errors) "
            f"from {summary['designs']} designs"
            + (
                f"; {summary['crashed']} tool crashes not stored (run again to retry them)"
                if summary["crashed"]
                else ""
            )
        )
        return 0
    if args.action == "info":
        from .dataset import RowStore

        for path in args.datasets or shipped_datasets():
            print(summarize(path, RowStore(_existing(path)).rows()))
        return 0
    if args.action == "merge":
        from .dataset import merge

        added = merge(args.out, [_existing(p) for p in args.sources])
        print(f"{args.out}: {added} rows added from {len(args.sources)} file(s)")
        return 0
    if args.action == "train":
        from .train import train_command

        return train_command(args)
    raise AssertionError(args.action)


def _read_specs(path: Path) -> list[dict]:
    import json

    try:
        specs = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ParameterError("specs", str(path), f"a readable JSON list of design specs ({error})") from None
    if not isinstance(specs, list) or not all(
        isinstance(s, dict) and s.get("kind") in ("block", "network", "model") for s in specs
    ):
        raise ParameterError("specs", str(path), "a JSON list of objects with kind block, network or model")
    return specs


def summarize(path, rows) -> str:
    from collections import Counter

    by = Counter((row.get("split"), row.get("target")) for row in rows)
    errors = sum(row.get("error") is not None for row in rows)
    fmax = sum(row.get("fmax_mhz") is not None for row in rows)
    lines = [f"{path}: {len(rows)} rows, {errors} with errors, {fmax} with Fmax"]
    lines += [f"  {split:6} {target:10} {n}" for (split, target), n in sorted(by.items(), key=str)]
    return "\n".join(lines)


def require_positive(name: str, value: int) -> None:
    if value < 1:
        raise ParameterError(name, value, ">= 1")


def _existing(path: Path) -> Path:
    if not Path(path).is_file():
        raise ParameterError("dataset", str(path), "an existing .jsonl.gz file")
    return Path(path)


# ---------------------------------------------------------------------------------------------------------------
# hardwire estimate


def add_estimate_parser(sub) -> dict:
    est = sub.add_parser(
        "estimate",
        help="estimated LUT/FF/DSP/BRAM and Fmax of a network or block in milliseconds (surrogates)",
        description="Estimate a design's resources and Fmax with the trained surrogates (no synthesis), with "
        "their uncertainty; latency and initiation interval come exactly from the schedule models. "
        "DESIGN is zoo:NAME, a QONNX .onnx file, or a block name with --param NAME=VALUE.",
    )
    est.add_argument("design", help="zoo:NAME, MODEL.onnx, or a block name (systolic, mvu, ...)")
    est.add_argument("--target", default="ecp5", help="ice40, ecp5, xilinx, xilinx-us, xilinx-usp (default ecp5)")
    speed = est.add_mutually_exclusive_group()
    speed.add_argument("--fps", type=float, help="networks: the folding that meets this throughput at --clock-mhz")
    speed.add_argument("--fold", action="append", metavar="LAYER=PE,SIMD", help="networks: explicit folding")
    est.add_argument("--clock-mhz", type=float, default=100.0)
    est.add_argument("--param", action="append", metavar="NAME=VALUE", default=[], help="blocks: a parameter")
    est.add_argument(
        "--model",
        choices=("auto", "gnn", "trees"),
        default="auto",
        help="auto (default: per label the surrogate that was better on validation designs), gnn, trees",
    )
    est.add_argument("--weights", type=Path, help="surrogate weights (default: the shipped ones)")
    est.add_argument("--json", type=Path, help="also write the estimate as JSON")
    return {"estimate": cmd_estimate}


def block_params(block, texts):
    """`--param name=value` strings -> the block's parameter dataclass (values typed by its fields); a dict
    (the Python API's keyword arguments) is taken as typed values."""
    if isinstance(texts, dict):
        from hardwire.api import block_params as from_values

        return from_values(block, texts)
    return block.params(**typed_params(block, texts))


def typed_params(block, texts: list[str]) -> dict:
    """`--param name=value` strings -> {name: value} typed by the block's parameter fields (not yet validated)."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(block.params)}
    values = {}
    for text in texts:
        name, sep, value = text.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            raise ParameterError("param", text, f"NAME=VALUE with NAME one of {', '.join(fields)}")
        default = fields[name].default
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ParameterError(name, value, "true or false")
            values[name] = value.lower() in ("true", "1")
        elif isinstance(default, int) or str(fields[name].type).startswith("int"):
            try:
                values[name] = int(value)
            except ValueError:
                raise ParameterError(name, value, "an integer") from None
        else:
            values[name] = value
    return values


def design_graph_for(design: str, *, fps=None, folds=None, clock_mhz=100.0, params=()):
    """The DesignGraph of what the user named: a zoo network, an .onnx file, or a block."""
    from hardwire.gen import registry

    from .features import block_graph, network_graph

    if not design.startswith("zoo:") and not design.endswith(".onnx"):
        known = registry.blocks()
        if design not in known:
            raise ParameterError("design", design, f"zoo:NAME, a .onnx file, or a block ({', '.join(known)})")
        return block_graph(design, block_params(known[design], params if isinstance(params, dict) else list(params)))
    from hardwire.hls import rtl

    from .dataset import load_network

    graph = load_network(design)
    folding = rtl.solve_folding(graph, fps=fps, clock_mhz=clock_mhz, folds=folds)
    return network_graph(rtl.plan_dataflow(graph, folding), graph.name)


def cmd_estimate(args) -> int:
    from hardwire.api import estimate

    result = estimate(
        args.design,
        args.param,
        target=args.target,
        fps=args.fps,
        folds=args.fold,
        clock_mhz=args.clock_mhz,
        model=args.model,
        weights=args.weights,
    )
    print(result.text)
    if args.json:
        args.json.write_text(json.dumps(result.report, indent=2) + "\n")
    return 0


def _pm(value: float, spread: float) -> str:
    """`value ±x%`: the ensemble's spread of log values as a relative uncertainty."""
    return f"{value:,.0f} ±{100 * (math.exp(spread) - 1):.0f}%"


def format_estimate(graph, estimate, seconds: float) -> str:
    from .models import LABELS

    r, s = estimate.resources, estimate.spread
    lines = [
        f"{graph.name} on {estimate.target}: ESTIMATE by the {estimate.model} surrogate(s) "
        f"({seconds * 1000:.1f} ms; uncertainty: one standard deviation in log terms, the ensemble's spread "
        "combined with the model's validation error)"
    ]
    if estimate.per_node:
        lines.append(f"  {'unit':24} {'op':8} " + " ".join(f"{label.upper():>8}" for label in LABELS))
        for unit in estimate.per_node:
            lines.append(
                f"  {unit['name'][:24]:24} {unit['op']:8} " + " ".join(f"{unit[label]:8.0f}" for label in LABELS)
            )
    lines.append("  total: " + ", ".join(f"{label.upper()} {_pm(r[label], s[label])}" for label in LABELS))
    if estimate.by_rule:
        lines.append(
            f"  {', '.join(label.upper() for label in estimate.by_rule)}: by rule (DSP: the generators' "
            "multiplier rule; BRAM: yosys' memory mapping of each memory), exact on the training networks, "
            "not learned"
        )
    if estimate.fmax_mhz is not None:
        lines.append(
            f"  Fmax (ECP5-85F, nextpnr-equivalent): {estimate.fmax_mhz:.0f} MHz "
            f"±{100 * (math.exp(estimate.fmax_spread) - 1):.0f}%"
            + ("" if estimate.target == "ecp5" else " (the Fmax model is trained on ECP5 only)")
        )
    if estimate.exact:
        lines.append("  exact (schedule model): " + ", ".join(f"{k} {v:,}" for k, v in estimate.exact.items()))
    if estimate.unknown_features:
        lines.append(
            f"  note: the surrogate never saw {', '.join(estimate.unknown_features[:6])}: expect a larger error"
        )
    return "\n".join(lines)
