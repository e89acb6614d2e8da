"""The surrogates: a GNN over the design graph, boosted trees on flat features, and FINN-R's analytic formulas.

GNN (torch-geometric): node features (a unit's parameters, log-scaled and standardized, its op and the target
one-hot) -> a linear embedding -> three GATv2 layers over the stream edges (both directions) with residuals ->
per node and label a log-contribution z. The design's resource count is the sum of the nodes' contributions,
`log1p(sum exp z)`: a sum-over-nodes readout, so a deeper network is the sum of more units and the model
extrapolates in depth (wa-hls4ml's finding for its ASIC surrogate), and the per-node terms are a per-layer
breakdown for free. Fmax uses a max readout of per-node delays instead (the slowest unit sets the clock).
An ensemble of independently initialised members gives the uncertainty (spread of their log predictions).

Trees (LightGBM): one regressor per label on log1p(label) over `features.flat_features` plus the target
one-hot; an ensemble of bagged members for the spread.

FINN-R (Blott et al., TRETS 2018): per matrix-vector unit LUT = 300 + 1.1 x PE x (SIMD x multiplier LUTs +
adder tree + accumulator + thresholds); BRAM from the weight memory's geometry; DSP = PE x SIMD where an
operand is wider than LUT multiplication handles. Only networks have a formula; blocks get none.
"""

from __future__ import annotations


import numpy as np

from .features import bram18_tiles, node_features
from .memories import predicted_bram, predicted_lutram

LABELS = ("lut", "ff", "dsp", "bram", "lutram")
TARGET_NAMES = ("ice40", "ecp5", "xilinx", "xilinx-us", "xilinx-usp")

# Device capacity per target: predictions are clamped to [0, capacity] (wa-hls4ml saw unclamped predictions
# explode). The parts hardwire places on (iCE40 UP5K, ECP5-85F) and, for the out-of-context Xilinx targets,
# the largest part of the family (xc7vx1140t, xcvu440, xcvu19p): RAMB18-equivalent counts.
CAPACITY = {
    "ice40": {"lut": 5280, "ff": 5280, "dsp": 8, "bram": 34, "lutram": 0},
    "ecp5": {"lut": 83640, "ff": 83640, "dsp": 312, "bram": 208, "lutram": 20910},
    "xilinx": {"lut": 712000, "ff": 1424000, "dsp": 3360, "bram": 3760, "lutram": 267000},
    "xilinx-us": {"lut": 2533000, "ff": 5066000, "dsp": 2880, "bram": 5040, "lutram": 459000},
    "xilinx-usp": {"lut": 4086000, "ff": 8172000, "dsp": 3840, "bram": 4320, "lutram": 1000000},
}
FMAX_RANGE_MHZ = (1.0, 1000.0)


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


# ---------------------------------------------------------------------------------------------------------------
# Feature encoding shared by the GNN and the trees


