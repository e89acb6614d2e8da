"""`hardwire dataset generate|train|info` and `hardwire estimate`: the command-line side of estimation."""

from __future__ import annotations

from pathlib import Path

from hardwire.errors import ParameterError

DEFAULT_DATASET = Path(__file__).parent / "data" / "dataset.jsonl.gz"


def add_parsers(sub) -> dict:
    dataset = sub.add_parser("dataset", help="the synthesis dataset behind the estimators: generate, train, info",
                             description="Generate rows of (design, target) -> yosys resources (+ nextpnr Fmax), "
                                         "train the surrogates on them, or summarize a dataset.")
    actions = dataset.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", help="synthesize random designs and append their rows (resumable)")
    gen.add_argument("-o", "--out", type=Path, default=DEFAULT_DATASET,
                     help=f"dataset file, .jsonl.gz (default: the shipped one, {DEFAULT_DATASET.name})")
    gen.add_argument("--size", default="small", help="small (training distribution), large (deeper and wider "
                                                     "networks: the generalization split) or real (zoo networks)")
    gen.add_argument("--designs", type=int, default=100, help="designs drawn from the seed (default 100); a rerun "
                                                                "with the same seed resumes and adds only missing rows")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--targets", default="ecp5,xilinx", help="comma-separated yosys targets (default ecp5,xilinx)")
    gen.add_argument("--fmax-share", type=float, default=0.15,
                     help="share of designs also placed and routed on the ECP5-85F for Fmax (default 0.15)")
    gen.add_argument("--stages", default="synth,fmax", help="synth (yosys rows), fmax (nextpnr rows) or both")
    gen.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    gen.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster (ADDRESS for ray.init; 'local' starts one here)")
    gen.add_argument("--timeout", type=float, default=1800, help="per tool run, seconds (default 1800)")

    train = actions.add_parser("train", help="train the GNN and boosted-tree surrogates on a dataset")
    train.add_argument("datasets", type=Path, nargs="*", default=[DEFAULT_DATASET])
    train.add_argument("-o", "--out", type=Path, default=None, help="weights file (default: the shipped one)")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--ensemble", type=int, default=None)
    train.add_argument("--seed", type=int, default=0)

    info = actions.add_parser("info", help="rows, targets, splits and errors of a dataset")
    info.add_argument("datasets", type=Path, nargs="*", default=[DEFAULT_DATASET])
    return {"dataset": cmd_dataset}


def cmd_dataset(args) -> int:
    if args.action == "generate":
        from .dataset import generate

        require_positive("designs", args.designs)
        if not 0 <= args.fmax_share <= 1:
            raise ParameterError("fmax-share", args.fmax_share, "0..1")
        targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
        summary = generate(args.out, size=args.size, count=args.designs, seed=args.seed, targets=targets,
                           fmax_share=args.fmax_share,
                           stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()), workers=args.workers, ray_address=args.ray,
                           timeout_s=args.timeout)
        print(f"{summary['path']}: {summary['rows']} rows added ({summary['errors']} with errors) "
              f"from {summary['designs']} designs")
        return 0
    if args.action == "info":
        from .dataset import RowStore

        for path in args.datasets:
            print(summarize(path, RowStore(_existing(path)).rows()))
        return 0
    if args.action == "train":
        from .train import train_command

        return train_command(args)
    raise AssertionError(args.action)


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

