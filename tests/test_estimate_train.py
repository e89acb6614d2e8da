"""The surrogates learn a known function: a synthetic dataset whose resources are an exact sum over units.

No synthesis here: rows are made in the dataset's own schema with labels from a formula, so training, the
encoder, the sum readout and the estimator's loading, clamping and rounding are checked against numbers we know.
"""

import numpy as np
import pytest
import torch

from hardwire.errors import ParameterError
from hardwire.estimate.features import DesignGraph, Node
from hardwire.estimate.models import CAPACITY
from hardwire.estimate.predict import Estimator, WeightsError
from hardwire.estimate.train import examples, split_of, train


def _true_resources(nodes):
    lut = sum(12 * n["pe"] * n["simd"] * n["bits"] + 40 for n in nodes)
    ff = sum(8 * n["pe"] * n["bits"] + 20 for n in nodes)
    dsp = sum(n["pe"] * n["simd"] if n["bits"] > 6 else 0 for n in nodes)
    return {"lut": lut, "ff": ff, "dsp": dsp, "bram": sum(n["pe"] for n in nodes) // 4, "lutram": len(nodes)}


def synthetic_rows(count: int, seed: int, depth=(1, 4), split="small"):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        nodes = [
            {
                "pe": int(rng.choice([1, 2, 4, 8])),
                "simd": int(rng.choice([1, 2, 4, 8, 16])),
                "bits": int(rng.integers(2, 9)),
            }
            for _ in range(int(rng.integers(depth[0], depth[1] + 1)))
        ]
        graph = DesignGraph(
            "network",
            f"n{i}",
            [Node(f"u{j}", "mvu", {k: float(v) for k, v in n.items()}) for j, n in enumerate(nodes)],
            [(j, j + 1) for j in range(len(nodes) - 1)],
            {"initiation_interval": 10},
        )
        h = f"{seed:04x}{i:012x}"
        h = f"{int(rng.integers(0, 2**31)):08x}{int(rng.integers(0, 2**31)):08x}"
        fmax = 300.0 / (1 + max(n["simd"] for n in nodes) / 8)
        rows.append(
            {
                "key": f"{h}:ecp5",
                "design_hash": h,
                "split": split,
                "stage": "synth",
                "target": "ecp5",
                "design": graph.to_dict(),
                "labels": _true_resources(nodes),
                "fmax_mhz": None,
                "error": None,
            }
        )
        rows.append(
            {
                "key": f"{h}:fmax-ecp5",
                "design_hash": h,
                "split": split,
                "stage": "fmax",
                "target": "ecp5",
                "design": graph.to_dict(),
                "labels": None,
                "fmax_mhz": fmax,
                "error": None,
            }
        )
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rows = synthetic_rows(320, 1) + synthetic_rows(30, 2, depth=(6, 8), split="large")
    weights = train(rows, ensemble=2, epochs=100, log=lambda m: None)
    path = tmp_path_factory.mktemp("w") / "surrogate.pt"
    torch.save(weights, path)
    return rows, weights, Estimator.load(path)


def _relative_errors(estimator, rows, split, model):
    exs = [ex for ex in examples(rows) if ex.split == split and ex.labels]
    pred = estimator.predict_batch([ex.graph for ex in exs], "ecp5", model)
    return np.array([abs(p["resources"]["lut"] - ex.labels["lut"]) / ex.labels["lut"] for p, ex in zip(pred, exs)])


def test_splits_are_by_design_and_cover_train_valid_test():
    rows = synthetic_rows(300, 3)
    splits = {}
    for row in rows:
        splits.setdefault(row["design_hash"], set()).add(split_of(row))
    assert all(len(s) == 1 for s in splits.values())
    counts = {s: sum(1 for v in splits.values() if s in v) for s in ("train", "valid", "test")}
    assert counts["train"] > 150 and counts["valid"] > 5 and counts["test"] > 30


def test_gnn_learns_a_sum_over_units_on_held_out_designs(trained):
    rows, _, estimator = trained
    errors = _relative_errors(estimator, rows, "test", "gnn")
    assert np.median(errors) < 0.10, np.median(errors)


def test_sum_readout_extrapolates_to_deeper_designs_than_trained(trained):
    rows, _, estimator = trained
    errors = _relative_errors(estimator, rows, "large", "gnn")
    assert np.median(errors) < 0.25, np.median(errors)


def test_trees_learn_the_function_far_better_than_a_constant(trained):
    # flat features (sums and maxima per unit kind) cannot express a sum of per-unit products exactly: the trees
    # must still beat the best constant guess by a wide margin
    rows, _, estimator = trained
    trees = np.median(_relative_errors(estimator, rows, "test", "trees"))
    luts = np.array([ex.labels["lut"] for ex in examples(rows) if ex.split == "test" and ex.labels])
    constant = np.median(np.abs(np.median(luts) - luts) / luts)
    assert trees < 0.5 * constant, (trees, constant)


def test_per_unit_terms_add_up_to_the_total_and_predictions_are_clamped(trained):
    rows, _, estimator = trained
    ex = next(ex for ex in examples(rows) if ex.split == "test" and len(ex.graph.nodes) >= 3)
    est = estimator.estimate(ex.graph, "ecp5")
    assert est.resources["lut"] == pytest.approx(sum(u["lut"] for u in est.per_node), rel=0.02, abs=2)
    assert est.exact == {"initiation_interval": 10}
    huge = DesignGraph("network", "huge", [Node("u", "mvu", {"pe": 4096.0, "simd": 4096.0, "bits": 64.0})])
    big = estimator.estimate(huge, "ice40")
    assert all(0 <= big.resources[k] <= CAPACITY["ice40"][k] for k in big.resources)
    assert big.resources["dsp"] == int(big.resources["dsp"]) and big.resources["bram"] == int(big.resources["bram"])


def test_bad_target_weights_and_dataset_are_one_line_errors(trained, tmp_path):
    rows, weights, estimator = trained
    graph = examples(rows)[0].graph
    with pytest.raises(ParameterError, match="target='virtex2'"):
        estimator.estimate(graph, "virtex2")
    with pytest.raises(WeightsError, match="no surrogate weights"):
        Estimator.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="not readable"):
        Estimator.load(tmp_path / "junk.pt")
    path = tmp_path / "w.pt"
    torch.save(weights, path)
    with pytest.raises(WeightsError, match="trained on dataset"):
        Estimator.load(path, dataset_hash="0123456789abcdef")
    torch.save({**weights, "format": 99}, path)
    with pytest.raises(WeightsError, match="format 99"):
        Estimator.load(path)