class Encoder:
    """Fixed vocabularies (node feature names, ops, flat feature names) learned from the training rows, and
    the standardization of node features. Serializes to plain lists/dicts (weights_only-safe)."""

    def __init__(self, node_features, ops, flat_names, mean=None, std=None, targets=TARGET_NAMES):
        self.targets = list(targets)
        self.node_features = list(node_features)
        self.ops = list(ops)
        self.flat_names = list(flat_names)
        self.mean = np.asarray(mean if mean is not None else np.zeros(len(self.node_features)), dtype=np.float32)
        self.std = np.asarray(std if std is not None else np.ones(len(self.node_features)), dtype=np.float32)
        self._index = {name: i for i, name in enumerate(self.node_features)}
        self._op_index = {name: i for i, name in enumerate(self.ops)}
        self._flat_index = {name: i for i, name in enumerate(self.flat_names)}

    @classmethod
    def fit(cls, graphs, targets=()) -> Encoder:
        """Vocabularies from training graphs; `targets` beyond hardwire's own (e.g. wa-hls4ml's parts) are added."""
        from .features import flat_features, node_features

        names, ops, flat = set(), set(), set()
        for graph in graphs:
            for node in graph.nodes:
                names.update(node_features(node))
                ops.add(node.op)
            flat.update(flat_features(graph))
        encoder = cls(
            sorted(names), sorted(ops), sorted(flat), targets=[*TARGET_NAMES, *sorted(set(targets) - set(TARGET_NAMES))]
        )
        raw = np.concatenate([encoder._raw_nodes(g) for g in graphs])
        encoder.mean = raw.mean(axis=0).astype(np.float32)
        encoder.std = np.maximum(raw.std(axis=0), 1e-3).astype(np.float32)
        return encoder

    def to_dict(self) -> dict:
        return {
            "node_features": self.node_features,
            "ops": self.ops,
            "flat_names": self.flat_names,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "targets": self.targets,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Encoder:
        return cls(
            data["node_features"],
            data["ops"],
            data["flat_names"],
            data["mean"],
            data["std"],
            data.get("targets", TARGET_NAMES),
        )

    def _raw_nodes(self, graph) -> np.ndarray:
        from .features import node_features

        x = np.zeros((len(graph.nodes), len(self.node_features)), dtype=np.float32)
        for i, node in enumerate(graph.nodes):
            for key, value in node_features(node).items():
                j = self._index.get(key)
                if j is not None:
                    x[i, j] = value
        return signed_log(x)

    def unknown(self, graph) -> list[str]:
        """Ops and node features this encoder has never seen (the model cannot use them)."""
        missing = {n.op for n in graph.nodes if n.op not in self._op_index}
        missing |= {k for n in graph.nodes for k in n.features if k not in self._index}
        return sorted(missing)

    def node_matrix(self, graph, target: str) -> np.ndarray:
        x = (self._raw_nodes(graph) - self.mean) / self.std
        op = np.zeros((len(graph.nodes), len(self.ops)), dtype=np.float32)
        for i, node in enumerate(graph.nodes):
            j = self._op_index.get(node.op)
            if j is not None:
                op[i, j] = 1.0
        tgt = np.zeros((len(graph.nodes), len(self.targets)), dtype=np.float32)
        tgt[:, self.targets.index(target)] = 1.0
        return np.concatenate([x, op, tgt], axis=1)

    @property
    def node_width(self) -> int:
        return len(self.node_features) + len(self.ops) + len(self.targets)

    def flat_vector(self, graph, target: str) -> np.ndarray:
        from .features import flat_features

        v = np.zeros(len(self.flat_names) + len(self.targets), dtype=np.float64)
        for key, value in flat_features(graph).items():
            j = self._flat_index.get(key)
            if j is not None:
                v[j] = value
        v[len(self.flat_names) + self.targets.index(target)] = 1.0
        return v


# ---------------------------------------------------------------------------------------------------------------
# GNN


def _torch():
    import torch
    import torch_geometric  # noqa: F401 - fail here, with the import error, if it is missing

    return torch


def make_gnn(in_width: int, hidden: int = 64, layers: int = 3, heads: int = 2):
    torch = _torch()
    from torch_geometric.nn import GATv2Conv
    from torch_geometric.utils import scatter

    class DesignGNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Sequential(
                torch.nn.Linear(in_width, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden)
            )
            self.convs = torch.nn.ModuleList(
                GATv2Conv(hidden, hidden // heads, heads=heads, add_self_loops=True) for _ in range(layers)
            )
            self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(hidden) for _ in range(layers))
            self.resource_head = torch.nn.Sequential(
                torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, len(LABELS))
            )
            self.delay_head = torch.nn.Sequential(
                torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 1)
            )

        def node_terms(self, x, edge_index):
            h = self.embed(x)
            for conv, norm in zip(self.convs, self.norms):
                h = norm(h + torch.nn.functional.silu(conv(h, edge_index)))
            return self.resource_head(h), self.delay_head(h).squeeze(-1)

        def forward(self, x, edge_index, batch, graphs: int):
            z, delay = self.node_terms(x, edge_index)
            z = z.clamp(max=20.0)
            # log(1 + sum_nodes exp z), computed stably per graph and label
            top = scatter(z, batch, dim=0, dim_size=graphs, reduce="max").clamp(min=0.0)
            total = scatter(torch.exp(z - top[batch]), batch, dim=0, dim_size=graphs, reduce="sum")
            log_resources = top + torch.log(total + torch.exp(-top))
            log_delay = scatter(delay, batch, dim=0, dim_size=graphs, reduce="max")
            return log_resources, log_delay

    return DesignGNN()


