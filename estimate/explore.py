"""Design-space exploration: every legal folding of a network scored by the surrogates (with their uncertainty)
and the exact schedule models, the estimated Pareto front kept with a margin for that uncertainty, and the kept
points verified with real yosys (and nextpnr for Fmax) in parallel -- the reported front is the measured one.

The space of a network is one (PE, SIMD) per matrix-vector layer: PE divides the layer's outputs, SIMD its
input channels (hls.rtl.divisors / simd_choices). It is enumerated when it holds at most `max_points`
candidates; otherwise `max_points` distinct candidates are drawn uniformly (seeded), or, with search="nsga2",
Optuna's NSGA-II runs `max_points` trials over it guided by the estimates. Random is the default because it
did as well on the one space where both were compared against enumeration (864 foldings, 256 trials: 5 and
4 of the 8 estimated-front points).

Objectives: resources (lut, ff, dsp, bram, lutram; minimized, estimated), latency (cycles, minimized, exact),
throughput (inferences/s at the clock, maximized, exact: clock / initiation interval), fmax (MHz, maximized,
estimated; measured by nextpnr on the ECP5-85F as `hardwire synth --pnr` does).

The margin: an estimate of x with ensemble spread s (std of log values) is read as the interval
[x e^(-k s), x e^(k s)]; a candidate is kept when no other candidate is better on every objective even with
its pessimistic end against this one's optimistic end. With k = 0 that is the plain estimated front.

Verification rows are those of the dataset (estimate.dataset.synthesize_design on `model` specs, or `network`
specs for graphs built from a spec), appended one design at a time to `<out>/work/rows.jsonl.gz`: a killed
run keeps every finished design and a rerun synthesizes only what is missing.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hardwire.errors import HardwireError, ParameterError

from .dataset import DATASET_TARGETS, LABELS, RowStore, fmax_key, synthesize_design
from .designs import design_hash

# name -> (sense, unit): +1 maximized, -1 minimized
OBJECTIVES = {
    "lut": (-1, "LUT"),
    "ff": (-1, "FF"),
    "dsp": (-1, "DSP"),
    "bram": (-1, "BRAM"),
    "lutram": (-1, "LUTRAM"),
    "latency": (-1, "cycles"),
    "throughput": (1, "inferences/s"),
    "fmax": (1, "MHz"),
}
BUDGET_LABELS = LABELS
DEFAULT_MAX_POINTS = 4096
DEFAULT_MAX_VERIFY = 48
MAX_ROUNDS = 4
SPLIT = "small"  # verified rows train the surrogates like any drawn design (hash-split train/valid/test)


# ---------------------------------------------------------------------------------------------------------------
# What is explored


@dataclass
class Source:
    """A network to explore: its integer graph, its matrix-vector layers, and how a folding becomes a design
    spec (which rebuilds it for synthesis) and a `hardwire compile` command."""

    name: str
    graph: object  # hls.graph.IntGraph
    spec: Callable[[dict], dict]  # {"0": [pe, simd], ...} -> design spec
    model: str | None = None  # zoo:NAME or an .onnx path: what `hardwire compile` takes
    layers: list = field(default_factory=list)

    def __post_init__(self):
        from hardwire.hls.graph import MatVecLayer

        self.layers = [layer for layer in self.graph.layers if isinstance(layer, MatVecLayer)]

    def choices(self) -> list[list[tuple[int, int]]]:
        from hardwire.hls.rtl import divisors, simd_choices

        return [
            [(pe, simd) for pe in divisors(layer.out_features) for simd in simd_choices(layer)] for layer in self.layers
        ]

    kind = "network"
    axis_label = "PE,SIMD per layer"

    def combo(self, values) -> dict:
        """One pick per axis of `choices()` -> the point's folds ({"0": [pe, simd], ...})."""
        return as_folds(values)

    def describe(self, folds: dict) -> str:
        return " ".join(f"{a},{b}" for a, b in folds.values())

    def design(self, folds: dict):
        """(design spec, DesignGraph with the exact latency / initiation interval) of one folding."""
        from hardwire.hls import rtl

        from .features import network_graph

        folding = rtl.solve_folding(
            self.graph, folds={layer.name: tuple(folds[str(i)]) for i, layer in enumerate(self.layers)}
        )
        return self.spec(folds), network_graph(rtl.plan_dataflow(self.graph, folding), self.graph.name)

    def compile_command(self, folds: dict, target: str, clock_mhz: float) -> str | None:
        if self.model is None:
            return None
        fold_args = " ".join(
            f"--fold {layer.name}={folds[str(i)][0]},{folds[str(i)][1]}" for i, layer in enumerate(self.layers)
        )
        clock = f" --clock-mhz {clock_mhz:g}" if clock_mhz != 100 else ""
        return f"hardwire compile {self.model} --target {target}{clock} {fold_args} -o {self.graph.name}-explored"


