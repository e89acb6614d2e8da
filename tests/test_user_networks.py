"""Networks as users write them (issue 13): Brevitas modules with random weights, exported with export_qonnx as a
user would, one per failure class of the issue. Each is compared with qonnx' execution of its own export: the
integer golden model on grid, rounding-boundary and saturating inputs, and (for the RTL back end) the Verilator
simulation of the generated design on random and extreme inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

brevitas_nn = pytest.importorskip("brevitas.nn", reason="brevitas is a dependency: pip install -e .")
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    SignedBinaryActPerTensorConst,
    SignedBinaryWeightPerTensorConst,
    Uint8ActPerTensorFixedPoint,
)
from hardwire.hls import frontend
from hardwire.hls.compile import CompileOptions, compile_model, same_bits
from hardwire.hls.graph import run_integer

from hardwire.cli import main
from hardwire.errors import InternalError, ModelError


def _act(bits, signed=False, narrow=False):
    quant = Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint
    return {"act_quant": quant, "bit_width": bits, "return_quant_tensor": True, "narrow_range": narrow}


def _w(bits):
    return {"weight_quant": Int8WeightPerTensorFixedPoint, "weight_bit_width": bits}


def _export(module, shape, tmp_path, name):
    """What a user does: export_qonnx on the module in eval mode, then give the file to hardwire."""
    from brevitas.export import export_qonnx

    torch.manual_seed(0)
    path = tmp_path / f"{name}.onnx"
    export_qonnx(module.eval(), torch.rand(*shape), export_path=str(path))
    return path


def _golden_equals_qonnx(path, x):
    """The integer graph's output, turned back into floats, equals qonnx' execution bit for bit."""
    model = frontend.load_model(path)
    graph = frontend.build_graph(model, "t")
    reference = frontend.qonnx_execute(model, x)
    ours = frontend.model_output(graph, run_integer(graph, frontend.quantize_input(graph, x)))
    assert ours.shape == reference.shape
    differ = same_bits(ours, reference) == 0  # -0.0 and +0.0 alike, every other bit compared
    assert not differ.any(), f"{differ.sum()} outputs differ from qonnx, max {np.abs(ours - reference).max()}"
    return graph


def _rtl_equals_qonnx(path, tmp_path, n=24, **options):
    report = compile_model(
        path, tmp_path / "out", CompileOptions(synthesize=False, n_random=n, **options), progress=lambda _: None
    )
    sim = report["simulation"]
    assert sim["inferences"] == n and sim["bit_exact_vs_golden"]
    assert sim["rtl_vs_qonnx"]["mismatches"] == 0
    assert sim["timing_matches_model"] is True and sim["stalls_case_ok"] and sim["flood_case_ok"]
    assert report["golden_vs_qonnx"]["mismatches"] == 0
    return report


# ---------------------------------------------------------------------------------------------------------------
# Pre-processing before the first quantizer


class Normalized(nn.Module):
    """An 8x8 image flattened, normalized per tensor ((x - mean) / std, not powers of two) and per pixel
    (x * a + b), then a quantized MLP."""

    def __init__(self, per_pixel: bool):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.per_pixel = per_pixel
        self.register_buffer("a", torch.rand(64, generator=g) * 1.5 + 0.2)
        self.register_buffer("b", torch.rand(64, generator=g) - 0.5)
        self.inp = brevitas_nn.QuantIdentity(**_act(4, signed=True))
        self.fc0 = brevitas_nn.QuantLinear(64, 16, bias=False, **_w(4))
        self.act = brevitas_nn.QuantReLU(**_act(4))
        self.fc1 = brevitas_nn.QuantLinear(16, 10, bias=False, **_w(4))

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = (x - 0.3125) / 0.7
        if self.per_pixel:
            x = x * self.a + self.b
        return self.fc1(self.act(self.fc0(self.inp(x))))


def _random_images(n, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 2, size=(n, 1, 8, 8)).astype(np.float32)
    x[0], x[1] = -5, 5  # saturate both ends of the input quantizer
    return x


@pytest.mark.parametrize("per_pixel", [pytest.param(False, marks=pytest.mark.slow), True])
def test_preprocessing_before_the_input_quantizer_runs_on_the_host(tmp_path, per_pixel):
    path = _export(Normalized(per_pixel), (1, 1, 8, 8), tmp_path, "normalized")
    graph = _golden_equals_qonnx(path, _random_images(200))
    assert graph.input.shape == (1, 1, 64) and graph.input.source_layout == "NC"
    ops = [node.op_type for node in graph.prefix.nodes]
    assert {"Sub", "Div"} <= set(ops) and ("Mul" in ops) == per_pixel
    host = frontend.host_operations(graph)
    assert "pre-processing" in host["before"][0] and "not folded into the hardware" in host["before"][0]


@pytest.mark.slow
def test_preprocessed_network_is_bit_exact_in_rtl(tmp_path):
    path = _export(Normalized(True), (1, 1, 8, 8), tmp_path, "normalized")
    report = _rtl_equals_qonnx(path, tmp_path, n=20, fps=1_000_000)
    assert "pre-processing" in report["host"]["before"][0]
    assert "What runs where" in (tmp_path / "out" / "report.md").read_text()


def test_verification_inputs_reach_every_input_level_through_the_preprocessing(tmp_path):
    from hardwire.hls.compile import verification_inputs

    path = _export(Normalized(True), (1, 1, 8, 8), tmp_path, "normalized")
    graph = frontend.build_graph(frontend.load_model(path), "t")
    x = verification_inputs(graph, 40, seed=0)
    assert x.shape == (40, 1, 8, 8)
    codes = frontend.quantize_input(graph, x)
    assert set(np.unique(codes)) == set(range(graph.input.dtype.min, graph.input.dtype.max + 1))
    assert np.all(codes[0] == graph.input.dtype.min) and np.all(codes[1] == graph.input.dtype.max)


def test_a_layer_before_the_input_quantizer_is_still_refused_by_name(tmp_path):
    module = nn.Sequential(
        nn.Linear(64, 64), brevitas_nn.QuantIdentity(**_act(4)), brevitas_nn.QuantLinear(64, 10, bias=False, **_w(4))
    )
    path = _export(module, (1, 64), tmp_path, "float_first")
    with pytest.raises(ModelError, match=r"not quantized: node '\w+' \(Gemm\) reads it before any Quant node"):
        frontend.build_graph(frontend.load_model(path), "t")


# ---------------------------------------------------------------------------------------------------------------
# Narrow-range signed activations, and no internal parameter check reaching a user


def narrow_mlp(bits=2):
    torch.manual_seed(1)
    return nn.Sequential(
        brevitas_nn.QuantIdentity(**_act(4)),
        brevitas_nn.QuantLinear(16, 12, bias=False, **_w(4)),
        brevitas_nn.QuantIdentity(**_act(bits, signed=True, narrow=True)),  # levels -1, 0, 1 at 2 bits
        brevitas_nn.QuantLinear(12, 8, bias=False, **_w(3)),
        brevitas_nn.QuantIdentity(**_act(3, signed=True, narrow=True)),
    )


def _grid(n, features, seed=2):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 16, size=(n, features)) / 16
    x[0], x[1] = 0, 15 / 16
    return x.astype(np.float32)


def test_narrow_range_signed_activations_count_from_one_below_their_minimum(tmp_path):
    path = _export(narrow_mlp(), (1, 16), tmp_path, "narrow")
    graph = _golden_equals_qonnx(path, _grid(300, 16))
    first, second = graph.layers
    assert first.out_type.name == "INT2n" and (first.out_type.min, first.out_type.max) == (-1, 1)
    assert first.out_base == -2 and second.out_base == -4
    # the first threshold is reached by every accumulator: the count never falls below min
    lo, _ = first.acc_range
    assert np.all(first.thresholds[:, 0] <= lo)
    levels = run_integer(graph, frontend.quantize_input(graph, _grid(300, 16)), upto=1)
    assert set(np.unique(levels)) <= {-1, 0, 1}


def test_narrow_range_network_is_bit_exact_in_rtl(tmp_path):
    path = _export(narrow_mlp(), (1, 16), tmp_path, "narrow")
    _rtl_equals_qonnx(path, tmp_path, n=24)


def test_an_internal_parameter_check_is_reported_as_a_hardwire_bug(tmp_path, monkeypatch, capsys):
    from hardwire.gen import mvu
    from hardwire.errors import ParameterError

    def broken(*args, **kwargs):
        raise ParameterError("out_base", -1, "a value the user never set")

    path = _export(narrow_mlp(), (1, 16), tmp_path, "narrow")
    monkeypatch.setattr(mvu, "MvuParams", broken)
    with pytest.raises(InternalError, match="hardwire bug"):
        compile_model(path, tmp_path / "out", CompileOptions(synthesize=False, simulate=False), progress=lambda _: None)
    assert not (tmp_path / "out").exists()
    assert main(["compile", str(path), "-o", str(tmp_path / "out"), "--no-synth", "--no-sim"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hardwire bug" in err and str(path) in err
    assert "out_base" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------------
# A float tail after the last quantized layer


class NormalizedOutput(nn.Module):
    """A quantized MLP whose logits are normalized per tensor ((y - mean) / std) and per class (y * a + b),
    constants that are not powers of two: exported as Sub/Div/Mul/Add after the last Gemm."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        g = torch.Generator().manual_seed(4)
        self.register_buffer("a", torch.rand(10, generator=g) + 0.3)
        self.register_buffer("b", torch.rand(10, generator=g) - 0.5)
        self.body = nn.Sequential(
            brevitas_nn.QuantIdentity(**_act(4)),
            brevitas_nn.QuantLinear(16, 24, bias=False, **_w(4)),
            brevitas_nn.QuantReLU(**_act(4)),
            brevitas_nn.QuantLinear(24, 10, bias=False, **_w(4)),
        )

    def forward(self, x):
        return ((self.body(x) - 0.37) / 1.3) * self.a + self.b


