"""The synthesis dataset: designs drawn at random (estimate.designs), synthesized for real with yosys (and
placed and routed with nextpnr for Fmax on a share of them), one row per (design, target).

Storage is append-only gzip'd JSON lines: each finished design appends one gzip member holding its rows and
is flushed to disk before the next is counted, so a killed run loses at most the designs still running and
the next run resumes after the last finished one (`keys()` says which rows exist; a torn last member is
cut off on open). A design whose generation or synthesis fails is recorded with its error, never dropped.

Row: key (`<design hash>:<target>` for yosys rows, `<design hash>:fmax-ecp5` for nextpnr rows), design_hash,
stage (synth or fmax), target, split, spec (rebuilds the design), design (its features.DesignGraph), labels (lut,
ff, dsp, bram, lutram, as flows.synth counts them) or fmax_mhz (ECP5-85F, the core in the serial-I/O wrapper; for
the hash-selected share of designs, see designs.wants_fmax), error, seconds, versions.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
import zlib
from pathlib import Path

from hardwire.cache import cache_root, digest
from hardwire.errors import HardwireError, ParameterError, ToolError

from . import designs
from .features import FEATURE_VERSION, DesignGraph, block_graph, network_graph

LABELS = ("lut", "ff", "dsp", "bram", "lutram")
DEFAULT_TARGETS = ("ecp5", "xilinx")
DATASET_TARGETS = ("ice40", "ecp5", "xilinx", "xilinx-us", "xilinx-usp")
FMAX_DEVICE = "85k"  # the ECP5-85F, as `hardwire synth --pnr` and the demo use


# ---------------------------------------------------------------------------------------------------------------
# The store


class RowStore:
    """An append-only .jsonl.gz file of rows (a plain .jsonl too). Safe against a kill at any point."""

    def __init__(self, path):
        self.path = Path(path)
        self.compressed = self.path.name.endswith(".gz")
        self._repair()

    def _repair(self) -> None:
        """Cut a torn tail (a member or line that a killed run left half-written) off the file."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = _complete_prefix(data, self.compressed)
        if good < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good)

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        opener = gzip.open if self.compressed else open
        with opener(self.path, "rt") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def keys(self) -> set[str]:
        return {row["key"] for row in self.rows()}

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
        payload = gzip.compress(text, mtime=0) if self.compressed else text
        with open(self.path, "ab") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())


def merge(out, sources) -> int:
    """Append to `out` every row of `sources` whose key `out` lacks, in order; return how many. A key already in
    `out` keeps its row there: rows are never rewritten, so a merge is as safe against a kill as a run."""
    store = RowStore(out)
    have = store.keys()
    added = []
    for source in sources:
        for row in RowStore(source).rows():
            if row["key"] not in have:
                have.add(row["key"])
                added.append(row)
    store.append(added)
    return len(added)


def _complete_prefix(data: bytes, compressed: bool) -> int:
    """Length of the longest prefix made only of complete gzip members (or complete lines)."""
    if not compressed:
        end = data.rfind(b"\n")
        return end + 1
    offset = 0
    while offset < len(data):
        decompressor = zlib.decompressobj(wbits=31)
        try:
            decompressor.decompress(data[offset:])
        except zlib.error:
            break
        if not decompressor.eof:
            break
        offset = len(data) - len(decompressor.unused_data)
    return offset


def dataset_hash(rows: list[dict]) -> str:
    """What a set of rows is: the hash of their sorted keys and labels (a trained model records it)."""
    return digest("dataset", sorted((row["key"], row.get("labels"), row.get("fmax_mhz")) for row in rows))


# ---------------------------------------------------------------------------------------------------------------
# One design: generate, describe, synthesize