def to_pyg(encoder: Encoder, graph, target: str):
    torch = _torch()
    from torch_geometric.data import Data

    x = torch.from_numpy(encoder.node_matrix(graph, target))
    edges = [(a, b) for a, b in graph.edges] + [(b, a) for a, b in graph.edges]
    edge_index = (
        torch.tensor(edges, dtype=torch.long).t().contiguous() if edges else torch.zeros((2, 0), dtype=torch.long)
    )
    return Data(x=x, edge_index=edge_index)


# ---------------------------------------------------------------------------------------------------------------
# Rules: what a formula gives exactly, so that no model has to learn it


# Block families that build no product on a DSP block (bit-serial and shift-add datapaths, buffers, converters)
MULTIPLIER_FREE_BLOCKS = ("bitmod", "bitserial", "bitvert", "dwc", "maxpool", "swg")


def _rule_dsp(graph) -> float | None:
    """DSP blocks by rule: a network's or an MVU block's `dsp_products`, a sparse block's `multipliers` (one
    multiplier per DSP block), 0 for a multiplier-free family; None where no rule applies."""
    if graph.kind == "network" or (graph.kind == "block" and all(n.op == "mvu" for n in graph.nodes)):
        return float(sum(node_features(node).get("dsp_products", 0.0) for node in graph.nodes))
    if graph.kind == "block" and len(graph.nodes) == 1:
        node = graph.nodes[0]
        if node.op in MULTIPLIER_FREE_BLOCKS:
            return 0.0
        if node.op == "sparse" and "multipliers" in node.features:
            return float(node.features["multipliers"])
    return None


def rule_resources(graph, target: str | None = None, rules=("dsp", "bram", "lutram")) -> dict[str, float]:
    """Labels fixed by the generators' own rules: DSP for a compiled network and the block families `_rule_dsp`
    knows, BRAM for a network or a block whose memories the inventory covers (memories.COVERED_BLOCKS).

    DSP: gen/mvu builds products with an operand of at most LUT_MULTIPLY_MAX_WIDTH bits from LUTs and yosys maps
    each wider product to one DSP, and no other network unit multiplies, so DSP = the sum of the units'
    `dsp_products`. BRAM (with a `target` the memory rule covers): the sum over the network's memories of the block
    RAMs yosys' memory_libmap gives each (estimate/memories.py). `rules` picks which; training keeps a rule only
    where it is exact on every training network of the target (see train.rule_checks), and bench/estimate.py
    checks both against every network in the dataset."""
    out = {}
    if "dsp" in rules:
        dsp = _rule_dsp(graph)
        if dsp is not None:
            out["dsp"] = dsp
    for label, rule in (("bram", predicted_bram), ("lutram", predicted_lutram)):
        if label in rules and target is not None:
            value = rule(graph, target)
            if value is not None:
                out[label] = float(value)
    return out


# ---------------------------------------------------------------------------------------------------------------
# FINN-R analytic baseline


def finn_r(graph) -> dict[str, float] | None:
    """FINN-R's per-unit formulas summed over the network's matrix-vector units (None for blocks)."""
    if graph.kind != "network":
        return None
    lut = bram = dsp = 0.0
    for node in graph.nodes:
        if node.op != "mvu":
            continue
        f = node_features(node)
        pe, simd = f["pe"], f["simd"]
        uses_dsp = min(f["in_width"], f["w_width"]) > 4
        lut += f["finn_lut"]  # features.finn_r_terms: 300 + 1.1 PE (multipliers + tree + acc + thr)
        dsp += pe * simd if uses_dsp else 0
        depth, width = f["weight_depth"], simd * f["w_width"]
        if depth * width > 1024:  # FINN maps small memories to LUTs
            bram += pe * bram18_tiles(depth, width)
    return {"lut": lut, "dsp": dsp, "bram": bram}
