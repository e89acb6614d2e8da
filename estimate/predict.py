"""The estimator: trained surrogates loaded once, a design graph in, resources and Fmax with uncertainty out.

Every number here is an estimate and is labelled so; latency and initiation interval are not estimated: they
come exactly from the schedule models (`DesignGraph.exact`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hardwire.errors import HardwireError, ParameterError
from hardwire.threads import one_torch_thread

from .features import FEATURE_VERSION, DesignGraph
from .models import CAPACITY, FMAX_RANGE_MHZ, LABELS, Encoder, make_gnn, rule_resources, to_pyg
from .train import FMAX_SCALE, WEIGHTS_FORMAT, design_group, unpack_text

DEFAULT_WEIGHTS = Path(__file__).parent / "data" / "surrogate.pt"
INTEGER_LABELS = ("dsp", "bram")


class WeightsError(HardwireError):
    """Weights that cannot be used: missing, corrupt, or trained for another format or dataset."""


@dataclass
class Estimate:
    """Estimated resources (mean and spread per label) and Fmax of one design on one target."""

    target: str
    model: str  # "auto" (per label the better on validation), "gnn", "trees"
    resources: dict[str, float]
    spread: dict[str, float]  # relative: the ensemble's standard deviation of log values
    fmax_mhz: float | None
    fmax_spread: float | None
    per_node: list[dict] = field(default_factory=list)  # GNN only: each unit's share of the total
    exact: dict = field(default_factory=dict)
    unknown_features: list[str] = field(default_factory=list)
    by_rule: list[str] = field(default_factory=list)  # labels given by a generator rule, not learned

    def to_dict(self) -> dict:
        return {
            "estimate": True,
            "target": self.target,
            "model": self.model,
            "resources": self.resources,
            "by_rule": self.by_rule,
            "relative_spread": self.spread,
            "fmax_mhz": self.fmax_mhz,
            "fmax_relative_spread": self.fmax_spread,
            "per_unit": self.per_node,
            "exact": self.exact,
            "unknown_features": self.unknown_features,
        }


class Estimator:
    def __init__(self, weights: dict, path: Path | None = None):
        import lightgbm
        import torch

        if weights.get("format") != WEIGHTS_FORMAT:
            raise WeightsError(
                f"{path}: weights format {weights.get('format')!r}, this hardwire reads "
                f"{WEIGHTS_FORMAT}: retrain with `hardwire dataset train`"
            )
        if weights.get("feature_version", "1") != FEATURE_VERSION:
            raise WeightsError(
                f"{path}: trained on design features version {weights.get('feature_version', '1')}, "
                f"this hardwire computes version {FEATURE_VERSION}: retrain with `hardwire dataset train`"
            )
        self.path = path
        self.dataset_hash = weights["dataset_hash"]
        # per target, the labels a generator rule gives (exact on the training networks; see train.rule_checks)
        self.rules = {target: tuple(labels) for target, labels in (weights.get("rules") or {}).items()}
        self.encoder = Encoder.from_dict(weights["encoder"])
        self.gnn = []
        for state in weights["gnn"]:
            model = make_gnn(self.encoder.node_width)
            model.load_state_dict(state)
            model.eval()
            self.gnn.append(model)
        self.trees = [
            {label: lightgbm.Booster(model_str=unpack_text(packed)) for label, packed in member.items()}
            for member in weights["trees"]
        ]
        self.choice = dict(weights.get("choice") or dict.fromkeys((*LABELS, "fmax"), "gnn"))
        self.calibration = dict(weights.get("calibration") or {})
        self._torch = torch

    @classmethod
    def load(cls, path=None, *, dataset_hash: str | None = None) -> Estimator:
        """Weights saved by `hardwire dataset train` (torch.load with weights_only=True: no code is run).
        With `dataset_hash`, weights trained on another dataset are refused."""
        import torch

        path = Path(path) if path is not None else DEFAULT_WEIGHTS
        if not path.is_file():
            raise WeightsError(f"{path}: no surrogate weights there (train them: hardwire dataset train)")
        try:
            weights = torch.load(path, weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure means unusable weights
            raise WeightsError(f"{path}: not readable surrogate weights ({type(error).__name__})") from None
        if not isinstance(weights, dict):
            raise WeightsError(f"{path}: not surrogate weights")
        if dataset_hash is not None and weights.get("dataset_hash") != dataset_hash:
            raise WeightsError(
                f"{path}: trained on dataset {weights.get('dataset_hash')}, not {dataset_hash}: "
                "retrain with `hardwire dataset train`"
            )
        return cls(weights, path)

    # -- predictions -------------------------------------------------------------------------------------------

    def _check_target(self, target: str) -> None:
        if target not in self.encoder.targets:
            raise ParameterError("target", target, "one of " + ", ".join(self.encoder.targets))

    def gnn_batch(self, graphs: list[DesignGraph], target: str) -> tuple[np.ndarray, np.ndarray]:
        """Per ensemble member: log1p resources (M, G, L) and log Fmax (M, G)."""
        from torch_geometric.data import Batch

        self._check_target(target)
        batch = Batch.from_data_list([to_pyg(self.encoder, g, target) for g in graphs])
        res, fmax = [], []
        with self._torch.no_grad(), one_torch_thread():
            for model in self.gnn:
                log_res, log_delay = model(batch.x, batch.edge_index, batch.batch, batch.num_graphs)
                res.append(log_res.numpy())
                fmax.append((FMAX_SCALE - log_delay).numpy())
        return np.stack(res), np.stack(fmax)

    def tree_batch(self, graphs: list[DesignGraph], target: str) -> tuple[np.ndarray, np.ndarray]:
        self._check_target(target)
        x = np.stack([self.encoder.flat_vector(g, target) for g in graphs])
        res = np.stack(
            [
                np.stack(
                    [m[label].predict(x, num_threads=1) if label in m else np.zeros(len(graphs)) for label in LABELS],
                    axis=-1,
                )
                for m in self.trees
            ]
        )
        fmax = np.stack(
            [m["fmax"].predict(x, num_threads=1) if "fmax" in m else np.full(len(graphs), np.nan) for m in self.trees]
        )
        return res, fmax

    def predict_batch(self, graphs: list[DesignGraph], target: str, model: str = "auto") -> list[dict]:
        """Mean resources (clamped to the part, DSP/BRAM rounded to whole blocks) and Fmax per design. `auto`
        takes each label from the surrogate that was better on the validation designs (see train.choose_models)."""
        if model == "auto":
            gnn = self.predict_batch(graphs, target, "gnn")
            trees = self.predict_batch(graphs, target, "trees")
            out = []
            for graph, g, t in zip(graphs, gnn, trees):
                group = design_group(graph)
                key = {
                    label: f"{label}@{group}" if f"{label}@{group}" in self.choice else label
                    for label in (*LABELS, "fmax")
                }
                pick = {label: (g if self.choice.get(key[label], "gnn") == "gnn" else t) for label in (*LABELS, "fmax")}
                # the ensemble's spread alone is too narrow (bagged members agree on what none of them saw): the
                # chosen model's RMS log error on the validation designs is combined with it
                widen = lambda spread, label: float(np.hypot(spread, self.calibration.get(key[label], 0.0)))  # noqa: E731
                result = {
                    "resources": {label: pick[label]["resources"][label] for label in LABELS},
                    "spread": {label: widen(pick[label]["spread"][label], label) for label in LABELS},
                    "fmax_mhz": pick["fmax"]["fmax_mhz"],
                    "fmax_spread": (
                        widen(pick["fmax"]["fmax_spread"], "fmax") if pick["fmax"]["fmax_spread"] is not None else None
                    ),
                    "by_rule": [],
                }
                for label, value in rule_resources(graph, target, self.rules.get(target, ())).items():
                    result["resources"][label] = min(value, CAPACITY.get(target, {}).get(label, value))
                    result["spread"][label] = 0.0
                    result["by_rule"].append(label)
                out.append(result)
            return out
        res, fmax = self.gnn_batch(graphs, target) if model == "gnn" else self.tree_batch(graphs, target)
        out = []
        cap = CAPACITY.get(target, dict.fromkeys(LABELS, float("inf")))
        for g in range(len(graphs)):
            values = {}
            for i, label in enumerate(LABELS):
                value = float(np.clip(np.expm1(res[:, g, i].mean()), 0.0, cap[label]))
                values[label] = float(round(value)) if label in INTEGER_LABELS else value
            f = float(np.clip(np.exp(fmax[:, g].mean()), *FMAX_RANGE_MHZ)) if np.isfinite(fmax[:, g]).all() else None
            out.append(
                {
                    "resources": values,
                    "spread": {label: float(res[:, g, i].std()) for i, label in enumerate(LABELS)},
                    "fmax_mhz": f,
                    "fmax_spread": float(fmax[:, g].std()) if f is not None else None,
                }
            )
        return out

    def estimate(self, graph: DesignGraph, target: str, model: str = "auto") -> Estimate:
        if model not in ("auto", "gnn", "trees"):
            raise ParameterError("model", model, "auto, gnn or trees")
        result = self.predict_batch([graph], target, model)[0]
        per_node = []
        if model != "trees":
            # the GNN's per-unit terms, scaled so that they add up to the total reported for each label
            per_node = self._per_node(graph, target)
            for label in LABELS:
                raw = sum(unit[label] for unit in per_node)
                scale = result["resources"][label] / raw if raw > 0 else 0.0
                for unit in per_node:
                    unit[label] *= scale
            # a label given by rule is split over the units by the same rule (a unit without memories has no BRAM)
            for label in result.get("by_rule", []):
                for unit, node in zip(per_node, graph.nodes):
                    unit[label] = rule_resources(_one_node(graph, node), target, (label,)).get(label, unit[label])
        return Estimate(
            target,
            model,
            result["resources"],
            result["spread"],
            result["fmax_mhz"],
            result["fmax_spread"],
            per_node,
            dict(graph.exact),
            self.encoder.unknown(graph),
            result.get("by_rule", []),
        )

    def _per_node(self, graph: DesignGraph, target: str) -> list[dict]:
        """Each unit's share of the GNN's sum readout, averaged over the ensemble."""
        data = to_pyg(self.encoder, graph, target)
        terms = []
        with self._torch.no_grad(), one_torch_thread():
            for model in self.gnn:
                z, _ = model.node_terms(data.x, data.edge_index)
                terms.append(np.exp(z.clamp(max=20.0).numpy()))
        mean = np.mean(terms, axis=0)
        return [
            {"name": node.name, "op": node.op, **{label: float(mean[i, j]) for j, label in enumerate(LABELS)}}
            for i, node in enumerate(graph.nodes)
        ]


def _one_node(graph: DesignGraph, node) -> DesignGraph:
    """One unit of a design as a design of the same kind (for the per-unit share of a rule)."""
    return DesignGraph(graph.kind, node.name, [node])


def folding_cost(estimator: Estimator, graph, target: str, model: str = "auto"):
    """A `lut_cost` for hls.rtl.solve_folding: lay the network out with a trial folding and estimate its LUTs."""
    from hardwire.hls import rtl

    from .features import network_graph

    def cost(folds) -> float:
        trial = rtl.FoldingResult(dict(folds), {}, None, True, "", 0)
        design = network_graph(rtl.plan_dataflow(graph, trial), graph.name)
        return estimator.predict_batch([design], target, model)[0]["resources"]["lut"]

    return cost


def compare(estimate: dict, measured: dict, fmax_mhz: float | None = None) -> dict:
    """Estimate next to measurement: relative error per label ((estimate - measured) / measured)."""
    out = {}
    for label, value in estimate["resources"].items():
        actual = measured.get(label)
        if actual is None:
            continue
        out[label] = {
            "estimate": value,
            "measured": actual,
            "relative_error": (value - actual) / actual if actual else (0.0 if value == 0 else None),
        }
    if fmax_mhz and estimate.get("fmax_mhz"):
        out["fmax_mhz"] = {
            "estimate": estimate["fmax_mhz"],
            "measured": fmax_mhz,
            "relative_error": (estimate["fmax_mhz"] - fmax_mhz) / fmax_mhz,
        }
    return out