def test_float_tail_is_computed_on_the_host_exactly(tmp_path):
    path = _export(NormalizedOutput(), (1, 16), tmp_path, "tail")
    graph = _golden_equals_qonnx(path, _grid(300, 16))
    after = frontend.host_operations(graph)["after"][0]
    assert "float ops" in after and "Sub" in after and "Div" in after


def test_float_tail_network_is_bit_exact_in_rtl(tmp_path):
    path = _export(NormalizedOutput(), (1, 16), tmp_path, "tail")
    report = _rtl_equals_qonnx(path, tmp_path, n=24)
    assert "float ops" in report["host"]["after"][0]


def test_float_tail_hls4ml_csim_is_bit_exact(tmp_path):
    pytest.importorskip("hls4ml")
    path = _export(NormalizedOutput(), (1, 16), tmp_path, "tail")
    report = compile_model(path, tmp_path / "h", CompileOptions(backend="hls4ml", n_random=64), progress=lambda _: None)
    check = report["csim_vs_qonnx"]
    assert check["outputs"] == 640 and check["mismatches"] == 0
    assert {"Sub", "Div", "Mul", "Add"} <= {name.split("(")[1][:-1] for name in report["hls4ml"]["host_after"]}
    assert "float tail" in report["host"]["after"][0]
    assert (tmp_path / "h" / "hls4ml" / "host_after.onnx").is_file()