def model_source(model: str) -> Source:
    """zoo:NAME or a QONNX .onnx file."""
    from .dataset import load_network

    if not model.startswith("zoo:"):
        path = Path(model)
        if not path.is_file():
            raise ParameterError("model", model, "zoo:NAME or an existing QONNX .onnx file")
        model = str(path.resolve())
    graph = load_network(model)
    return Source(graph.name, graph, lambda folds: {"kind": "model", "model": model, "folds": folds}, model)


def network_spec_source(spec: dict) -> Source:
    """A network spec of estimate.designs (random weights from its seed): the folding replaces the spec's."""
    from .designs import build_network

    graph, _ = build_network(spec)

    def with_folds(folds: dict) -> dict:
        out = json.loads(json.dumps(spec))
        matvec = [layer for layer in out["layers"] if layer["op"] != "maxpool"]
        for i, layer in enumerate(matvec):
            layer["pe"], layer["simd"] = folds[str(i)]
        return out

    return Source(f"net_{design_hash(spec)[:8]}", graph, with_folds)


# A block family: the space is the product of the values the user lists per parameter (`--space rows=2,4,8`),
# the other parameters fixed (`--param`) or at their defaults; a combination the block's own validation rejects,
# or that cannot run the workload, is not a candidate. Throughput and latency come from the family's cycle model
# on a workload: for a streaming block a frame (vector) at full rate, its initiation interval and latency; for
# the GEMM-style arrays one whole workload run at a time, its cycles standing for both.
BLOCK_WORKLOADS = {
    "systolic": {"m": 64, "k": 64, "n": 64},  # an M x K x N GEMM
    "bitserial": {"m": 64, "k": 64, "n": 64},
    "sparse": {"k": 256, "pattern": "dense", "rows": 64, "vectors": 1},
    "attention": {"seq": None},  # a head over seq_max queries and keys
    "mvu": {"frames": 1},
    "swg": {"frames": 1},
    "maxpool": {"frames": 1},
    "dwc": {"frames": 1},
    "softmax": {"n": None},  # back-to-back vectors of n_max
}  # bitmod, bitvert: cycles depend on the data (no workload)


@dataclass
class BlockSource:
    """A block family to explore over the listed parameter values."""

    name: str
    block: object  # gen.registry.Block
    axes: dict  # parameter -> list of values
    fixed: dict  # parameter -> value
    workload: dict | None
    model = None
    kind = "block"
    axis_label = "parameters"

    @property
    def layers(self) -> list:
        return list(self.axes)

    def choices(self) -> list[list]:
        return [list(values) for values in self.axes.values()]

    def combo(self, values) -> dict:
        return dict(zip(self.axes, values))

    def describe(self, folds: dict) -> str:
        return " ".join(f"{k}={v}" for k, v in folds.items())

    def spec(self, folds: dict) -> dict:
        return {"kind": "block", "block": self.name, "params": {**self.fixed, **folds}}

    def design(self, folds: dict):
        """(spec, DesignGraph); ParameterError when the combination is not a legal block or misses the workload."""
        from .features import block_graph

        spec = self.spec(folds)
        try:
            params = self.block.params(**spec["params"])
        except (ParameterError, ValueError) as error:
            raise ParameterError("space", self.describe(folds), f"a legal {self.name}; it says: {error}") from None
        graph = block_graph(self.name, params)
        if self.workload is not None:
            try:
                cycles = self.block.cycles(params, **self.workload)
            except (ParameterError, ValueError) as error:
                raise ParameterError(
                    "workload", self.workload, f"a workload {self.describe(folds)} runs ({error})"
                ) from None
            if isinstance(cycles, dict) and "initiation_interval" in cycles:
                graph.exact = {
                    "latency_cycles": int(cycles["latency_cycles"]),
                    "initiation_interval": int(cycles["initiation_interval"]),
                }
            else:
                total = int(cycles["total_cycles"] if isinstance(cycles, dict) else cycles)
                graph.exact = {"latency_cycles": total, "initiation_interval": total}
        return spec, graph

    def compile_command(self, folds: dict, target: str, clock_mhz: float) -> str:
        params = {**self.fixed, **folds}
        options = " ".join(
            f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
            if v is not False
            else f"--no-{k.replace('_', '-')}"
            for k, v in params.items()
        )
        return f"hardwire gen {self.name} {options} -o {self.name}-explored".replace("  ", " ")


