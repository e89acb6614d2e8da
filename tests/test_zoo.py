"""The example networks: the digits split, the exported QONNX graphs (power-of-two quantizers, the node
sequence the front end expects), qonnx execution against the Brevitas module, accuracy floors and the cache.

The tests that need a trained network go through `zoo.build`, which caches under `cache_root()/zoo`: a cold
cache pays one training per network (about 5-10 s each), later runs none.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hardwire.hls import zoo

NAMES = ["mlp4", "mlp2", "cnn4"]
# Measured (seed 0): mlp4 0.983, mlp2 0.981, cnn4 0.983 on the 360 test images. Floors leave room for
# library-version drift without letting a broken network through.
ACCURACY_FLOOR = {"mlp4": 0.94, "mlp2": 0.92, "cnn4": 0.94}
EXPECTED_OPS = {
    "mlp4": ["Quant"] * 4 + ["Gemm", "BatchNormalization", "Relu", "Quant"] * 2 + ["Gemm"],
    "mlp2": ["Quant"] * 4 + ["Gemm", "BatchNormalization", "Relu", "Quant"] * 2 + ["Gemm"],
    "cnn4": ["Quant"] * 4
    + [
        "Conv",
        "BatchNormalization",
        "Relu",
        "Quant",
        "MaxPool",
        "Conv",
        "BatchNormalization",
        "Relu",
        "Quant",
        "Reshape",
        "Gemm",
    ],
}


@pytest.fixture(scope="module")
def digits():
    return zoo.load_digits_split(seed=0)


# --- data -----------------------------------------------------------------------------------------


def test_digits_split_is_stratified_deterministic_and_exact_in_4_bits(digits):
    x_train, y_train, x_test, y_test = digits
    assert x_train.shape == (1437, 64) and x_test.shape == (360, 64)
    assert x_train.dtype == np.float32 and y_test.dtype == np.int64
    for x in (x_train, x_test):
        levels = x * 16
        assert np.array_equal(levels, np.round(levels)), "pixels must be k/16"
        assert levels.min() == 0 and levels.max() == 15, "k must fit an unsigned 4-bit code"
    # stratified: every class's share of the test split is within one image of its share overall
    counts_all = np.bincount(np.concatenate([y_train, y_test]), minlength=10)
    counts_test = np.bincount(y_test, minlength=10)
    assert np.all(np.abs(counts_test - counts_all * 0.2) <= 1)
    again = zoo.load_digits_split(seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(digits, again))
    other = zoo.load_digits_split(seed=1)
    assert not np.array_equal(other[2], x_test)


def test_unknown_network_name_is_a_clear_error():
    with pytest.raises(ValueError, match="zoo network='mlp9'.*cnn4"):
        zoo.build("mlp9")


def test_input_quantizer_is_the_identity_on_the_data(digits):
    """The input QuantIdentity (unsigned 4 bits, scale 1/16) must not change any pixel."""
    import torch

    for name in NAMES:
        model = zoo.make_model(zoo.get_spec(name)).eval()
        x = torch.from_numpy(digits[2])
        with torch.no_grad():
            assert torch.equal(model[0](x), x), name


# --- the trained and exported networks ------------------------------------------------------------


@pytest.fixture(scope="module", params=NAMES)
def built(request):
    name = request.param
    return name, zoo.build(name), zoo.load_model(name)


def _is_power_of_two(value: float) -> bool:
    return value > 0 and math.frexp(value)[0] == 0.5


def test_export_has_expected_nodes_and_power_of_two_quantizers(built):
    from qonnx.core.modelwrapper import ModelWrapper

    name, entry, _ = built
    spec = zoo.get_spec(name)
    model = ModelWrapper(str(entry.onnx_path))
    assert [n.op_type for n in model.graph.node] == EXPECTED_OPS[name]
    assert tuple(model.get_tensor_shape(model.graph.input[0].name)) == spec.input_shape
    assert tuple(model.get_tensor_shape(model.graph.output[0].name)) == (1, 10)
    quants = [n for n in model.graph.node if n.op_type == "Quant"]
    for node in quants:
        scale = model.get_initializer(node.input[1])
        zero_point = model.get_initializer(node.input[2])
        bits = model.get_initializer(node.input[3])
        assert scale.size == 1 and _is_power_of_two(float(scale)), (node.name, scale)
        assert float(zero_point) == 0.0
        attrs = {a.name: a.i for a in node.attribute if a.name in ("signed", "narrow")}
        if node.input[0] == model.graph.input[0].name:
            assert float(scale) == zoo.INPUT_SCALE and float(bits) == spec.input_bits and attrs["signed"] == 0
        elif model.get_initializer(node.input[0]) is not None:
            assert float(bits) == spec.weight_bits and attrs == {"signed": 1, "narrow": 1}
        else:
            assert float(bits) == spec.act_bits and attrs["signed"] == 0
    assert entry.input_shape == spec.input_shape


def test_qonnx_execution_matches_brevitas_exactly_on_test_split(built, digits):
    """Power-of-two scales make every tensor k * 2^e: qonnx' float32 execution must equal Brevitas bit for bit."""
    name, entry, model = built
    spec = zoo.get_spec(name)
    _, _, x_test, y_test = digits
    reference = zoo.torch_predict(model, spec, x_test)
    start = time.perf_counter()
    out = zoo.qonnx_execute(entry.onnx_path, zoo.shape_input(spec, x_test))
    seconds = time.perf_counter() - start
    assert out.shape == (360, 10) and out.dtype == np.float32
    assert np.array_equal(out, reference), f"max |diff| {np.abs(out - reference).max()}"
    accuracy = float(np.mean(out.argmax(axis=1) == y_test))
    assert accuracy == entry.test_accuracy
    assert accuracy > ACCURACY_FLOOR[name]
    assert seconds < 30
    # chunked execution (a batch size that does not divide 360) gives the same outputs
    chunked = zoo.qonnx_execute(entry.onnx_path, zoo.shape_input(spec, x_test[:50]), batch=16)
    assert np.array_equal(chunked, reference[:50])


