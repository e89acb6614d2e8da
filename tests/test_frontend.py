"""The QONNX front end: Brevitas networks -> integer layers that reproduce qonnx' execution bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

brevitas_nn = pytest.importorskip("brevitas.nn", reason="brevitas is a dependency: pip install -e .")
from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint
from hardwire.hls import frontend
from hardwire.hls.graph import MatVecLayer, MaxPoolLayer, im2col, run_integer

from hardwire.errors import ModelError


def _act(bits, signed=False):
    quant = Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint
    return {"act_quant": quant, "bit_width": bits, "return_quant_tensor": True}


def _w(bits):
    return {"weight_quant": Int8WeightPerTensorFixedPoint, "weight_bit_width": bits}


def _randomize_bn(bn: nn.Module, generator: torch.Generator, negative: bool) -> None:
    """BatchNorm statistics that make thresholds interesting: shifted means, spread variances and, with
    `negative`, some channels with a negative scale (the accumulator's order then reverses)."""
    n = bn.num_features
    bn.running_mean.copy_(torch.rand(n, generator=generator) * 4 - 2)
    bn.running_var.copy_(torch.rand(n, generator=generator) * 3 + 0.2)
    gamma = torch.rand(n, generator=generator) + 0.3
    if negative:
        gamma[::3] *= -1
    bn.weight.data.copy_(gamma)
    bn.bias.data.copy_(torch.rand(n, generator=generator) * 2 - 1)


def mlp(seed=0, negative_bn=True, in_bits=4, w_bits=4, a_bits=4, bias=True):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        brevitas_nn.QuantIdentity(**_act(in_bits)),
        brevitas_nn.QuantLinear(64, 24, bias=False, **_w(w_bits)),
        nn.BatchNorm1d(24),
        brevitas_nn.QuantReLU(**_act(a_bits)),
        brevitas_nn.QuantLinear(24, 12, bias=False, **_w(w_bits)),
        nn.BatchNorm1d(12),
        brevitas_nn.QuantIdentity(**_act(a_bits, signed=True)),
        brevitas_nn.QuantLinear(12, 10, bias=bias, **_w(w_bits)),
    )
    _randomize_bn(model[2], g, negative_bn)
    _randomize_bn(model[5], g, negative_bn)
    return model.eval()


def cnn(seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        brevitas_nn.QuantIdentity(**_act(4)),
        brevitas_nn.QuantConv2d(1, 6, 3, padding=1, bias=False, **_w(4)),
        nn.BatchNorm2d(6),
        brevitas_nn.QuantReLU(**_act(4)),
        nn.MaxPool2d(2),
        brevitas_nn.QuantConv2d(6, 8, 3, padding=0, stride=1, bias=True, **_w(4)),
        brevitas_nn.QuantReLU(**_act(3)),
        nn.Flatten(),
        brevitas_nn.QuantLinear(8 * 2 * 2, 10, bias=False, **_w(4)),
    )
    _randomize_bn(model[2], g, negative=True)
    return model.eval()


