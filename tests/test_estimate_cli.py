"""`hardwire estimate` with the shipped weights: zoo networks and blocks in one call, exact latency/II from the
schedule models, and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest
import torch

from hardwire.estimate.models import CAPACITY, LABELS
from hardwire.estimate.predict import DEFAULT_WEIGHTS


def hardwire(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "hardwire.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_shipped_weights_load_without_code_and_name_their_dataset():
    weights = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    assert len(weights["dataset_hash"]) == 16 and weights["train_rows"] >= 100
    assert len(weights["gnn"]) == len(weights["trees"]) >= 2


def test_estimate_of_a_zoo_network_lists_every_unit_and_the_exact_schedule(tmp_path):
    from hardwire.hls import frontend, rtl, zoo

    done = hardwire(
        "estimate", "zoo:mlp4", "--target", "ecp5", "--fold", "Gemm_0=4,8", "--json", str(tmp_path / "e.json")
    )
    assert done.returncode == 0, done.stderr
    assert "ESTIMATE" in done.stdout
    data = json.loads((tmp_path / "e.json").read_text())
    graph = frontend.build_graph(frontend.load_model(zoo.build("mlp4").onnx_path), "mlp4")
    plan = rtl.plan_dataflow(graph, rtl.solve_folding(graph, folds={"Gemm_0": (4, 8)}))
    cycles = rtl.network_cycles(plan)
    assert data["exact"] == {
        "latency_cycles": cycles["latency_cycles"],
        "initiation_interval": cycles["initiation_interval"],
    }
    assert [unit["name"] for unit in data["per_unit"]] == [stage.name for stage in plan.stages]
    total = data["resources"]
    assert all(0 < total[label] <= CAPACITY["ecp5"][label] for label in ("lut", "ff"))
    assert sum(unit["lut"] for unit in data["per_unit"]) == pytest.approx(total["lut"], rel=0.02, abs=2)
    assert data["estimate"] is True and data["fmax_mhz"] > 0


def test_estimate_of_a_block_with_parameters_and_both_models(tmp_path):
    for model in ("gnn", "trees"):
        done = hardwire(
            "estimate",
            "systolic",
            "--param",
            "rows=4",
            "--param",
            "cols=4",
            "--target",
            "xilinx",
            "--model",
            model,
            "--json",
            str(tmp_path / f"{model}.json"),
        )
        assert done.returncode == 0, done.stderr
        data = json.loads((tmp_path / f"{model}.json").read_text())
        assert set(data["resources"]) == set(LABELS) and data["resources"]["lut"] > 0
        assert data["resources"]["dsp"] == int(data["resources"]["dsp"])


@pytest.mark.parametrize(
    "args, code, words",
    [
        (("systolic", "--target", "virtex2"), 2, "target='virtex2'"),
        (("systolic", "--param", "rows=many"), 2, "rows='many'"),
        (("systolic", "--param", "depth=3"), 2, "NAME=VALUE"),
        (("tpu", "--target", "ecp5"), 2, "design='tpu'"),
        (("systolic", "--param", "rows=0"), 2, "rows=0"),
        (("zoo:mlp4", "--fold", "dense0=4,8"), 2, "fold='dense0'"),
    ],
)
def test_bad_input_is_one_line(args, code, words):
    done = hardwire("estimate", *args)
    assert done.returncode == code and words in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_unreadable_model_and_foreign_weights_are_one_line(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    done = hardwire("estimate", str(tmp_path / "bad.onnx"))
    assert done.returncode == 2 and "bad.onnx" in done.stderr and done.stderr.count("\n") == 1
    weights = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    torch.save({**weights, "format": 0}, tmp_path / "old.pt")
    done = hardwire("estimate", "systolic", "--weights", str(tmp_path / "old.pt"))
    assert done.returncode == 1 and "retrain" in done.stderr and done.stderr.count("\n") == 1
