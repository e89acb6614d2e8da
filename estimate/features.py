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


# 2: memory inventory per unit (content-aware ROM widths) with the BRAM / LUT-RAM / soft-logic split yosys makes of
# it per target (estimate/memories.py), FINN-R's per-unit LUT terms. Weights record the version they were trained
# with; another version's weights are refused.
FEATURE_VERSION = "2"


@dataclass
class Node:
    name: str
    op: str  # "mvu", "swg", "maxpool", "dwc", or a block name
    features: dict[str, float]
    # the unit's memories as yosys sees them (memories.Memory as dicts), where the graph was built from the design
    # itself; None: derived from the parameters alone (memories.inventory without content)
    memories: list[dict] | None = None


@dataclass
class DesignGraph:
    kind: str  # "network", "block", or "hls4ml" (wa-hls4ml records)
    name: str
    nodes: list[Node]
    edges: list[tuple[int, int]] = field(default_factory=list)
    exact: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "edges": [list(e) for e in self.edges],
            "exact": self.exact,
            "feature_version": FEATURE_VERSION,
            "nodes": [
                {
                    "name": n.name,
                    "op": n.op,
                    "features": n.features,
                    **({"memories": n.memories} if n.memories is not None else {}),
                }
                for n in self.nodes
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> DesignGraph:
        return cls(
            data["kind"],
            data["name"],
            [
                Node(n["name"], n["op"], {k: float(v) for k, v in n["features"].items()}, n.get("memories"))
                for n in data["nodes"]
            ],
            [tuple(e) for e in data.get("edges", [])],
            dict(data.get("exact", {})),
        )


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
    """A unit's parameters and the FIFO in front of it; what follows from the parameters is added by
    `derived_features`, for network units and for the same blocks generated on their own alike."""
    return {
        **_numeric(params_dict(params)),
        "fifo_depth": fifo_depth,
        "fifo_width": fifo_width,
        "fifo_bits": fifo_depth * fifo_width,
    }


BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


def bram18_tiles(depth: float, width: float) -> float:
    """18-kbit blocks for a depth x width memory: the cheapest of the block's aspect ratios."""
    if depth <= 0 or width <= 0:
        return 0.0
    return float(min(math.ceil(width / cw) * math.ceil(depth / cd) for cd, cw in BRAM18_SHAPES))


_REQUIRED = {
    "mvu": {"pe", "simd", "in_features", "out_features", "in_width", "w_width", "acc_width"},
    "swg": {"in_width", "kernel_size", "channels", "elem_width", "simd"},
    "maxpool": {"in_width", "channels", "elem_width", "simd"},
    "dwc": {"in_lanes", "out_lanes", "elem_width"},
    "systolic": {"rows", "cols", "a_width", "w_width"},
}


def derived_features(op: str, f: dict[str, float]) -> dict[str, float]:
    """What follows from a unit's stored parameters and what a resource count hinges on (memory and multiplier
    bits, threshold comparators), plus what the generators decide by rule and a model should not have to guess:
    which products go to DSP blocks (gen/mvu builds products with an operand of at most LUT_MULTIPLY_MAX_WIDTH
    bits from LUTs; yosys maps every other multiplier to a DSP) and the block-RAM geometry of each PE's
    memories. Computed from the parameters alone, so rows stored before a rule was added get it too. A node
    that lacks a parameter (a graph from elsewhere reusing an op name) gets nothing derived."""
    if not _REQUIRED.get(op, set()) <= f.keys():
        return {}
    if op == "mvu":
        from hardwire.gen.mvu import LUT_MULTIPLY_MAX_WIDTH
        from hardwire.params import bits_for_range, int_range, product_range

        pe, simd, k, n = f["pe"], f["simd"], f["in_features"], f["out_features"]
        a, w = f["in_width"], f["w_width"]
        lanes = pe * simd
        depth = (n / pe) * (k / simd)
        thresholds = (1 << int(f["out_width"])) - 1 if f.get("out_width") else 0
        lo, hi = product_range(int_range(int(a), bool(f.get("in_signed"))), int_range(int(w), bool(f.get("w_signed"))))
        threshold_width = bits_for_range(int(k) * lo, int(k) * hi + 1, True)
        dsp = min(a, w) > LUT_MULTIPLY_MAX_WIDTH
        return {
            "lanes": lanes,
            "multiplier_bits": lanes * a * w,
            "weight_bits": k * n * w,
            "weight_depth": depth,
            "weight_word_bits": simd * w,
            "threshold_count": thresholds,
            "threshold_width": threshold_width,
            "threshold_bits": n * thresholds * threshold_width,
            "comparators": pe * thresholds,
            "comparator_bits": pe * thresholds * threshold_width,
            "accumulator_bits": pe * f["acc_width"],
            "input_buffer_bits": k * a,
            "adder_tree_bits": pe * max(0.0, simd - 1) * (a + w),
            "dsp_products": lanes if dsp else 0.0,
            "lut_product_bits": 0.0 if dsp else lanes * a * w,
            "weight_bram18": pe * bram18_tiles(depth, simd * w),
            "weight_bits_per_pe": depth * simd * w,
            "threshold_bram18": pe * bram18_tiles(n / pe, thresholds * threshold_width),
            **finn_r_terms(f, thresholds),
        }
    if op == "swg":
        return {
            "buffer_bits": f["in_width"]
            * f["kernel_size"]
            * f["channels"]
            * f["elem_width"]
            * (1 if f.get("line_buffer", 1) else 2),
            "lane_bits": f["simd"] * f["elem_width"],
        }
    if op == "maxpool":
        return {
            "buffer_bits": f["in_width"] * f["channels"] * f["elem_width"],
            "lane_bits": f["simd"] * f["elem_width"],
        }
    if op == "dwc":
        return {"lane_bits": max(f["in_lanes"], f["out_lanes"]) * f["elem_width"]}
    if op == "systolic":
        return {"products": f["rows"] * f["cols"], "product_bits": f["rows"] * f["cols"] * f["a_width"] * f["w_width"]}
    return {}


def finn_r_terms(f: dict[str, float], threshold_count: float) -> dict[str, float]:
    """FINN-R's per-unit LUT terms (Blott et al., TRETS 2018) of a matrix-vector unit: per PE, SIMD multipliers
    (a x w LUTs each where the product is built from LUTs, none on a DSP), an adder tree of SIMD - 1 adders of
    growing width, the accumulator and the threshold comparators; LUT = 300 + 1.1 x PE x their sum."""
    from hardwire.gen.mvu import LUT_MULTIPLY_MAX_WIDTH

    pe, simd, a, w, acc = f["pe"], f["simd"], f["in_width"], f["w_width"], f["acc_width"]
    multiplier = 0.0 if min(a, w) > LUT_MULTIPLY_MAX_WIDTH else a * w
    terms = {
        "finn_multiplier_luts": simd * multiplier,
        "finn_adder_tree_luts": (simd - 1) * (a + w + math.log2(max(simd, 1))),
        "finn_accumulator_luts": acc,
        "finn_threshold_luts": threshold_count * acc,
    }
    terms["finn_lut"] = 300 + 1.1 * pe * sum(terms.values())
    return terms


def node_features(node: Node) -> dict[str, float]:
    """A node's stored features with the derived ones: what every model reads."""
    from .memories import memory_features

    return {**node.features, **derived_features(node.op, node.features), **memory_features(node)}


def network_graph(plan, name: str | None = None) -> DesignGraph:
    """A compiled network's dataflow plan (hls.rtl.DataflowPlan) as a chain graph of its units."""
    from hardwire.hls.rtl import network_cycles

    from .memories import inventory

    nodes = []
    width = None
    for stage in plan.stages:
        fifo_width = width if stage.fifo_depth else 0
        features = unit_features(stage.kind, stage.params, stage.fifo_depth, fifo_width or 0)
        unit = None
        if stage.kind == "mvu":
            unit = stage.build()
            unit._MustUse__silence = True  # built for its weights and thresholds only, never elaborated
        memories = [m.to_dict() for m in inventory(stage.kind, features, unit)]
        nodes.append(Node(stage.name, stage.kind, features, memories))
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
    from .memories import inventory

    features = _numeric(params_dict(params))
    memories = None
    if block_name == "mvu":  # the standalone unit's seeded random content sets its ROM widths
        from hardwire.gen.mvu import build_standalone

        unit = build_standalone(params)
        unit._MustUse__silence = True  # built for its content only, never elaborated
        memories = [m.to_dict() for m in inventory("mvu", features, unit)]
    return DesignGraph(
        "block", params_dict(params).get("name") or block_name, [Node(block_name, block_name, features, memories)]
    )


# ---------------------------------------------------------------------------------------------------------------
# Fixed-length features for the trees


MEMORY_TOTALS = tuple(
    f"{target}.{key}"
    for target in ("ecp5", "xilinx")
    for key in ("bram", "lutram", "lutram_bits", "logic_memory_bits", "logic_rom_bits", "memory_mux_bits")
)


def flat_features(graph: DesignGraph) -> dict[str, float]:
    """Per unit kind: node count and the sum and max of every node feature; plus graph-wide totals."""
    out: dict[str, float] = {"nodes": float(len(graph.nodes)), f"kind={graph.kind}": 1.0}
    per_node = [node_features(node) for node in graph.nodes]
    for node, features in zip(graph.nodes, per_node):
        prefix = node.op
        out[f"{prefix}.count"] = out.get(f"{prefix}.count", 0.0) + 1.0
        for key, value in features.items():
            s, m = f"{prefix}.{key}.sum", f"{prefix}.{key}.max"
            out[s] = out.get(s, 0.0) + value
            out[m] = max(out.get(m, -math.inf), value)
    for key in (
        "lanes",
        "multiplier_bits",
        "weight_bits",
        "threshold_bits",
        "fifo_bits",
        "comparator_bits",
        "buffer_bits",
        "accumulator_bits",
        "dsp_products",
        "lut_product_bits",
        "weight_bram18",
        "threshold_bram18",
        "products",
        "finn_lut",
        "memory_bits",
        "rom_bits",
        *MEMORY_TOTALS,
    ):
        out[f"total.{key}"] = sum(features.get(key, 0.0) for features in per_node)
    return out