def design_verilog(spec: dict) -> tuple[str, Path, DesignGraph]:
    """(top, Verilog file, design graph) of a spec: a random network, a gen/ block, or a network compiled from
    a QONNX model (`kind: model`, the real-network split). Generation is deterministic, so its output is
    cached under `cache_root()/designs/<design hash>` like every other build step (and a machine that only
    synthesizes can be handed that folder instead of the generators)."""
    h = designs.design_hash(spec)
    final = cache_root() / "designs" / h

    def build(tmp: Path) -> None:
        top, text, graph = _generate(spec)
        (tmp / "design.v").write_text(text)
        (tmp / "design.json").write_text(json.dumps({"top": top, "graph": graph.to_dict()}) + "\n")

    from hardwire.flows.tools import build_once

    build_once(final, lambda d: (d / "design.json").is_file(), build)
    meta = json.loads((final / "design.json").read_text())
    return meta["top"], final / "design.v", DesignGraph.from_dict(meta["graph"])


def _generate(spec: dict) -> tuple[str, str, DesignGraph]:
    from hardwire.gen.registry import to_verilog as block_verilog
    from hardwire.hls import rtl

    if spec["kind"] == "block":
        block, params = designs.build_block(spec)
        top, text, _ = block_verilog(block, params)
        return top, text, block_graph(spec["block"], params)
    plan, name = _network_plan(spec)
    return plan.top_name, rtl.to_verilog(plan), network_graph(plan, name)


def _network_plan(spec: dict):
    from hardwire.hls import rtl

    if spec["kind"] == "network":
        graph, folding = designs.build_network(spec)
    elif spec["kind"] == "model":
        graph, folding = model_network(spec)
    else:
        raise ValueError(f"unknown design kind {spec['kind']!r}")
    return rtl.plan_dataflow(graph, folding, name=f"net_{designs.design_hash(spec)}"), graph.name


def design_graph(spec: dict) -> DesignGraph:
    """The features of a spec's design, without generating its Verilog (what `_generate` records)."""
    if spec["kind"] == "block":
        block, params = designs.build_block(spec)
        return block_graph(spec["block"], params)
    plan, name = _network_plan(spec)
    return network_graph(plan, name)


def refresh_features(rows: list[dict]) -> int:
    """Rows recorded with an older FEATURE_VERSION get their design graph rebuilt from their spec (the designs are
    deterministic; nothing is synthesized and the stored file is not rewritten), so that training, the benchmark
    and `hardwire estimate` read the same features. Returns how many were rebuilt; a row whose spec cannot be
    rebuilt keeps its stored graph (its memories then come from its parameters alone)."""
    graphs: dict[str, dict] = {}
    count = 0
    for row in rows:
        design = row.get("design")
        if not design or design.get("feature_version") == FEATURE_VERSION or not isinstance(row.get("spec"), dict):
            continue
        key = row["design_hash"]
        if key not in graphs:
            try:
                graphs[key] = design_graph(row["spec"]).to_dict()
            except (HardwireError, ValueError, KeyError, OSError):
                graphs[key] = None
        if graphs[key] is not None:
            row["design"] = graphs[key]
            count += 1
    return count


def load_network(source: str):
    """The integer layer graph of zoo:NAME (trained on first use) or a QONNX .onnx file, named after it."""
    from hardwire.hls import frontend, zoo

    path = zoo.build(source[4:]).onnx_path if source.startswith("zoo:") else Path(source)
    return frontend.build_graph(frontend.load_model(path), name=Path(str(source).replace(":", "_")).stem)


def model_network(spec: dict):
    """(IntGraph, FoldingResult) of a real network: `model` is zoo:NAME or an .onnx path, `folds` explicit."""
    from hardwire.hls.rtl import solve_folding

    graph = load_network(spec["model"])
    matvec = [layer.name for layer in graph.layers if hasattr(layer, "weights")]
    return graph, solve_folding(graph, folds={matvec[int(k)]: tuple(v) for k, v in spec.get("folds", {}).items()})


def fmax_key(spec_hash: str) -> str:
    return f"{spec_hash}:fmax-ecp5"