def test_logits_are_integer_multiples_of_the_accumulator_scale(built, digits):
    """Raw logits = integer accumulator * input scale * weight scale of the last layer (no bias, no output quant)."""
    from qonnx.core.modelwrapper import ModelWrapper

    name, entry, _ = built
    spec = zoo.get_spec(name)
    graph = ModelWrapper(str(entry.onnx_path))
    quants = [n for n in graph.graph.node if n.op_type == "Quant"]
    weight_scale = float(graph.get_initializer(quants[3].input[1]))  # last layer's weights
    act_scale = float(graph.get_initializer(quants[-1].input[1]))  # last activation quantizer
    out = zoo.qonnx_execute(entry.onnx_path, zoo.shape_input(spec, digits[2]))
    acc = out.astype(np.float64) / (weight_scale * act_scale)
    assert np.array_equal(acc, np.round(acc))
    assert np.abs(acc).max() < 2**20


def test_build_is_cached_and_leaves_no_partial_directories(built):
    name, entry, _ = built
    start = time.perf_counter()
    again = zoo.build(name)
    assert time.perf_counter() - start < 1.0
    assert again == entry
    files = sorted(p.name for p in entry.onnx_path.parent.iterdir())
    assert files == sorted([f"{name}.onnx", f"{name}.pt", "entry.json"])
    assert entry.onnx_path.parent == zoo.zoo_dir(name)
    prefix = f".{entry.onnx_path.parent.name}.tmp-"
    leftovers = [p.name for p in entry.onnx_path.parent.parent.iterdir() if p.name.startswith(prefix)]
    assert leftovers == []


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_training_is_deterministic(name, tmp_path):
    """Training again from the same seed reproduces the cached network exactly."""
    import torch

    zoo.build(name)
    cached = zoo.load_model(name).state_dict()
    fresh = zoo.train(name).state_dict()
    assert cached.keys() == fresh.keys()
    for key in cached:
        assert torch.equal(cached[key], fresh[key]), key
    entry = zoo.build(name, out_dir=tmp_path / name)
    assert entry.test_accuracy == zoo.build(name).test_accuracy
