"""Design features: every design kind becomes one `DesignGraph`, the only description the dataset, training and
`hardwire estimate` ever see, so the three cannot disagree.

A design graph has one node per hardware unit (a network's streaming units; a block is one node) with its
parameters as numbers, and one edge per stream between units. Node features are what a hardware engineer
would read off the unit: dimensions, bit widths, folding (PE, SIMD), memory bits, threshold count, the depth
and width of the FIFO in front of it. `flat_features` sums and maximises node features per unit kind: the
input of the boosted trees, which take a fixed-length vector.

Exact quantities (latency, initiation interval) are attached as `exact`: they come from the schedule models
and are never learned.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from hardwire.errors import ParameterError

FEATURE_VERSION = "1"


@dataclass
class Node:
    name: str
    op: str                                   # "mvu", "swg", "maxpool", "dwc", or a block name
    features: dict[str, float]


@dataclass
class DesignGraph:
    kind: str                                 # "network", "block", or "hls4ml" (wa-hls4ml records)
    name: str
    nodes: list[Node]
    edges: list[tuple[int, int]] = field(default_factory=list)
    exact: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "edges": [list(e) for e in self.edges], "exact": self.exact,
                "nodes": [{"name": n.name, "op": n.op, "features": n.features} for n in self.nodes]}

    @classmethod
    def from_dict(cls, data: dict) -> DesignGraph:
        return cls(data["kind"], data["name"],
                   [Node(n["name"], n["op"], {k: float(v) for k, v in n["features"].items()}) for n in data["nodes"]],
                   [tuple(e) for e in data.get("edges", [])], dict(data.get("exact", {})))


def _numeric(values: dict) -> dict[str, float]:
    """Numbers as they are, booleans as 0/1, a string `s` of field `f` as the indicator `f=s` (one-hot)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if key in ("name", "content_seed") or value is None:
            continue
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, (int, float)):
            out[key] = float(value)
        elif isinstance(value, str):
            out[f"{key}={value}"] = 1.0
    return out


def params_dict(params) -> dict:
    return params.to_dict() if hasattr(params, "to_dict") else dataclasses.asdict(params)


# ---------------------------------------------------------------------------------------------------------------
# Streaming units of a compiled network


def unit_features(kind: str, params, fifo_depth: int, fifo_width: int) -> dict[str, float]:
    """A unit's parameters plus what a resource estimate hinges on (memory bits, multiplier bits)."""
    f = _numeric(params_dict(params))
    if kind == "mvu":
        p = params
        lanes = p.pe * p.simd
        f.update(
            lanes=lanes,
            multiplier_bits=lanes * p.in_width * p.w_width,
            weight_bits=p.in_features * p.out_features * p.w_width,
            weight_depth=p.neuron_folds * p.synapse_folds,
            weight_word_bits=p.simd * p.w_width,
            threshold_count=p.threshold_count,
            threshold_bits=p.out_features * p.threshold_count * p.threshold_width,
            threshold_width=p.threshold_width,
            comparators=p.pe * p.threshold_count,
            comparator_bits=p.pe * p.threshold_count * p.threshold_width,
            accumulator_bits=p.pe * p.acc_width,
            input_buffer_bits=p.in_features * p.in_width,
            adder_tree_bits=p.pe * max(0, p.simd - 1) * (p.in_width + p.w_width),
        )
    elif kind == "swg":
        p = params
        f.update(buffer_bits=p.in_width * p.kernel_size * p.channels * p.elem_width * (2 if not p.line_buffer else 1),
                 lane_bits=p.simd * p.elem_width)
    elif kind == "maxpool":
        p = params
        f.update(buffer_bits=p.in_width * p.channels * p.elem_width, lane_bits=p.simd * p.elem_width)
    elif kind == "dwc":
        p = params
        f.update(lane_bits=max(p.in_lanes, p.out_lanes) * p.elem_width)
    f.update(fifo_depth=fifo_depth, fifo_width=fifo_width, fifo_bits=fifo_depth * fifo_width)
    return f


BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


def bram18_tiles(depth: float, width: float) -> float:
    """18-kbit blocks for a depth x width memory: the cheapest of the block's aspect ratios."""
    if depth <= 0 or width <= 0:
        return 0.0
    return float(min(math.ceil(width / cw) * math.ceil(depth / cd) for cd, cw in BRAM18_SHAPES))