def synthesize_design(
    spec: dict,
    targets: tuple[str, ...],
    split: str,
    fmax: bool,
    stages: tuple[str, ...],
    skip: tuple[str, ...] = (),
    timeout_s: float = 1800,
) -> list[dict]:
    """The rows of one design not in `skip`: one per target (stage "synth": yosys labels or the error that
    prevented them) and, with `fmax`, one "fmax" row (nextpnr on the ECP5-85F, the core in the serial-I/O
    wrapper as `hardwire synth --pnr` measures it)."""
    from hardwire.flows.fmax import wrapped_fmax
    from hardwire.flows.synth import synth
    from hardwire.flows.tools import tool_version

    h = designs.design_hash(spec)
    base = {"design_hash": h, "split": split, "spec": spec, "feature_version": FEATURE_VERSION}
    wanted = [(f"{h}:{t}", "synth", t) for t in targets if "synth" in stages]
    if fmax and "fmax" in stages:
        wanted.append((fmax_key(h), "fmax", "ecp5"))
    wanted = [w for w in wanted if w[0] not in skip]
    started = time.monotonic()
    try:
        top, source, graph = design_verilog(spec)
    except (HardwireError, ValueError) as error:
        message = f"generation failed: {type(error).__name__}: {str(error).splitlines()[0]}"
        return [
            {
                **base,
                "key": key,
                "stage": stage,
                "target": t,
                "design": None,
                "labels": None,
                "fmax_mhz": None,
                "error": message,
                "seconds": {},
            }
            for key, stage, t in wanted
        ]
    generate_s = time.monotonic() - started
    rows = []
    for key, stage, target in wanted:
        row = {
            **base,
            "key": key,
            "stage": stage,
            "target": target,
            "design": graph.to_dict(),
            "labels": None,
            "fmax_mhz": None,
            "error": None,
            "seconds": {"generate": round(generate_s, 3)},
        }
        t0 = time.monotonic()
        try:
            if stage == "synth":
                report = synth([source], top, target, timeout_s=timeout_s)
                row["labels"] = {label: getattr(report, label) for label in LABELS}
                row["synth_note"] = report.note
                row["versions"] = {"yosys": tool_version("yosys")}
            else:
                row["fmax_mhz"] = wrapped_fmax([source], top, "ecp5", device=FMAX_DEVICE, timeout_s=timeout_s).fmax_mhz
                row["versions"] = {"yosys": tool_version("yosys"), "nextpnr": tool_version("nextpnr-ecp5")}
        except ToolError as error:
            row["error"] = f"{'synthesis' if stage == 'synth' else 'place and route'} failed: {error.reason}"
            # A tool killed by a signal it did not get from us (our timeout is "timed out") crashed for a reason of
            # the machine -- out of memory, a cache file rewritten under it -- not of the design: the row is not
            # stored, so the next run tries the design again.
            row["crashed"] = error.reason.startswith("was killed by signal")
        row["seconds"][stage] = round(time.monotonic() - t0, 3)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# A run


def real_network_specs() -> list[dict]:
    """The zoo networks at several foldings: the real-network test split (never trained on). Folds are given
    per matrix-vector layer in network order ("0", "1", ...), PE and SIMD."""
    folds = {
        "zoo:mlp4": [{}, {"0": (4, 8)}, {"0": (8, 16), "1": (4, 16), "2": (2, 16)}, {"0": (16, 64), "1": (8, 32)}],
        "zoo:mlp2": [{}, {"0": (8, 16), "1": (4, 16)}, {"0": (16, 32), "1": (8, 16), "2": (2, 8)}],
        "zoo:cnn4": [{}, {"0": (2, 1), "1": (4, 8)}, {"0": (8, 1), "1": (8, 8), "2": (2, 16)}],
    }
    return [
        {"kind": "model", "model": model, "folds": {k: list(v) for k, v in fold.items()}}
        for model, options in folds.items()
        for fold in options
    ]


def run_specs(size: str, count: int, seed: int) -> list[dict]:
    if size == "real":
        return real_network_specs()
    if size not in designs.NETWORK_SIZES:
        raise ParameterError("size", size, "small, large or real")
    return designs.sample_designs(seed, count, size=size)