def grid_inputs(shape, n, seed):
    """Inputs exactly on the 4-bit unsigned input quantizer's grid (k/16), plus all-zero and all-max."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 16, size=(n, *shape)) / 16
    x[0], x[1] = 0.0, 15 / 16
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def mlp_model():
    return frontend.load_model(mlp(), torch.rand(1, 64))


@pytest.fixture(scope="module")
def cnn_model():
    return frontend.load_model(cnn(), torch.rand(1, 1, 8, 8))


def _check_bit_exact(model, shape, n=96, seed=1):
    graph = frontend.build_graph(model, "t")
    x = grid_inputs(shape, n, seed)
    reference = frontend.qonnx_execute(model, x)
    integers = run_integer(graph, frontend.quantize_input(graph, x))
    ours = frontend.model_output(graph, integers)
    assert ours.shape == reference.shape
    differ = ours.view(np.uint32) != reference.view(np.uint32)
    assert not differ.any(), f"{differ.sum()} outputs differ from qonnx, max {np.abs(ours - reference).max()}"
    return graph


def test_mlp_integer_graph_equals_qonnx_execution_bit_for_bit(mlp_model):
    graph = _check_bit_exact(mlp_model, (64,))
    kinds = [layer.kind for layer in graph.layers]
    assert kinds == ["dense", "dense", "dense"]
    first, second, last = graph.layers
    assert first.thresholds.shape == (24, 15) and first.out_type.name == "UINT4"
    assert second.out_type.name == "INT4" and second.out_base == -8
    assert last.thresholds is None and graph.output_type is None
    # thresholds are non-decreasing per channel: the hardware counts them
    assert np.all(np.diff(first.thresholds, axis=1) >= 0)


def test_negative_batchnorm_scale_flips_the_channel_weights(mlp_model):
    graph = frontend.build_graph(mlp_model, "t")
    node = next(n for n in mlp_model.graph.node if n.op_type in ("Gemm", "MatMul"))
    raw = frontend._quantized_weights(frontend._Model(mlp_model), node.input[1], node)[0]
    raw = raw if node.op_type == "Gemm" else raw.T
    ours = graph.layers[0].weights
    flipped = [n for n in range(ours.shape[0]) if np.array_equal(ours[n], -raw[n]) and raw[n].any()]
    kept = [n for n in range(ours.shape[0]) if np.array_equal(ours[n], raw[n])]
    assert flipped and kept and len(flipped) + len(kept) == ours.shape[0]


def test_cnn_with_padding_pooling_and_flatten_equals_qonnx_execution(cnn_model):
    graph = _check_bit_exact(cnn_model, (1, 8, 8), n=48)
    assert [layer.kind for layer in graph.layers] == ["conv", "maxpool", "conv", "dense"]
    conv, pool, conv2, dense = graph.layers
    assert conv.in_shape == (8, 8, 1) and conv.out_shape == (8, 8, 6) and conv.padding == 1
    assert isinstance(pool, MaxPoolLayer) and pool.out_shape == (4, 4, 6)
    assert conv2.out_shape == (2, 2, 8) and conv2.out_type.name == "UINT3"
    assert isinstance(dense, MatVecLayer) and dense.in_features == 32
    assert all(layer.exact for layer in (conv, conv2, dense))


def test_im2col_window_order_matches_torch_unfold():
    rng = np.random.default_rng(3)
    x = rng.integers(-8, 8, size=(2, 5, 6, 3))
    ours = im2col(x, 3, 2, 1)  # (B, OH, OW, (ky, kx, c))
    unfolded = torch.nn.functional.unfold(torch.tensor(x).permute(0, 3, 1, 2).double(), 3, padding=1, stride=2)
    b, _, oh, ow = 2, 3, ours.shape[1], ours.shape[2]
    torch_order = unfolded.reshape(b, 3, 3, 3, oh, ow).permute(0, 4, 5, 2, 3, 1).reshape(b, oh, ow, -1)
    assert np.array_equal(ours, torch_order.numpy().astype(np.int64))


def test_float_scales_are_reported_as_not_exact():
    model = nn.Sequential(
        brevitas_nn.QuantIdentity(**_act(4)), brevitas_nn.QuantLinear(64, 10, bias=False, weight_bit_width=4)
    ).eval()
    graph = frontend.build_graph(frontend.load_model(model, torch.rand(1, 64)), "t")
    assert not graph.layers[0].exact
    assert "non-power-of-two" in frontend.describe_exactness(graph)


def test_missing_file_and_corrupt_file_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        frontend.load_model(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf\xff\xff")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        frontend.load_model(bad)


def test_unquantized_input_is_a_clear_error():
    model = nn.Sequential(brevitas_nn.QuantLinear(64, 10, bias=False, **_w(4))).eval()
    with pytest.raises(ModelError, match="input .* is not quantized"):
        frontend.build_graph(frontend.load_model(model, torch.rand(1, 64)), "t")


def test_unsupported_op_names_the_node_and_the_supported_ops():
    model = nn.Sequential(
        brevitas_nn.QuantIdentity(**_act(4)),
        brevitas_nn.QuantLinear(64, 10, bias=False, **_w(4)),
        nn.Sigmoid(),
        brevitas_nn.QuantIdentity(**_act(4)),
    ).eval()
    with pytest.raises(ModelError, match=r"\(op Sigmoid\).*supported: Quant"):
        frontend.build_graph(frontend.load_model(model, torch.rand(1, 64)), "t")


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = brevitas_nn.QuantIdentity(**_act(4))
        self.fc = brevitas_nn.QuantLinear(16, 16, bias=False, **_w(4))
        self.act = brevitas_nn.QuantIdentity(**_act(4))

    def forward(self, x):
        x = self.inp(x)
        return self.act(self.fc(x)) + x


def test_residual_add_without_a_quantizer_after_it_is_a_clear_error():
    """Residual blocks compile (tests/test_user_networks.py); a sum left unquantized is refused by name."""
    with pytest.raises(
        ModelError,
        match=r"node '\w+' \(Add\): the residual sum reaches the output without an "
        "activation quantizer",
    ):
        frontend.build_graph(frontend.load_model(_Residual().eval(), torch.rand(1, 16)), "t")


def test_weights_without_quantizer_are_a_clear_error(tmp_path, mlp_model):
    # replace the first Gemm/MatMul's weight input by a plain float constant
    proto = onnx.ModelProto()
    proto.CopyFrom(mlp_model.model)
    layer = next(n for n in proto.graph.node if n.op_type in ("Gemm", "MatMul"))
    shape = list(mlp_model.get_tensor_shape(layer.input[1]))
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(shape, np.float32), "plain_weights"))
    layer.input[1] = "plain_weights"
    path = tmp_path / "plain.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match="weights are not quantized"):
        frontend.build_graph(frontend.load_model(path), "t")