def test_wa_hls4ml_records_train_beside_our_rows_and_get_their_own_target(tmp_path):
    import gzip
    import json
    from pathlib import Path

    from hardwire.estimate.train import load_rows

    records = json.loads((Path(__file__).parent / "data" / "wahls4ml_sample.json").read_text())
    copies = []
    for i in range(30):  # enough rows for a validation share; ids keep them distinct
        for record in records:
            copies.append(
                {
                    **record,
                    "meta_data": {
                        **record.get("meta_data", {}),
                        "uuid": f"{i}-{record.get('meta_data', {}).get('uuid')}",
                    },
                }
            )
    path = tmp_path / "wa.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in copies)
    store = tmp_path / "ours.jsonl.gz"
    from hardwire.estimate.dataset import RowStore

    RowStore(store).append(synthetic_rows(40, 5))
    rows = load_rows([store], [path])
    targets = {row["target"] for row in rows}
    assert "ecp5" in targets and any(t.startswith("hls4ml:") for t in targets)
    weights = train(rows, ensemble=1, epochs=2, log=lambda m: None)
    torch.save(weights, tmp_path / "w.pt")
    estimator = Estimator.load(tmp_path / "w.pt")
    hls_target = next(t for t in targets if t.startswith("hls4ml:"))
    wa = next(row for row in rows if row["target"] == hls_target)
    from hardwire.estimate.features import DesignGraph

    result = estimator.estimate(DesignGraph.from_dict(wa["design"]), hls_target)
    assert result.resources["lut"] >= 0 and hls_target in estimator.encoder.targets
