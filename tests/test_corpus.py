"""The corpus of real architectures (hls/corpus.py: MLPerf Tiny's ResNet-8, DS-CNN and anomaly autoencoder as
Brevitas modules, exported with export_qonnx): the integer golden model equals qonnx' execution on grid inputs
with the extremes, the RTL back end's Verilator simulation is bit-exact against qonnx and every handshake lands
on the composed schedule model's cycle (both branches of every residual block included), and the hls4ml back end
either C-simulates exactly or refuses with one line naming the node. The scaled-down networks run by default,
the published-size ones are marked slow. Also the front end's depthwise and average-pool lowering on small
hand-made networks, and its one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

brevitas_nn = pytest.importorskip("brevitas.nn", reason="brevitas is a dependency: pip install -e .")
from brevitas.quant import Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint
from hardwire.hls import corpus, frontend, rtl
from hardwire.hls.compile import CompileOptions, compile_model, same_bits, verification_inputs
from hardwire.hls.graph import DepthwiseLayer, run_integer

from hardwire.cli import main
from hardwire.errors import ModelError

TINY = [name for name, spec in corpus.SPECS.items() if not spec.slow]
FULL = [name for name, spec in corpus.SPECS.items() if spec.slow]


def _golden_equals_qonnx(path, x):
    model = frontend.load_model(path)
    graph = frontend.build_graph(model, "t")
    reference = frontend.qonnx_execute(model, x)
    ours = frontend.model_output(graph, run_integer(graph, frontend.quantize_input(graph, x)))
    assert ours.shape == reference.shape
    differ = same_bits(ours, reference) == 0
    assert not differ.any(), f"{differ.sum()} outputs differ from qonnx, max {np.abs(ours - reference).max()}"
    assert len(np.unique(reference)) > reference.size // 10  # the random network is not degenerate
    return graph


def _rtl_equals_qonnx(name, tmp_path, n):
    spec = corpus.get_spec(name)
    report = compile_model(
        corpus.export(name),
        tmp_path / name,
        CompileOptions(synthesize=False, n_random=n, fps=spec.fps()),
        progress=lambda _: None,
    )
    sim = report["simulation"]
    assert sim["inferences"] == n and sim["bit_exact_vs_golden"]
    assert sim["rtl_vs_qonnx"]["mismatches"] == 0 and report["golden_vs_qonnx"]["mismatches"] == 0
    assert sim["timing_matches_model"] is True and sim["stalls_case_ok"] and sim["flood_case_ok"]
    return report


@pytest.mark.parametrize("name", TINY + [pytest.param(n, marks=pytest.mark.slow) for n in FULL])
def test_corpus_golden_model_equals_qonnx_on_grid_inputs_with_extremes(name):
    path = corpus.export(name)
    graph = frontend.build_graph(frontend.load_model(path), name)
    x = verification_inputs(graph, 24, seed=3)
    assert x.min() == graph.input.dtype.min * graph.input.scale and x.max() == graph.input.dtype.max * graph.input.scale
    graph = _golden_equals_qonnx(path, x)
    kinds = [layer.kind for layer in graph.layers]
    if name.startswith("resnet8"):
        assert kinds == ["conv", "residual", "residual", "residual", "depthwise", "dense"]
        assert [len(block.shortcut) for block in graph.layers[1:4]] == [0, 1, 1]  # identity, then projections
        assert graph.layers[4].global_pool
    elif name.startswith("dscnn"):
        blocks = corpus.get_spec(name).kwargs["blocks"]
        assert kinds == ["conv"] + ["depthwise", "conv"] * blocks + ["depthwise", "dense"]
        assert graph.layers[1].kernel == 3 and not graph.layers[1].global_pool and graph.layers[-2].global_pool
    else:
        assert set(kinds) == {"dense"} and graph.output_type is None


@pytest.mark.parametrize("name", TINY + [pytest.param(n, marks=pytest.mark.slow) for n in FULL])
def test_corpus_network_is_bit_exact_and_cycle_exact_in_rtl(name, tmp_path):
    """Verilator against qonnx on grid inputs (the extremes first), every handshake of the paced run at the cycle
    of the composed schedule model, and the flooded and stalled runs bit-exact."""
    report = _rtl_equals_qonnx(name, tmp_path, n=4 if corpus.get_spec(name).slow else 6)
    kinds = [stage["kind"] for stage in report["plan"]["stages"]]
    if name.startswith("dscnn"):
        assert kinds.count("vvu") == corpus.get_spec(name).kwargs["blocks"] + 1
    if name.startswith("resnet8"):
        assert kinds.count("residual") == 3 and kinds.count("vvu") == 1
        blocks = [s["params"] for s in report["plan"]["stages"] if s["kind"] == "residual"]
        # the identity shortcut's FIFO holds what the duplicator hands it while the branch computes
        assert blocks[0]["add_b_fifo_depth"] > rtl.MIN_FIFO_DEPTH


def test_residual_fifo_depths_of_resnet8_are_those_the_composed_schedule_needs():

    name = "resnet8-tiny"
    graph = frontend.build_graph(frontend.load_model(corpus.export(name)), name)
    plan = rtl.plan_dataflow(graph, rtl.solve_folding(graph, fps=corpus.get_spec(name).fps()))
    schedule = rtl.network_schedule(plan, rtl.paced_offers(plan, 4, plan.interval))
    units = [s.params for s in plan.stages if s.kind == "residual"]
    needs = [n for n in schedule.inner_needed if n is not None]
    assert len(units) == len(needs) == 3
    for unit, need in zip(units, needs):
        assert unit.a_fifo_depth == max(rtl.MIN_FIFO_DEPTH, need["add_a"])
        assert unit.b_fifo_depth == max(rtl.MIN_FIFO_DEPTH, need["add_b"])


@pytest.mark.parametrize("name", ["dscnn-tiny", "resnet8-tiny"])
def test_hls4ml_back_end_refuses_depthwise_and_average_nodes_in_one_line_naming_the_node(name, tmp_path, capsys):
    pytest.importorskip("hls4ml")
    path = corpus.export(name)
    code = main(["compile", str(path), "--backend", "hls4ml", "-o", str(tmp_path / "h")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    node = "Conv_1" if name == "dscnn-tiny" else "AveragePool_0"
    assert f"node {node!r}" in err[0] and "--backend rtl" in err[0]


def test_autoencoder_hls4ml_csim_is_bit_exact_with_the_float_output_bias_on_the_host(tmp_path):
    pytest.importorskip("hls4ml")
    report = compile_model(
        corpus.export("autoencoder-tiny"),
        tmp_path / "h",
        CompileOptions(backend="hls4ml", n_random=16),
        progress=lambda _: None,
    )
    check = report["csim_vs_qonnx"]
    assert check["outputs"] == 16 * 64 and check["mismatches"] == 0
    assert any("_bias (Add)" in op for op in report["hls4ml"]["host_after"]), report["hls4ml"]


# ---------------------------------------------------------------------------------------------------------------
# The front end's lowering of depthwise convolutions and average pools, on small networks


def _act(bits, signed=False):
    from brevitas.quant import Int8ActPerTensorFixedPoint

    quant = Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint
    return {"act_quant": quant, "bit_width": bits, "return_quant_tensor": False}


def _w(bits):
    return {"weight_quant": Int8WeightPerTensorFixedPoint, "weight_bit_width": bits}


class Pooled(nn.Module):
    """Depthwise 3 x 3 (stride `stride`, padding 1), then an average pool of one of the three kinds, a quantizer
    and a dense head."""

    def __init__(self, pool: str, groups: int = 4, stride: int = 1):
        super().__init__()
        self.pool_kind = pool
        self.inp = brevitas_nn.QuantIdentity(**_act(4, signed=True))
        self.dw = brevitas_nn.QuantConv2d(4, 4, 3, stride=stride, padding=1, groups=groups, bias=False, **_w(4))
        self.bn = nn.BatchNorm2d(4)
        self.relu = brevitas_nn.QuantReLU(**_act(4))
        self.pool = {"avg2": nn.AvgPool2d(2), "global": nn.AdaptiveAvgPool2d(1), "whole": nn.AvgPool2d(6)}.get(pool)
        self.pool_q = brevitas_nn.QuantIdentity(**_act(3))
        self.fc = brevitas_nn.QuantLinear(4 * (9 if pool == "avg2" else 1), 3, bias=False, **_w(4))

    def forward(self, x):
        x = self.relu(self.bn(self.dw(self.inp(x))))
        if self.pool_kind == "mean":
            x = x.mean(dim=(2, 3))
        else:
            x = self.pool(x)
        return self.fc(torch.flatten(self.pool_q(x), 1))


def _export(module, tmp_path, name):
    from brevitas.export import export_qonnx

    torch.manual_seed(0)
    with torch.no_grad():
        module.bn.weight.uniform_(0.5, 1.5)
        module.bn.bias.uniform_(-0.3, 0.3)
        module.bn.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"{name}.onnx"
    export_qonnx(module.eval(), torch.rand(1, 4, 6, 6), export_path=str(path))
    return path


def _images(n, seed=4):
    rng = np.random.default_rng(seed)
    x = (rng.integers(-8, 8, size=(n, 4, 6, 6)) / 8).astype(np.float32)
    x[0], x[1] = -1, 7 / 8
    return x


@pytest.mark.parametrize("pool", ["avg2", "global", "whole", "mean"])
def test_depthwise_conv_and_average_pools_lower_to_depthwise_layers_equal_to_qonnx(pool, tmp_path):
    torch.manual_seed(3)
    graph = _golden_equals_qonnx(_export(Pooled(pool), tmp_path, pool), _images(64))
    dw, avg = graph.layers[0], graph.layers[1]
    assert isinstance(dw, DepthwiseLayer) and dw.weights.shape == (4, 9) and not dw.global_pool
    assert isinstance(avg, DepthwiseLayer) and np.all(np.abs(avg.weights) == 1)
    assert avg.global_pool == (pool != "avg2") and avg.out_shape == ((3, 3, 4) if pool == "avg2" else (1, 1, 4))


@pytest.mark.parametrize("pool, stride", [("avg2", 1), ("global", 2)])
def test_depthwise_and_average_pool_network_is_bit_exact_in_rtl(pool, stride, tmp_path):
    torch.manual_seed(3)
    path = _export(Pooled(pool, stride=stride), tmp_path, pool)
    for fps in (None, 2_000_000):
        report = compile_model(
            path, tmp_path / f"out{fps}", CompileOptions(synthesize=False, n_random=6, fps=fps), progress=lambda _: None
        )
        sim = report["simulation"]
        assert sim["bit_exact_vs_golden"] and sim["rtl_vs_qonnx"]["mismatches"] == 0
        assert sim["timing_matches_model"] is True and sim["stalls_case_ok"] and sim["flood_case_ok"]
        assert [s["kind"] for s in report["plan"]["stages"]].count("vvu") == 2


def test_grouped_conv_that_is_not_depthwise_is_a_one_line_error_naming_the_node(tmp_path, capsys):
    torch.manual_seed(3)
    path = _export(Pooled("global", groups=2), tmp_path, "grouped")
    with pytest.raises(ModelError, match=r"node 'Conv_0' \(Conv\): group=2 with 4 input .*supported: group=1"):
        frontend.build_graph(frontend.load_model(path), "t")
    code = main(["compile", str(path), "-o", str(tmp_path / "o"), "--no-synth"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "group=2" in err[0]