def derived_features(op: str, f: dict[str, float]) -> dict[str, float]:
    """What the generators decide by rule and a learned model should not have to guess, computed from the stored
    parameters alone (so rows written before a rule was added get it too): which products go to DSP blocks
    (gen/mvu builds products with an operand of at most LUT_MULTIPLY_MAX_WIDTH bits from LUTs; yosys maps
    every other multiplier to a DSP) and the block-RAM geometry of each PE's weight and threshold memories."""
    out: dict[str, float] = {}
    if op == "mvu":
        from hardwire.gen.mvu import LUT_MULTIPLY_MAX_WIDTH

        lanes = f["pe"] * f["simd"]
        dsp = min(f["in_width"], f["w_width"]) > LUT_MULTIPLY_MAX_WIDTH
        depth = f.get("weight_depth", 0.0)
        out.update(dsp_products=lanes if dsp else 0.0,
                   lut_product_bits=0.0 if dsp else lanes * f["in_width"] * f["w_width"],
                   weight_bram18=f["pe"] * bram18_tiles(depth, f["simd"] * f["w_width"]),
                   weight_bits_per_pe=depth * f["simd"] * f["w_width"],
                   threshold_bram18=f["pe"] * bram18_tiles(f["out_features"] / f["pe"],
                                                           f.get("threshold_count", 0.0) * f.get("threshold_width", 0.0)))
    elif op == "systolic":
        out.update(products=f["rows"] * f["cols"], product_bits=f["rows"] * f["cols"] * f["a_width"] * f["w_width"])
    return out


def node_features(node: Node) -> dict[str, float]:
    """A node's stored features with the derived ones: what every model reads."""
    return {**node.features, **derived_features(node.op, node.features)}


def network_graph(plan, name: str | None = None) -> DesignGraph:
    """A compiled network's dataflow plan (hls.rtl.DataflowPlan) as a chain graph of its units."""
    from hardwire.hls.rtl import network_cycles

    nodes = []
    width = None
    for stage in plan.stages:
        fifo_width = width if stage.fifo_depth else 0
        nodes.append(Node(stage.name, stage.kind, unit_features(stage.kind, stage.params, stage.fifo_depth,
                                                                fifo_width or 0)))
        width = _out_stream_bits(stage)
    cycles = network_cycles(plan)
    exact = {"latency_cycles": cycles["latency_cycles"], "initiation_interval": cycles["initiation_interval"]}
    return DesignGraph("network", name or plan.name, nodes, [(i, i + 1) for i in range(len(nodes) - 1)], exact)


def _out_stream_bits(stage) -> int:
    p = stage.params
    if stage.kind == "mvu":
        width = p.out_width if p.thresholds_mode else p.acc_width
        return p.pe * width
    if stage.kind == "swg":
        return p.simd * p.elem_width
    if stage.kind == "maxpool":
        return p.simd * p.elem_width
    if stage.kind == "dwc":
        return p.out_lanes * p.elem_width
    raise ValueError(f"no stream width for unit kind {stage.kind!r}")


# ---------------------------------------------------------------------------------------------------------------
# Blocks of gen/


def block_graph(block_name: str, params) -> DesignGraph:
    """A gen/ block as a one-node graph: its parameters (and the derived ones its dataclass reports)."""
    return DesignGraph("block", params_dict(params).get("name") or block_name,
                       [Node(block_name, block_name, _numeric(params_dict(params)))])


# ---------------------------------------------------------------------------------------------------------------
# Fixed-length features for the trees


def flat_features(graph: DesignGraph) -> dict[str, float]:
    """Per unit kind: node count and the sum and max of every node feature; plus graph-wide totals."""
    out: dict[str, float] = {"nodes": float(len(graph.nodes)), f"kind={graph.kind}": 1.0}
    for node in graph.nodes:
        prefix = node.op
        out[f"{prefix}.count"] = out.get(f"{prefix}.count", 0.0) + 1.0
        for key, value in node_features(node).items():
            s, m = f"{prefix}.{key}.sum", f"{prefix}.{key}.max"
            out[s] = out.get(s, 0.0) + value
            out[m] = max(out.get(m, -math.inf), value)
    for key in ("lanes", "multiplier_bits", "weight_bits", "threshold_bits", "fifo_bits", "comparator_bits",
                "buffer_bits", "accumulator_bits", "dsp_products", "lut_product_bits", "weight_bram18",
                "threshold_bram18", "products"):
        out[f"total.{key}"] = sum(node_features(n).get(key, 0.0) for n in graph.nodes)
    return out


def require_known_target(target: str, known) -> None:
    if target not in known:
        raise ParameterError("target", target, "one of " + ", ".join(sorted(known)))