def generate(
    path,
    *,
    size: str = "small",
    count: int = 100,
    seed: int = 0,
    targets=DEFAULT_TARGETS,
    fmax_share: float = 0.3,
    stages=("synth", "fmax"),
    workers: int | None = None,
    ray_address: str | None = None,
    timeout_s: float = 1800,
    specs: list[dict] | None = None,
) -> dict:
    """Synthesize the designs of (size, count, seed) -- or the given `specs` -- whose rows are not yet in `path`;
    append each design's rows as it finishes. Real networks are always placed and routed (fmax share 1)."""
    from hardwire.flows.tools import tool_version
    from hardwire.jobs import run_jobs

    targets = tuple(targets)
    for target in targets:
        if target not in DATASET_TARGETS:
            raise ParameterError("target", target, "one of " + ", ".join(DATASET_TARGETS))
    for stage in stages:
        if stage not in ("synth", "fmax"):
            raise ParameterError("stages", stage, "synth, fmax")
    store = RowStore(path)
    have = store.keys()
    specs = run_specs(size, count, seed) if specs is None else specs
    share = 1.0 if size == "real" else fmax_share
    jobs = {}
    for spec in specs:
        h = designs.design_hash(spec)
        fmax = designs.wants_fmax(h, share)
        wanted = [f"{h}:{t}" for t in targets if "synth" in stages] + (
            [fmax_key(h)] if fmax and "fmax" in stages else []
        )
        if any(key not in have for key in wanted):
            jobs[h] = (
                synthesize_design,
                spec,
                targets,
                size,
                fmax,
                tuple(stages),
                tuple(k for k in wanted if k in have),
                timeout_s,
            )
    distinct = len({designs.design_hash(spec) for spec in specs})
    print(
        f"dataset {store.path}: {distinct - len(jobs)} of {distinct} designs complete, {len(jobs)} to run "
        f"({', '.join(stages)}; {', '.join(targets)})",
        file=sys.stderr,
        flush=True,
    )
    counts = {"rows": 0, "errors": 0, "crashed": 0}
    if jobs:
        # Each yowasp tool compiles its WebAssembly into a cache on its first call; done here once, before the
        # workers start, so that they do not race on that cache (a file rewritten under a process that maps it
        # kills that process with SIGBUS). A missing tool also stops the run here, with its install hint.
        tool_version("yosys")
        if "fmax" in stages and share > 0:
            tool_version("nextpnr-ecp5")

    def save(key, rows) -> str:
        if isinstance(rows, dict):  # a listed error escaped the job: keep it as a row
            rows = [
                {
                    "key": f"{key}:{t}",
                    "design_hash": key,
                    "stage": "synth",
                    "target": t,
                    "split": size,
                    "labels": None,
                    "fmax_mhz": None,
                    "error": rows["error"],
                }
                for t in targets
            ]
        crashed = [row for row in rows if row.pop("crashed", False)]
        rows = [row for row in rows if row not in crashed]
        store.append(rows)
        counts["rows"] += len(rows)
        counts["errors"] += sum(row["error"] is not None for row in rows)
        counts["crashed"] += len(crashed)
        spec = (rows or crashed)[0].get("spec") or {} if rows or crashed else {}
        parts = [spec.get("block") or spec.get("model") or spec.get("kind", "")]
        for row in crashed:
            parts.append(
                f"{row['target']}:crashed ({row['error'].split(': ', 1)[-1]}; not stored, tried again next run)"
            )
        for row in rows:
            if row["error"]:
                parts.append(f"{row['target']}:error")
            elif row["stage"] == "synth":
                parts.append(f"{row['target']}:{row['labels']['lut']} LUT")
            else:
                parts.append(f"fmax:{row['fmax_mhz']:.0f} MHz" if row["fmax_mhz"] else "fmax:-")
        return " ".join(parts)

    run_jobs(
        jobs,
        workers or os.cpu_count() or 1,
        on_result=save,
        ray_address=ray_address,
        describe=lambda key: key,
        errors=(HardwireError,),
    )
    return {"path": str(store.path), "designs": len(jobs), **counts}