@pytest.mark.slow
def test_preprocessing_hls4ml_csim_is_bit_exact(tmp_path):
    pytest.importorskip("hls4ml")
    path = _export(Normalized(True), (1, 1, 8, 8), tmp_path, "normalized")
    report = compile_model(path, tmp_path / "h", CompileOptions(backend="hls4ml", n_random=64), progress=lambda _: None)
    assert report["csim_vs_qonnx"]["mismatches"] == 0 and report["csim_vs_qonnx"]["outputs"] == 640
    assert report["hls4ml"]["host_before"] and "pre-processing" in report["host"]["before"][0]


# ---------------------------------------------------------------------------------------------------------------
# A network that ends in a quantized convolution (no dense head)


def conv_end(quantized_output=True, flatten=False):
    torch.manual_seed(6)
    layers = [
        brevitas_nn.QuantIdentity(**_act(4)),
        brevitas_nn.QuantConv2d(2, 4, 3, padding=1, bias=False, **_w(4)),
        brevitas_nn.QuantReLU(**_act(3)),
        brevitas_nn.QuantConv2d(4, 3, 3, padding=0, bias=False, **_w(4)),
    ]
    if quantized_output:
        layers.append(brevitas_nn.QuantIdentity(**_act(4, signed=True)))
    if flatten:
        layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def _images(n, shape=(2, 6, 6), seed=7):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 16, size=(n, *shape)) / 16
    x[0], x[1] = 0, 15 / 16
    return x.astype(np.float32)


@pytest.mark.parametrize("quantized_output", [True, False])
def test_network_ending_in_a_convolution_keeps_its_spatial_output(tmp_path, quantized_output):
    path = _export(conv_end(quantized_output), (1, 2, 6, 6), tmp_path, "conv_end")
    graph = _golden_equals_qonnx(path, _images(60))
    assert graph.layers[-1].kind == "conv" and graph.out_shape == (4, 4, 3)
    assert frontend.model_output(graph, np.zeros((2, 4, 4, 3), np.int64)).shape == (2, 3, 4, 4)


def test_flatten_after_the_last_quantized_convolution_runs_on_the_host_in_onnx_order(tmp_path):
    path = _export(conv_end(True, flatten=True), (1, 2, 6, 6), tmp_path, "conv_end_flat")
    graph = _golden_equals_qonnx(path, _images(60))
    assert graph.tail.flatten and frontend.model_output(graph, np.zeros((2, 4, 4, 3), np.int64)).shape == (2, 48)
    assert "(layout)" in frontend.host_operations(graph)["after"][0]


@pytest.mark.slow
def test_network_ending_in_a_convolution_is_bit_exact_in_rtl(tmp_path):
    path = _export(conv_end(True), (1, 2, 6, 6), tmp_path, "conv_end")
    _rtl_equals_qonnx(path, tmp_path, n=12)


# ---------------------------------------------------------------------------------------------------------------
# Binary (bipolar) networks: the XNOR-popcount datapath


BINARY_ACT = {"act_quant": SignedBinaryActPerTensorConst, "return_quant_tensor": True}
BINARY_W = {"weight_quant": SignedBinaryWeightPerTensorConst, "weight_scaling_const": 1.0}  # exact: scale 2**0