def block_source(name: str, space: list[str], params: list[str], workload: str | None) -> BlockSource:
    """`--space NAME=V1,V2,...` (one or more), `--param NAME=V` and `--workload K=V,...` -> a BlockSource."""
    from hardwire.gen import registry

    from .cli import typed_params

    block = registry.get(name)
    if not space:
        raise ParameterError("space", "(none)", f"at least one --space NAME=V1,V2,... over {name}'s parameters")
    axes = {}
    for text in space:
        key, sep, values = text.partition("=")
        if not sep or not values:
            raise ParameterError("space", text, "NAME=V1,V2,...")
        typed = [typed_params(block, [f"{key}={v.strip()}"]) for v in values.split(",") if v.strip()]
        axes[next(iter(typed[0]))] = list(dict.fromkeys(next(iter(t.values())) for t in typed))
    fixed = typed_params(block, params)
    clash = set(fixed) & set(axes)
    if clash:
        raise ParameterError("param", ", ".join(sorted(clash)), "a parameter not also listed in --space")
    load = None
    if name in BLOCK_WORKLOADS:
        load = dict(BLOCK_WORKLOADS[name])
        for part in (workload or "").split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in load:
                raise ParameterError("workload", part, f"K=V with K one of {', '.join(load)} ({name})")
            load[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
        load = {k: v for k, v in load.items() if v is not None}
    elif workload:
        raise ParameterError("workload", workload, f"no workload: {name}'s cycles depend on its data")
    return BlockSource(name, block, axes, fixed, load)


def source_for(design: str, *, space=(), params=(), workload: str | None = None):
    from hardwire.gen import registry

    if design in registry.blocks():
        return block_source(design, list(space), list(params), workload)
    if space or params or workload:
        raise ParameterError(
            "space", design, f"--space/--param/--workload only with a block family ({', '.join(registry.blocks())})"
        )
    if design.startswith("zoo:") or design.endswith(".onnx"):
        return model_source(design)
    if design.endswith(".json"):
        path = Path(design)
        try:
            spec = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ParameterError("design", design, f"a readable JSON network spec ({error})") from None
        if not isinstance(spec, dict) or spec.get("kind") != "network":
            raise ParameterError("design", design, 'a JSON network spec ({"kind": "network", ...})')
        return network_spec_source(spec)
    raise ParameterError(
        "design",
        design,
        f"zoo:NAME, a QONNX .onnx file, a network spec .json, or a block family ({', '.join(registry.blocks())})",
    )


# ---------------------------------------------------------------------------------------------------------------
# Parsing what the user asked for


def parse_objectives(text: str) -> tuple[str, ...]:
    names = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    for name in names:
        if name not in OBJECTIVES:
            raise ParameterError("objectives", name, "a comma-separated list of " + ", ".join(OBJECTIVES))
    if len(names) < 2 or len(set(names)) != len(names):
        raise ParameterError("objectives", text, "two or more different objectives, e.g. lut,throughput")
    return names


def parse_budget(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    budget = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in BUDGET_LABELS:
            raise ParameterError("budget", part, "LABEL=N with LABEL one of " + ", ".join(BUDGET_LABELS))
        try:
            budget[name] = float(value)
        except ValueError:
            raise ParameterError("budget", part, "LABEL=N with N a number") from None
        if budget[name] < 0:
            raise ParameterError("budget", part, "N >= 0")
    return budget


# ---------------------------------------------------------------------------------------------------------------
# Candidates and scoring


def candidates(source: Source, max_points: int, seed: int) -> tuple[list[dict], int, bool]:
    """(foldings, size of the space, enumerated?): all of them when the space holds at most `max_points`, else
    `max_points` distinct ones drawn uniformly (seeded), always with the fully folded and fully unfolded ends."""
    choices = source.choices()
    size = math.prod(len(c) for c in choices)

    if size <= max_points:
        return [source.combo(combo) for combo in itertools.product(*choices)], size, True
    rng = np.random.default_rng(seed)
    seen = {tuple(0 for _ in choices), tuple(len(c) - 1 for c in choices)}
    while len(seen) < max_points:
        seen.add(tuple(int(rng.integers(0, len(c))) for c in choices))
    picks = sorted(seen)
    return [source.combo(choices[i][j] for i, j in enumerate(pick)) for pick in picks], size, False


def as_folds(combo) -> dict:
    return {str(i): list(fold) for i, fold in enumerate(combo)}


def violations(point, budget: dict, fps_min: float | None) -> list[float]:
    """Per constraint, how far the estimate misses it (<= 0: met), as Optuna's constraints read them."""
    out = [
        point.resources[label] / limit - 1 if limit > 0 else point.resources[label] for label, limit in budget.items()
    ]
    if fps_min is not None:
        out.append(1 - point.estimate["throughput"] / fps_min)
    return out


def nsga2_search(
    source: Source,
    estimator,
    target: str,
    clock_mhz: float,
    objectives,
    budget: dict,
    fps_min: float | None,
    trials: int,
    seed: int,
    say,
    population: int = 64,
) -> list:
    """A space too large to enumerate: Optuna's NSGA-II over the per-layer fold indices (in divisor order),
    asking a generation at a time and scoring it in one surrogate batch; constraints as Optuna constraints.
    Returns every distinct point it scored."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    choices = source.choices()
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    study = optuna.create_study(directions=["minimize"] * len(objectives), sampler=sampler)
    scored: dict = {}
    asked = 0
    while asked < trials:
        batch = [study.ask() for _ in range(min(population, trials - asked))]
        asked += len(batch)
        picks = [tuple(trial.suggest_int(f"l{i}", 0, len(c) - 1) for i, c in enumerate(choices)) for trial in batch]
        new = sorted({pick for pick in picks if pick not in scored})
        folds = [source.combo(choices[i][j] for i, j in enumerate(pick)) for pick in new]
        by_folds = {
            json.dumps(p.folds, sort_keys=True): p
            for p in score(source, folds, estimator, target, clock_mhz, rejected=[])
        }
        scored.update({pick: by_folds.get(json.dumps(f, sort_keys=True)) for pick, f in zip(new, folds)})
        for trial, pick in zip(batch, picks):
            point = scored[pick]
            if point is None:  # a combination the block family rejects
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            for i, value in enumerate(violations(point, budget, fps_min)):  # Optuna 5's constraint API
                trial.set_constraint(f"c{i}", value)
            study.tell(trial, [float(v) for v in _oriented(point.estimate, objectives)])
        say(f"NSGA-II: {asked:,}/{trials:,} trials, {len(scored):,} distinct points scored")
    return [p for p in scored.values() if p is not None]


@dataclass
class Point:
    folds: dict
    spec: dict
    key: str  # design hash
    graph: object  # features.DesignGraph
    exact: dict
    estimate: dict = field(default_factory=dict)  # objective -> value
    spread: dict = field(default_factory=dict)  # objective -> std of log values (0 for exact ones)
    resources: dict = field(default_factory=dict)  # every estimated label
    measured: dict | None = None  # objective -> value (None: not verified)
    measured_resources: dict | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "folds": self.folds,
            "design_hash": self.key,
            "exact": self.exact,
            "estimate": self.estimate,
            "relative_spread": self.spread,
            "estimated_resources": self.resources,
            "measured": self.measured,
            "measured_resources": self.measured_resources,
            "error": self.error,
        }


def score(
    source: Source,
    folds_list: list[dict],
    estimator,
    target: str,
    clock_mhz: float,
    batch: int = 256,
    progress=None,
    rejected: list | None = None,
) -> list[Point]:
    """Lay every folding out (exact latency and initiation interval from the schedule model) and estimate its
    resources and Fmax with the surrogates, in batches. A block combination its family rejects is left out (its
    reason appended to `rejected`)."""
    points = []
    for folds in folds_list:
        try:
            spec, graph = source.design(folds)
        except ParameterError as error:
            if source.kind != "block":
                raise
            if rejected is not None:
                rejected.append(str(error))
            continue
        points.append(Point(folds, spec, design_hash(spec), graph, dict(graph.exact)))
    for start in range(0, len(points), batch):
        chunk = points[start : start + batch]
        for point, result in zip(chunk, estimator.predict_batch([p.graph for p in chunk], target, "auto")):
            point.resources = dict(result["resources"])
            values = {label: result["resources"][label] for label in LABELS}
            spreads = {label: result["spread"][label] for label in LABELS}
            values["fmax"], spreads["fmax"] = result["fmax_mhz"] or 0.0, result["fmax_spread"] or 0.0
            if point.exact:
                values.update(exact_objectives(point.exact, clock_mhz))
            spreads.update(latency=0.0, throughput=0.0)
            point.estimate, point.spread = values, spreads
        if progress:
            progress(min(start + batch, len(points)), len(points))
    return points


def exact_objectives(exact: dict, clock_mhz: float) -> dict:
    return {"latency": float(exact["latency_cycles"]), "throughput": clock_mhz * 1e6 / exact["initiation_interval"]}


# ---------------------------------------------------------------------------------------------------------------
# Pareto fronts


def _oriented(values: dict, objectives) -> np.ndarray:
    """Objective values as a vector to minimize."""
    return np.array([-OBJECTIVES[o][0] * values[o] for o in objectives], dtype=float)


def pareto_front(vectors: np.ndarray) -> list[int]:
    """Indices of the non-dominated rows (all minimized); equal rows are all kept."""
    front = []
    for i, v in enumerate(vectors):
        dominated = np.any(np.all(vectors <= v, axis=1) & np.any(vectors < v, axis=1))
        if not dominated:
            front.append(i)
    return front


def front_of(points: list[Point], objectives, measured: bool = False) -> list[Point]:
    usable = [p for p in points if (p.measured if measured else p.estimate)]
    if not usable:
        return []
    vectors = np.stack([_oriented(p.measured if measured else p.estimate, objectives) for p in usable])
    return [usable[i] for i in pareto_front(vectors)]


def nondominated_ranks(vectors: np.ndarray) -> np.ndarray:
    ranks = np.full(len(vectors), -1)
    remaining = np.arange(len(vectors))
    rank = 0
    while len(remaining):
        front = remaining[pareto_front(vectors[remaining])]
        ranks[front] = rank
        remaining = np.setdiff1d(remaining, front)
        rank += 1
    return ranks


def with_margin(points: list[Point], objectives, k: float, floor: dict | None = None) -> list[Point]:
    """The candidates that may be on the true front given the estimates' uncertainty: kept unless another
    candidate is better on every objective with its pessimistic end against this one's optimistic end (k
    uncertainties). A verified point counts with its measurement and no uncertainty; an estimate's uncertainty
    is the ensemble spread, or the `floor` (per objective, std of log values) where that is larger."""
    if not points:
        return []
    floor = floor or {}
    mean = np.stack([_oriented(p.measured or p.estimate, objectives) for p in points])
    spread = np.array(
        [[0.0 if p.measured else max(p.spread[o], floor.get(o, 0.0)) for o in objectives] for p in points]
    )
    # minimized vectors: a minimized objective's optimistic end is smaller, a maximized one's (negated) too
    sense = np.array([OBJECTIVES[o][0] for o in objectives])
    optimistic = mean * np.exp(k * spread * np.where(sense < 0, -1, 1))
    pessimistic = mean * np.exp(k * spread * np.where(sense < 0, 1, -1))
    kept = []
    for i in range(len(points)):
        dominated = np.all(pessimistic <= optimistic[i], axis=1) & np.any(pessimistic < optimistic[i], axis=1)
        dominated[i] = False
        if not dominated.any():
            kept.append(i)
    return [points[i] for i in kept]


def observed_error(points: list[Point], objectives) -> dict:
    """Per estimated objective, the root mean square of log(estimate / measured) over the verified points: how
    wrong the surrogates were on this very network. Bias counts as error (conservative: it widens the margin)."""
    out = {}
    for o in objectives:
        if o in ("latency", "throughput"):
            continue
        errors = [math.log((p.estimate[o] + 1) / (p.measured[o] + 1)) for p in points if p.measured]
        if errors:
            out[o] = math.sqrt(sum(e * e for e in errors) / len(errors))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Constraints


def apply_constraints(points: list[Point], budget: dict, fps_min: float | None) -> list[Point]:
    """The candidates within the budget (estimated resources) and the throughput floor (exact); none left is
    the user's error, naming the constraint that is furthest from being met by any candidate."""
    fits = [
        p
        for p in points
        if all(p.resources[label] <= limit for label, limit in budget.items())
        and (fps_min is None or p.estimate["throughput"] >= fps_min)
    ]
    if fits or not points:
        return fits
    worst = None
    for label, limit in budget.items():
        best = min(p.resources[label] for p in points)
        ratio = best / limit if limit > 0 else (math.inf if best > 0 else 1.0)
        if worst is None or ratio > worst[0]:
            worst = (
                ratio,
                "budget",
                f"{label}={limit:g}",
                f">= {best:,.0f} (the smallest {label.upper()} of any candidate, estimated)",
            )
    if fps_min is not None:
        best = max(p.estimate["throughput"] for p in points)
        ratio = fps_min / best
        if worst is None or ratio > worst[0]:
            worst = (ratio, "fps-min", fps_min, f"<= {best:,.0f} (the fastest candidate at this clock)")
    if worst[0] <= 1.0:
        # each constraint alone is met by some candidate, but no candidate meets them all
        names = ", ".join([f"{k}={v:g}" for k, v in budget.items()] + ([f"fps-min={fps_min:g}"] if fps_min else []))
        raise ParameterError(
            "budget",
            names,
            "constraints some single candidate meets together (each alone is "
            f"met; the tightest is {worst[1]} {worst[2]})",
        )
    raise ParameterError(worst[1], worst[2], worst[3])


# ---------------------------------------------------------------------------------------------------------------
# Verification


def verify(
    points: list[Point],
    target: str,
    store: RowStore,
    *,
    fmax: bool,
    workers: int,
    ray_address: str | None,
    timeout_s: float,
    dataset: RowStore | None,
    clock_mhz: float,
    started: float | None = None,
    on_progress=None,
) -> dict:
    """Synthesize the points whose rows are not yet in `store` (jobs through hardwire.jobs: a process pool or
    Ray), append each design's rows as it finishes (and to `dataset`), then read every point's measurement."""
    from hardwire.jobs import run_jobs

    have = store.keys()
    stages = ("synth", "fmax") if fmax else ("synth",)
    wanted = {p.key: [f"{p.key}:{target}"] + ([fmax_key(p.key)] if fmax else []) for p in points}
    jobs = {
        p.key: (
            synthesize_design,
            p.spec,
            (target,),
            SPLIT,
            fmax,
            stages,
            tuple(k for k in wanted[p.key] if k in have),
            timeout_s,
        )
        for p in points
        if any(k not in have for k in wanted[p.key])
    }
    done_before = len(points) - len(jobs)
    print(
        f"explore: verifying {len(points)} points: {done_before} already in {store.path}, {len(jobs)} to "
        f"synthesize ({'yosys + nextpnr' if fmax else 'yosys'}, {target})",
        file=sys.stderr,
        flush=True,
    )
    by_key = {p.key: p for p in points}
    counts = {"synthesized": 0}
    known = dataset.keys() if dataset is not None else set()

    def save(key, rows) -> str:
        if isinstance(rows, dict):  # a listed error escaped the job: keep it as a row
            rows = [
                {
                    "key": f"{key}:{target}",
                    "design_hash": key,
                    "stage": "synth",
                    "target": target,
                    "split": SPLIT,
                    "spec": by_key[key].spec,
                    "design": None,
                    "labels": None,
                    "fmax_mhz": None,
                    "error": rows["error"],
                }
            ]
        rows = [{**row, "origin": "explore"} for row in rows]
        store.append(rows)
        if dataset is not None:
            dataset.append([row for row in rows if row["key"] not in known])
            known.update(row["key"] for row in rows)
        counts["synthesized"] += 1
        read_measurements([by_key[key]], store_rows(rows), target, fmax, clock_mhz)
        return on_progress(by_key[key]) if on_progress else None

    if jobs:
        run_jobs(
            jobs,
            workers,
            started,
            on_result=save,
            ray_address=ray_address,
            describe=lambda key: key[:12],
            errors=(HardwireError,),
        )
    read_measurements(points, store_rows(store.rows()), target, fmax, clock_mhz)
    if dataset is not None:  # rows of an earlier, killed run reach the dataset too
        dataset.append(
            [
                {**row, "origin": "explore"}
                for row in store.rows()
                if row["key"] not in known and row["design_hash"] in by_key
            ]
        )
    return {"synthesized": counts["synthesized"], "reused": done_before}


def store_rows(rows: list[dict]) -> dict:
    return {row["key"]: row for row in rows}


def read_measurements(points: list[Point], rows: dict, target: str, fmax: bool, clock_mhz: float) -> None:
    for p in points:
        synth = rows.get(f"{p.key}:{target}")
        if synth is None:
            continue
        if synth.get("error") or not synth.get("labels"):
            p.error, p.measured = synth.get("error") or "no labels", None
            continue
        p.measured_resources = dict(synth["labels"])
        measured = {label: float(synth["labels"][label]) for label in LABELS}
        if p.exact:
            measured.update(exact_objectives(p.exact, clock_mhz))
        if fmax:
            row = rows.get(fmax_key(p.key))
            if row is None:
                continue
            if row.get("error") or not row.get("fmax_mhz"):
                p.error, p.measured = row.get("error") or "no Fmax", None
                continue
            measured["fmax"] = float(row["fmax_mhz"])
        p.measured = measured


# ---------------------------------------------------------------------------------------------------------------
# The whole search


@dataclass
class ExploreResult:
    source: Source
    target: str
    objectives: tuple
    budget: dict
    fps_min: float | None
    clock_mhz: float
    space_size: int
    enumerated: bool
    points: list[Point]
    feasible: list[Point]
    estimated_front: list[Point]
    kept: list[Point]
    verified_front: list[Point]
    over_budget: list[Point]
    chosen: Point | None
    stats: dict


def explore(
    source: Source,
    *,
    target: str = "ecp5",
    objectives=("lut", "throughput"),
    budget: dict | None = None,
    fps_min: float | None = None,
    clock_mhz: float = 100.0,
    out: Path,
    margin: float = 2.0,
    max_points: int = DEFAULT_MAX_POINTS,
    max_verify: int = DEFAULT_MAX_VERIFY,
    seed: int = 0,
    workers: int | None = None,
    ray_address: str | None = None,
    timeout_s: float = 1800,
    dataset: Path | None = None,
    weights: Path | None = None,
    verify_all: bool = False,
    search: str = "random",
) -> ExploreResult:
    from .predict import Estimator

    budget = budget or {}
    if target not in DATASET_TARGETS:
        raise ParameterError("target", target, "one of " + ", ".join(DATASET_TARGETS))
    if margin < 0:
        raise ParameterError("margin", margin, ">= 0")
    if search not in ("nsga2", "random"):
        raise ParameterError("search", search, "nsga2 or random")
    if max_points < 2 or max_verify < 1:
        raise ParameterError("max-points/max-verify", (max_points, max_verify), "max-points >= 2, max-verify >= 1")
    if fps_min is not None and fps_min <= 0:
        raise ParameterError("fps-min", fps_min, "> 0")
    if clock_mhz <= 0:
        raise ParameterError("clock-mhz", clock_mhz, "> 0")
    if not source.layers:
        raise ParameterError("design", source.name, "a network with at least one matrix-vector layer")
    if source.kind == "block" and source.workload is None:
        timed = [o for o in objectives if o in ("latency", "throughput")]
        if timed:
            raise ParameterError(
                "objectives",
                ",".join(timed),
                f"resource or fmax objectives only: {source.name}'s cycles depend on the data it is given",
            )
        if fps_min is not None:
            raise ParameterError("fps-min", fps_min, f"not given: {source.name}'s cycles depend on its data")
    out = Path(out)
    started = time.monotonic()
    estimator = Estimator.load(weights)

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] explore: {text}", file=sys.stderr, flush=True)

    if "fmax" in objectives and target != "ecp5":
        say("note: fmax is estimated and measured on the ECP5-85F (nextpnr-ecp5), whatever the --target")
    folds_list, size, enumerated = candidates(source, max_points, seed)
    method = (
        "enumeration"
        if enumerated
        else (
            f"NSGA-II (Optuna), {max_points:,} trials, seed {seed}"
            if search == "nsga2"
            else f"uniform random sample, seed {seed}"
        )
    )
    say(f"{source.name}: {size:,} foldings in the space; {method}")
    rejected: list[str] = []
    if enumerated or search == "random":
        points = score(
            source,
            folds_list,
            estimator,
            target,
            clock_mhz,
            progress=lambda n, total: say(f"scored {n:,}/{total:,} points"),
            rejected=rejected,
        )
        if rejected:
            say(
                f"{len(rejected):,} of {len(folds_list):,} combinations are not legal {source.name} designs, "
                f"e.g. {rejected[0]}"
            )
        if not points:
            first = rejected[0].split("it says: ", 1)[-1]
            raise ParameterError(
                "space",
                " ".join(f"{k}={','.join(map(str, v))}" for k, v in source.axes.items()),
                f"at least one legal {source.name} combination; the first one fails with: {first}",
            )
    else:
        points = nsga2_search(source, estimator, target, clock_mhz, objectives, budget, fps_min, max_points, seed, say)
    score_s = time.monotonic() - started
    feasible = apply_constraints(points, budget, fps_min)
    estimated_front = front_of(feasible, objectives)
    say(f"{len(feasible):,} of {len(points):,} within the constraints; estimated front {len(estimated_front)} points")
    store = RowStore(out / "work" / "rows.jsonl.gz")
    kept: list[Point] = []
    kept_keys: set[str] = set()
    stats = {"synthesized": 0, "reused": 0, "rounds": []}

    def progress(point: Point) -> str:
        verified = [p for p in kept if p.measured]
        front = front_of(verified, objectives, measured=True)
        shown = "; ".join(_describe(p.measured, objectives) for p in _sorted(front, objectives)[:4])
        return f"verified {len(verified)}/{len(kept)}, front {len(front)}: {shown}"

    verify_started = time.monotonic()
    floor: dict = {}
    for round_ in range(1, MAX_ROUNDS + 1):
        if verify_all:
            new = [p for p in feasible if p.key not in kept_keys]
        else:
            new = [p for p in with_margin(feasible, objectives, margin, floor) if p.key not in kept_keys]
            room = max_verify - len(kept)
            if len(new) > room:  # the estimated front first, then by non-dominated rank
                ranks = nondominated_ranks(np.stack([_oriented(p.estimate, objectives) for p in new]))
                new = [new[i] for i in np.argsort(ranks, kind="stable")[:room]]
        if not new:
            break
        kept += new
        kept_keys.update(p.key for p in new)
        say(
            f"round {round_}: {len(new)} more points to verify ("
            + (
                f"margin {margin:g} x ensemble spread"
                if not floor
                else "margin widened to the observed error, rms log "
                + ", ".join(f"{o} {e:.2f}" for o, e in floor.items())
            )
            + ")"
        )
        done = verify(
            new,
            target,
            store,
            fmax="fmax" in objectives,
            workers=workers or os.cpu_count() or 1,
            ray_address=ray_address,
            timeout_s=timeout_s,
            dataset=RowStore(dataset) if dataset is not None else None,
            clock_mhz=clock_mhz,
            started=started,
            on_progress=progress,
        )
        stats["synthesized"] += done["synthesized"]
        stats["reused"] += done["reused"]
        floor = observed_error([p for p in kept if p.measured], objectives)
        stats["rounds"].append({"verified": len(new), "observed_rms_log_error": dict(floor)})
        if verify_all:
            break
    verified = [p for p in kept if p.measured]
    within = [p for p in verified if all(p.measured_resources[label] <= limit for label, limit in budget.items())]
    over_budget = [p for p in verified if p.key not in {q.key for q in within}]
    verified_front = _sorted(front_of(within, objectives, measured=True), objectives)
    chosen = knee(verified_front, objectives)
    stats.update(
        method=method,
        points_scored=len(points),
        score_seconds=round(score_s, 2),
        verify_seconds=round(time.monotonic() - verify_started, 2),
        wall_seconds=round(time.monotonic() - started, 2),
        failed=sum(p.error is not None for p in kept),
    )
    say(
        f"verified front: {len(verified_front)} points ({stats['synthesized']} synthesized now, "
        f"{stats['reused']} from an earlier run, {stats['failed']} failed)"
    )
    return ExploreResult(
        source,
        target,
        tuple(objectives),
        budget,
        fps_min,
        clock_mhz,
        size,
        enumerated,
        points,
        feasible,
        estimated_front,
        kept,
        verified_front,
        over_budget,
        chosen,
        stats,
    )


def _sorted(points: list[Point], objectives) -> list[Point]:
    return sorted(points, key=lambda p: tuple(_oriented(p.measured or p.estimate, objectives)))


def _describe(values: dict, objectives) -> str:
    return ", ".join(f"{o} {values[o]:,.0f}" for o in objectives)


def knee(front: list[Point], objectives) -> Point | None:
    """The balanced point of a front: nearest the ideal point once each objective is scaled to [0, 1] over the
    front (log scale: resources and throughput span decades)."""
    if not front:
        return None
    if len(front) == 1:
        return front[0]
    v = np.stack([_oriented(p.measured, objectives) for p in front])
    v = np.sign(v) * np.log1p(np.abs(v))
    lo, hi = v.min(axis=0), v.max(axis=0)
    scaled = (v - lo) / np.where(hi > lo, hi - lo, 1.0)
    return front[int(np.argmin(np.linalg.norm(scaled, axis=1)))]