def _bn(n, g):
    bn = nn.BatchNorm1d(n)
    bn.running_mean.copy_(torch.randn(n, generator=g) * 2)
    bn.running_var.copy_(torch.rand(n, generator=g) * 4 + 1)
    bn.weight.data.copy_(torch.randn(n, generator=g))  # some negative: reversed channels
    bn.bias.data.copy_(torch.randn(n, generator=g))
    return bn


class BinaryMLP(nn.Module):
    """FINN's BNN-PYNQ recipe: the input mapped to [-1, 1] (2x - 1) and binarized, binary weights, BatchNorm and
    a binary activation per hidden layer, a binary last layer whose popcount is the output (w1a1)."""

    def __init__(self, integer_input=False):
        super().__init__()
        g = torch.Generator().manual_seed(8)
        torch.manual_seed(8)
        self.integer_input = integer_input
        self.inp = brevitas_nn.QuantIdentity(**(_act(4) if integer_input else BINARY_ACT))
        self.body = nn.Sequential(
            brevitas_nn.QuantLinear(32, 24, bias=False, **BINARY_W),
            _bn(24, g),
            brevitas_nn.QuantIdentity(**BINARY_ACT),
            brevitas_nn.QuantLinear(24, 16, bias=False, **BINARY_W),
            _bn(16, g),
            brevitas_nn.QuantIdentity(**BINARY_ACT),
            brevitas_nn.QuantLinear(16, 10, bias=False, **BINARY_W),
        )

    def forward(self, x):
        return self.body(self.inp(x if self.integer_input else 2 * x - 1))


@pytest.mark.parametrize("integer_input", [False, True])
def test_binary_mlp_golden_equals_qonnx(tmp_path, integer_input):
    path = _export(BinaryMLP(integer_input), (1, 32), tmp_path, "bnn")
    rng = np.random.default_rng(9)
    x = rng.uniform(0, 1, size=(300, 32)).astype(np.float32)
    x[0], x[1] = 0, 1
    graph = _golden_equals_qonnx(path, x)
    assert graph.input.dtype.bipolar != integer_input
    assert [layer.w_type.bipolar for layer in graph.layers] == [True] * 3
    assert [layer.out_type.name for layer in graph.layers[:2]] == ["BIPOLAR"] * 2
    levels = run_integer(graph, frontend.quantize_input(graph, x), upto=2)
    assert set(np.unique(levels)) == {-1, 1}


@pytest.mark.parametrize("integer_input", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_binary_mlp_is_bit_exact_in_rtl_with_xnor_popcount_units(tmp_path, integer_input):
    path = _export(BinaryMLP(integer_input), (1, 32), tmp_path, "bnn")
    report = _rtl_equals_qonnx(path, tmp_path, n=24, fps=2_000_000)
    units = [stage for stage in report["plan"]["stages"] if stage["kind"] == "mvu"]
    # after a binary activation every unit is XNOR-popcount: 1-bit codes, no multipliers
    binary = [unit["params"]["binary"] for unit in units]
    assert binary == ([False, True, True] if integer_input else [True, True, True])
    assert all(unit["params"]["in_width"] == 1 for unit in units[1:])
    assert report["plan"]["in_bipolar"] != integer_input


def binary_cnn():
    """FINN's CNV recipe in small: an integer input image, binary weights, BatchNorm and binary activations,
    unpadded 3x3 convolutions, max pooling on the bipolar stream, a binary dense head."""
    g = torch.Generator().manual_seed(10)
    torch.manual_seed(10)

    def bn2d(n):
        bn = nn.BatchNorm2d(n)
        source = _bn(n, g)
        bn.load_state_dict(source.state_dict())
        return bn

    return nn.Sequential(
        brevitas_nn.QuantIdentity(**_act(4)),
        brevitas_nn.QuantConv2d(1, 4, 3, bias=False, **BINARY_W),
        bn2d(4),
        brevitas_nn.QuantIdentity(**BINARY_ACT),
        nn.MaxPool2d(2),
        brevitas_nn.QuantConv2d(4, 8, 3, bias=False, **BINARY_W),
        bn2d(8),
        brevitas_nn.QuantIdentity(**BINARY_ACT),
        nn.Flatten(),
        brevitas_nn.QuantLinear(8, 10, bias=False, **BINARY_W),
    )


@pytest.mark.slow
def test_binary_cnn_with_pooling_is_bit_exact_in_rtl(tmp_path):
    path = _export(binary_cnn(), (1, 1, 8, 8), tmp_path, "bcnn")
    graph = _golden_equals_qonnx(path, _images(100, shape=(1, 8, 8)))
    assert [layer.kind for layer in graph.layers] == ["conv", "maxpool", "conv", "dense"]
    report = _rtl_equals_qonnx(path, tmp_path, n=16)
    units = [stage["params"] for stage in report["plan"]["stages"] if stage["kind"] == "mvu"]
    assert [unit["binary"] for unit in units] == [False, True, True]
    pool = next(stage["params"] for stage in report["plan"]["stages"] if stage["kind"] == "maxpool")
    assert pool["elem_width"] == 1


# ---------------------------------------------------------------------------------------------------------------
# Error messages name what is unsupported


def test_bipolar_input_with_zero_padding_is_refused_by_name(tmp_path):
    module = nn.Sequential(
        brevitas_nn.QuantIdentity(**BINARY_ACT), brevitas_nn.QuantConv2d(1, 4, 3, padding=1, bias=False, **BINARY_W)
    )
    path = _export(module, (1, 1, 6, 6), tmp_path, "binary_pad")
    with pytest.raises(ModelError, match=r"\(Conv\): zero padding of a bipolar"):
        frontend.build_graph(frontend.load_model(path), "t")


def test_hls4ml_back_end_refuses_bipolar_activations_by_name(tmp_path):
    pytest.importorskip("hls4ml")
    path = _export(BinaryMLP(), (1, 32), tmp_path, "bnn")
    with pytest.raises(ModelError, match=r"node 'BipolarQuant_\d' \(BipolarQuant\) quantizes activations to bipolar"):
        compile_model(path, tmp_path / "h", CompileOptions(backend="hls4ml", n_random=8), progress=lambda _: None)
    assert not (tmp_path / "h").exists()


@pytest.mark.slow
def test_narrow_range_hls4ml_csim_is_bit_exact(tmp_path):
    pytest.importorskip("hls4ml")
    path = _export(narrow_mlp(), (1, 16), tmp_path, "narrow")
    report = compile_model(path, tmp_path / "h", CompileOptions(backend="hls4ml", n_random=48), progress=lambda _: None)
    assert report["csim_vs_qonnx"]["mismatches"] == 0 and report["csim_vs_qonnx"]["outputs"] == 48 * 8


@pytest.mark.slow
def test_conv_end_hls4ml_csim_is_bit_exact(tmp_path):
    pytest.importorskip("hls4ml")
    path = _export(conv_end(True), (1, 2, 6, 6), tmp_path, "conv_end")
    report = compile_model(path, tmp_path / "h", CompileOptions(backend="hls4ml", n_random=24), progress=lambda _: None)
    assert report["csim_vs_qonnx"]["mismatches"] == 0 and report["csim_vs_qonnx"]["outputs"] == 24 * 48


# ---------------------------------------------------------------------------------------------------------------
# No internal error text reachable from the CLI: malformed and unsupported graphs each give one user-error line


def _zero_point_one(model):
    quant = next(n for n in model.graph.node if n.op_type == "Quant")
    model.set_initializer(quant.input[2], np.ones_like(model.get_initializer(quant.input[2])))


def _nine_bits(model):
    quant = next(n for n in model.graph.node if n.op_type == "Quant")
    model.set_initializer(quant.input[3], np.asarray(9.0, dtype=np.float32))


def _act_scale_from_input(model):
    import onnx

    quant = [n for n in model.graph.node if n.op_type == "Quant"][1]
    model.graph.input.append(onnx.helper.make_tensor_value_info("scale_in", onnx.TensorProto.FLOAT, [1]))
    quant.input[1] = "scale_in"


MALFORMED = {
    # name: (module, input shape, mutation of the exported model or None, text the message must contain)
    "grouped_conv": (
        lambda: nn.Sequential(
            brevitas_nn.QuantIdentity(**_act(4)), brevitas_nn.QuantConv2d(2, 4, 3, groups=2, bias=False, **_w(4))
        ),
        (1, 2, 6, 6),
        None,
        "group=2 with 2 input and 4 output channels",
    ),
    "overlapping_pool": (
        lambda: nn.Sequential(
            brevitas_nn.QuantIdentity(**_act(4)),
            brevitas_nn.QuantConv2d(1, 2, 3, bias=False, **_w(4)),
            brevitas_nn.QuantReLU(**_act(4)),
            nn.MaxPool2d(3, stride=1),
            nn.Flatten(),
            brevitas_nn.QuantLinear(8, 2, bias=False, **_w(4)),
        ),
        (1, 1, 6, 6),
        None,
        "(op MaxPool)",
    ),
    "average_pool": (
        lambda: nn.Sequential(
            brevitas_nn.QuantIdentity(**_act(4)),
            brevitas_nn.QuantConv2d(1, 2, 3, bias=False, **_w(4)),
            brevitas_nn.QuantReLU(**_act(4)),
            nn.AvgPool2d(2),
            nn.Flatten(),
            brevitas_nn.QuantLinear(8, 2, bias=False, **_w(4)),
        ),
        (1, 1, 6, 6),
        None,
        "(AveragePool): its average reaches node",
    ),
    "conv1d": (
        lambda: nn.Sequential(
            brevitas_nn.QuantIdentity(**_act(4)), brevitas_nn.QuantConv1d(2, 2, 3, bias=False, **_w(4))
        ),
        (1, 2, 8),
        None,
        "supported (1, C) or (1, C, H, W)",
    ),
    "zero_point": (
        lambda: nn.Sequential(brevitas_nn.QuantIdentity(**_act(4)), brevitas_nn.QuantLinear(8, 2, bias=False, **_w(4))),
        (1, 8),
        _zero_point_one,
        "(Quant): non-zero zero point",
    ),
    "nine_bits": (
        lambda: nn.Sequential(brevitas_nn.QuantIdentity(**_act(4)), brevitas_nn.QuantLinear(8, 2, bias=False, **_w(4))),
        (1, 8),
        _nine_bits,
        "(Quant): bit width 9 is not supported",
    ),
    "scale_not_constant": (
        lambda: nn.Sequential(
            brevitas_nn.QuantIdentity(**_act(4)),
            brevitas_nn.QuantLinear(8, 4, bias=False, **_w(4)),
            brevitas_nn.QuantReLU(**_act(4)),
            brevitas_nn.QuantLinear(4, 2, bias=False, **_w(4)),
        ),
        (1, 8),
        _act_scale_from_input,
        "exactly one input, it has 2: 'global_in', 'global_in_1'",
    ),
}


FAST_MALFORMED = ("average_pool", "grouped_conv", "zero_point")  # the rest with -m slow


@pytest.mark.parametrize(
    "case",
    [name if name in FAST_MALFORMED else pytest.param(name, marks=pytest.mark.slow) for name in sorted(MALFORMED)],
)
def test_malformed_and_unsupported_graphs_are_one_line_user_errors_naming_the_node(tmp_path, capsys, case):
    from qonnx.core.modelwrapper import ModelWrapper

    make, shape, mutate, text = MALFORMED[case]
    path = _export(make(), shape, tmp_path, case)
    if mutate is not None:
        model = ModelWrapper(str(path))
        mutate(model)
        model.save(str(path))
    code = main(["compile", str(path), "-o", str(tmp_path / "out"), "--no-sim", "--no-synth"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("hardwire: error:"), err
    assert "Traceback" not in err and "hardwire bug" not in err
    assert text in err and ("node '" in err or "input" in err), err
    assert not (tmp_path / "out").exists()


def test_inputs_of_the_wrong_shape_are_a_one_line_error(tmp_path, capsys):
    path = _export(narrow_mlp(), (1, 16), tmp_path, "narrow")
    np.save(tmp_path / "x.npy", np.zeros((4, 15), np.float32))
    code = main(
        [
            "compile",
            str(path),
            "-o",
            str(tmp_path / "out"),
            "--inputs",
            str(tmp_path / "x.npy"),
            "--no-sim",
            "--no-synth",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "(N, 16)" in err and "(4, 15)" in err, err


# ---------------------------------------------------------------------------------------------------------------
# Corpus: hls4ml's jet-tagging MLP (16-64-32-32-5), as its QKeras/Brevitas versions define it (random weights)


def jet_tagger():
    g = torch.Generator().manual_seed(11)
    torch.manual_seed(11)
    layers = [brevitas_nn.QuantIdentity(**_act(8, signed=True))]
    sizes = [16, 64, 32, 32]
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        layers += [
            brevitas_nn.QuantLinear(fan_in, fan_out, bias=False, **_w(6)),
            _bn(fan_out, g),
            brevitas_nn.QuantReLU(**_act(6)),
        ]
    layers.append(brevitas_nn.QuantLinear(32, 5, bias=False, **_w(6)))
    return nn.Sequential(*layers)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["rtl", "hls4ml"])
def test_jet_tagging_mlp_is_bit_exact_in_both_back_ends(tmp_path, backend):
    path = _export(jet_tagger(), (1, 16), tmp_path, "jet")
    if backend == "rtl":
        report = _rtl_equals_qonnx(path, tmp_path, n=32, fps=500_000)
        assert [layer["out_type"] for layer in report["layers"][1:]] == ["UINT6"] * 3 + ["acc"]
    else:
        pytest.importorskip("hls4ml")
        report = compile_model(
            path, tmp_path / "h", CompileOptions(backend="hls4ml", n_random=64), progress=lambda _: None
        )
        assert report["csim_vs_qonnx"]["mismatches"] == 0 and report["csim_vs_qonnx"]["outputs"] == 320


# ---------------------------------------------------------------------------------------------------------------
# Residual blocks: a fork, a branch of layers and a shortcut, joined by an Add


class Residual(nn.Module):
    """A ResNet basic block on a quantized 6x6x4 image: y = relu_quant(bn(conv(x))) + x, then a ReLU
    quantizer, then a 1x1 convolution head (its raw accumulators go to the host). The branch and the shortcut
    have different (power-of-two) scales, so the add aligns them."""

    def __init__(self, projection=False):
        super().__init__()
        self.projection = projection
        self.inp = brevitas_nn.QuantIdentity(**(_act(4, signed=True) | {"return_quant_tensor": False}))
        self.conv = brevitas_nn.QuantConv2d(4, 4, 3, padding=1, bias=False, **_w(4))
        self.bn = _bn2d(4)
        self.relu = brevitas_nn.QuantReLU(**(_act(4) | {"return_quant_tensor": False}))
        if projection:
            self.short = brevitas_nn.QuantConv2d(4, 4, 1, bias=False, **_w(3))
            self.short_q = brevitas_nn.QuantIdentity(**(_act(5, signed=True) | {"return_quant_tensor": False}))
        self.join = brevitas_nn.QuantReLU(**(_act(4) | {"return_quant_tensor": False}))
        self.head = brevitas_nn.QuantConv2d(4, 3, 1, bias=False, **_w(4))

    def forward(self, x):
        x = self.inp(x)
        shortcut = self.short_q(self.short(x)) if self.projection else x
        return self.head(self.join(self.relu(self.bn(self.conv(x))) + shortcut))


def _bn2d(n, seed=4):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(n)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
        bn.bias.copy_(torch.rand(n, generator=g) - 0.5)
        bn.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return bn


def _residual_images(n, seed=9):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.2, 1.2, size=(n, 4, 6, 6)).astype(np.float32)
    x[0], x[1] = -5, 5
    return x


@pytest.mark.parametrize("projection", [False, True])
def test_residual_block_golden_equals_qonnx(tmp_path, projection):
    from hardwire.hls.graph import ResidualLayer

    torch.manual_seed(1)
    path = _export(Residual(projection), (1, 4, 6, 6), tmp_path, "residual")
    graph = _golden_equals_qonnx(path, _residual_images(60))
    block = graph.layers[0]
    assert isinstance(block, ResidualLayer) and [type(layer).__name__ for layer in block.branch] == ["MatVecLayer"]
    assert len(block.shortcut) == int(projection)
    assert block.thresholds.shape == (1, 15)
    assert [layer.name for layer in graph.layers[1:]] == [graph.layers[1].name] and graph.output_type is None


@pytest.mark.parametrize("projection, fps", [(False, None), pytest.param(True, 200_000, marks=pytest.mark.slow)])
def test_residual_block_is_bit_exact_and_cycle_exact_in_rtl(tmp_path, projection, fps):
    """duplicator -> branch | shortcut -> add in Verilator: outputs bit-exact against the golden model and qonnx,
    every handshake of the paced run at the cycle the composed schedule model gives (the check in
    compile_model), and the shortcut FIFO deep enough for the branch's latency (no stall: the flood case runs
    at the model's rate too)."""
    from hardwire.hls import rtl

    torch.manual_seed(1)
    path = _export(Residual(projection), (1, 4, 6, 6), tmp_path, "residual")
    report = _rtl_equals_qonnx(path, tmp_path, n=8, **({"fps": fps} if fps else {}))
    stages = report["plan"]["stages"]
    block = next(s for s in stages if s["kind"] == "residual")["params"]

    def units(path):  # width converters come where a path's lanes differ from the fork's
        return [s["kind"] for s in path if s["kind"] != "dwc"]

    assert units(block["branch"]) == ["swg", "mvu"]
    assert units(block["shortcut"]) == (["swg", "mvu"] if projection else [])
    # the shortcut's FIFO holds what the dup gives it while the branch fills: more than the minimum, and exactly
    # what the composed model needs (one less and a write would wait)
    graph = frontend.build_graph(frontend.load_model(path), "t")
    plan = rtl.plan_dataflow(graph, rtl.solve_folding(graph, **({"fps": fps} if fps else {})))
    unit = next(s for s in plan.stages if s.kind == "residual").params
    schedule = rtl.network_schedule(plan, rtl.paced_offers(plan, 4, plan.interval))
    needed = next(n for n in schedule.inner_needed if n is not None)
    assert unit.b_fifo_depth == max(rtl.MIN_FIFO_DEPTH, needed["add_b"])
    if not projection:
        assert unit.b_fifo_depth > rtl.MIN_FIFO_DEPTH
        assert unit.b_fifo_depth == block["add_b_fifo_depth"]


@pytest.mark.slow
def test_a_shortcut_fifo_shallower_than_the_model_says_breaks_the_timing(tmp_path, monkeypatch):
    """The sizing matters and the check can fail: with the shortcut's FIFO two beats shallower than the depth
    the composed model gives, the duplicator waits on it and the input handshakes no longer land on the model's
    cycles (the outputs are still right: nothing deadlocks, it is only slower). One beat shallower still
    matches (measured): rtl._fifo_depth_needed is one beat conservative for SyncFIFOBuffered, for every FIFO
    of a network alike."""
    from hardwire.errors import SimulationError
    from hardwire.hls import rtl

    sized = rtl.size_fifos

    def one_short(plan, *args, **kwargs):
        sized(plan, *args, **kwargs)
        unit = next(s for s in plan.stages if s.kind == "residual").params
        assert unit.b_fifo_depth > rtl.MIN_FIFO_DEPTH
        unit.b_fifo_depth -= 2

    monkeypatch.setattr(rtl, "size_fifos", one_short)
    torch.manual_seed(1)
    path = _export(Residual(), (1, 4, 6, 6), tmp_path, "residual")
    with pytest.raises(SimulationError, match="handshake cycles differ from the network cycle model"):
        compile_model(path, tmp_path / "out", CompileOptions(synthesize=False, n_random=4), progress=lambda _: None)


class TwoBlocks(nn.Module):
    """A small ResNet: a stem convolution, two basic blocks in a row (the second block's fork is the first's
    output quantizer; signed and unsigned branches), max pooling and a dense head."""

    def __init__(self):
        super().__init__()

        def act(bits, signed=False):
            return _act(bits, signed=signed) | {"return_quant_tensor": False}

        self.inp = brevitas_nn.QuantIdentity(**act(4, True))
        self.stem = brevitas_nn.QuantConv2d(2, 4, 3, padding=1, bias=False, **_w(4))
        self.bn0, self.q0 = _bn2d(4, 1), brevitas_nn.QuantReLU(**act(4))
        self.c1, self.bn1 = brevitas_nn.QuantConv2d(4, 4, 3, padding=1, bias=False, **_w(4)), _bn2d(4, 2)
        self.r1, self.j1 = brevitas_nn.QuantReLU(**act(3)), brevitas_nn.QuantReLU(**act(4))
        self.c2, self.bn2 = brevitas_nn.QuantConv2d(4, 4, 3, padding=1, bias=False, **_w(4)), _bn2d(4, 3)
        self.r2, self.j2 = brevitas_nn.QuantIdentity(**act(4, True)), brevitas_nn.QuantIdentity(**act(5, True))
        self.pool = nn.MaxPool2d(2)
        self.fc = brevitas_nn.QuantLinear(36, 5, bias=False, **_w(4))

    def forward(self, x):
        x = self.q0(self.bn0(self.stem(self.inp(x))))
        x = self.j1(self.r1(self.bn1(self.c1(x))) + x)
        x = self.j2(self.r2(self.bn2(self.c2(x))) + x)
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.mark.slow
@pytest.mark.parametrize("fps", [None, 300_000])
def test_two_residual_blocks_in_a_row_are_bit_exact_and_cycle_exact_in_rtl(tmp_path, fps):
    torch.manual_seed(2)
    path = _export(TwoBlocks(), (1, 2, 6, 6), tmp_path, "two_blocks")
    report = _rtl_equals_qonnx(path, tmp_path, n=8, **({"fps": fps} if fps else {}))
    assert [s["kind"] for s in report["plan"]["stages"]].count("residual") == 2


@pytest.mark.slow
def test_residual_block_hls4ml_csim_is_bit_exact(tmp_path):
    """hls4ml 1.3 takes the residual Add as a Merge layer; its C simulation equals qonnx on grid inputs."""
    pytest.importorskip("hls4ml")
    torch.manual_seed(1)
    path = _export(Residual(), (1, 4, 6, 6), tmp_path, "residual")
    report = compile_model(path, tmp_path / "h", CompileOptions(backend="hls4ml", n_random=24), progress=lambda _: None)
    check = report["csim_vs_qonnx"]
    assert check["outputs"] == 24 * 108 and check["mismatches"] == 0
    assert "Merge" in {layer["class_name"] for layer in report["hls4ml"]["layers"]}


class _FloatScaleResidual(Residual):
    """The branch's activation quantizer has a learned float scale (not a power of two)."""

    def __init__(self):
        super().__init__()
        from brevitas.quant import Uint8ActPerTensorFloat

        self.relu = brevitas_nn.QuantReLU(
            act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=False, max_val=1.3
        )


def test_residual_add_of_scales_that_are_not_powers_of_two_is_refused_by_name(tmp_path, capsys):
    torch.manual_seed(1)
    path = _export(_FloatScaleResidual(), (1, 4, 6, 6), tmp_path, "float_scale")
    with pytest.raises(ModelError, match=r"node 'Add_0' \(Add\): its inputs' scales .* are not both powers of two"):
        frontend.build_graph(frontend.load_model(path), "t")
    assert main(["compile", str(path), "--out", str(tmp_path / "o"), "--no-synth"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Add_0" in err[0] and "Traceback" not in err[0]
