"""hls4ml back end: projects from QONNX models, C-simulated (g++) bit-exactly against qonnx' execution."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import pytest
from hardwire.hls import hls4ml_backend
from hardwire.hls.hls4ml_backend import batchnorm_audit, csim_check, hls4ml_project
from onnx import TensorProto, helper, numpy_helper

from hardwire.errors import ModelError, ParameterError, ToolMissingError

pytest.importorskip("hls4ml")
torch = pytest.importorskip("torch")
qnn = pytest.importorskip("brevitas.nn")

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="hls4ml's C simulation needs g++")


def _quantizers():
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    class InputQuant(Uint8ActPerTensorFixedPoint):
        bit_width = 4
        scaling_impl_type = "const"
        scaling_init = 1.0  # scale exactly 1/16: k/16 pixels pass unchanged

    class WeightQuant(Int8WeightPerTensorFixedPoint):
        bit_width = 4

    class ActQuant(Uint8ActPerTensorFixedPoint):
        bit_width = 4

    return InputQuant, WeightQuant, ActQuant


def _randomize_batchnorm(model, seed: int) -> None:
    """Non-trivial BatchNorm statistics, so the folded scale/bias are arbitrary float32 numbers."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.5)


def _mlp():
    inq, wq, aq = _quantizers()
    return torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=inq),
        qnn.QuantLinear(64, 32, bias=False, weight_quant=wq),
        torch.nn.BatchNorm1d(32),
        qnn.QuantReLU(act_quant=aq),
        qnn.QuantLinear(32, 10, bias=False, weight_quant=wq),
    )


def _cnn():
    inq, wq, aq = _quantizers()
    return torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=inq),
        qnn.QuantConv2d(1, 4, 3, padding=1, bias=False, weight_quant=wq),
        torch.nn.BatchNorm2d(4),
        qnn.QuantReLU(act_quant=aq),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        qnn.QuantLinear(4 * 4 * 4, 10, bias=False, weight_quant=wq),
    )


def _export(module, shape, path):
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    module.eval()
    raw = path.with_name(path.stem + ".raw.onnx")
    export_qonnx(module, torch.zeros(shape), export_path=str(raw))
    cleanup_model(ModelWrapper(str(raw))).save(str(path))
    return path


def _pixels(n: int, shape, seed: int) -> np.ndarray:
    """k/16 pixels, k in 0..15 (exact for the 4-bit input quantizer), with the all-0 and all-15/16 corners first."""
    x = np.random.default_rng(seed).integers(0, 16, size=(n, *shape)).astype(np.float32) / 16
    x[0] = 0.0
    x[1] = 15 / 16
    return x


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hls4ml_models")
    torch.manual_seed(0)
    mlp, cnn = _mlp(), _cnn()
    _randomize_batchnorm(mlp, 1)
    _randomize_batchnorm(cnn, 2)
    return {
        "mlp": (mlp, _export(mlp, (1, 64), root / "mlp.onnx"), (64,)),
        "cnn": (cnn, _export(cnn, (1, 1, 8, 8), root / "cnn.onnx"), (1, 8, 8)),
    }


# our layer names -> reuse factors, in network order (valid hls4ml reuse factors for these layer sizes)
REUSE = {"mlp": {"fc0": 2, "fc1": 4}, "cnn": {"conv0": 2, "fc": 8}}


@pytest.fixture(scope="module")
def projects(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("hls4ml_projects")
    built = {}
    for name, (_, path, _) in models.items():
        built[name] = hls4ml_project(path, root / name, reuse_factors=REUSE[name], io_type="io_stream")
    return built


def test_qonnx_reference_matches_brevitas(models):
    """The golden model itself: qonnx' execution of the export equals Brevitas' own forward pass."""
    for name, (module, path, shape) in models.items():
        x = _pixels(8, shape, seed=3)
        expected = module(torch.from_numpy(x)).detach().numpy()
        got = hls4ml_backend._qonnx_reference(path, x)
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)


@needs_gxx
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_csim_is_bit_exact_against_qonnx(projects, models, name):
    _, path, shape = models[name]
    check = csim_check(projects[name], path, _pixels(100, shape, seed=7))
    assert check.n == 100 and check.outputs == 1000
    assert check.mismatches == 0, check
    assert check.max_abs_diff == 0.0
    assert check.argmax_agreement == 1.0


@pytest.mark.slow
@needs_gxx
def test_io_parallel_mlp_is_bit_exact_too(models, tmp_path):
    _, path, shape = models["mlp"]
    project = hls4ml_project(path, tmp_path / "mlp_parallel", io_type="io_parallel")
    check = csim_check(project, path, _pixels(100, shape, seed=8))
    assert check.mismatches == 0, check


def _with_batchnorm_bias_moved(path, out, delta=0.2):
    proto = onnx.load(str(path))
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    bias = next(t for t in proto.graph.initializer if t.name == bn.input[2])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(delta), bias.name))
    onnx.save(proto, str(out))
    return out


@needs_gxx
def test_csim_check_detects_a_different_model(projects, models, tmp_path):
    """The check can fail: against a model whose BatchNorm bias moved, the same compiled project disagrees."""
    _, path, shape = models["mlp"]
    changed = _with_batchnorm_bias_moved(path, tmp_path / "changed.onnx")
    check = csim_check(projects["mlp"], changed, _pixels(50, shape, seed=9))
    assert check.mismatches > 0 and check.max_abs_diff > 0


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_batchnorm_is_exact_for_every_accumulator_value(projects, name):
    """Not a sample: every value the BatchNorm's input accumulator can take, every channel, hardware fixed-point
    arithmetic against qonnx' float32 BatchNorm -> ReLU -> Quant."""
    (audit,) = batchnorm_audit(projects[name])
    assert audit.values_per_channel > 900 and audit.channels == {"mlp": 32, "cnn": 4}[name]
    assert audit.mismatches == 0, audit


def test_batchnorm_audit_can_fail(projects, models, tmp_path):
    changed = _with_batchnorm_bias_moved(models["cnn"][1], tmp_path / "changed.onnx", delta=0.05)
    (audit,) = batchnorm_audit(projects["cnn"], changed)
    assert audit.mismatches > 0 and audit.max_level_diff == 1


def test_hls4ml_default_batchnorm_precision_is_not_exact(models, tmp_path):
    """Why the BatchNorm types are set by hand: hls4ml's automatic result keeps scale/bias at fixed<16,6>."""
    project = hls4ml_project(models["mlp"][1], tmp_path / "default_bn", exact_batchnorm=False)
    bn = next(layer for layer in project.layers if layer.class_name == "BatchNormalization")
    assert bn.precision["scale_t"].startswith("fixed<16,6")
    (audit,) = batchnorm_audit(project)
    assert audit.mismatches > 0


def _header_reuse_factors(header: str) -> dict[str, set[int]]:
    """reuse_factor values of each layer section (`// <layer name>` comment, then its config structs)."""
    found: dict[str, set[int]] = {}
    current = None
    for line in header.splitlines():
        section = re.match(r"^// (\w+)$", line.strip())
        if section and not line.strip().startswith("// hls-fpga"):
            current = section.group(1)
        match = re.search(r"reuse_factor = (\d+);", line)
        if match and current:
            found.setdefault(current, set()).add(int(match.group(1)))
    return found


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_reuse_factors_land_in_parameters_header(projects, name):
    project = projects[name]
    compute = [layer for layer in project.layers if layer.reuse_factor is not None]
    assert [layer.our_name for layer in compute] == list(REUSE[name])
    assert [layer.reuse_factor for layer in compute] == list(REUSE[name].values())
    in_header = _header_reuse_factors(project.parameters_header.read_text())
    for layer, rf in zip(compute, REUSE[name].values()):
        assert in_header[layer.name] == {rf}, (layer.name, in_header)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_precisions_come_from_the_quantizers(projects, name):
    layers = {layer.name: layer for layer in projects[name].layers}
    # the input port is the 4-bit input quantizer itself, rounding half to even and saturating like qonnx' Quant
    assert layers["global_in"].precision["result_t"].startswith("ufixed<4,0,RND_CONV,SAT")
    for layer in layers.values():
        if layer.reuse_factor is not None:
            assert layer.exact_accumulator, layer
            assert "SAT_SYM" in layer.precision["weight_t"]  # Brevitas' narrow-range 4-bit weights
        if layer.class_name == "BatchNormalization":
            assert not layer.precision["scale_t"].startswith("fixed<16,6")  # not hls4ml's inexact default
        if layer.class_name == "Activation":
            assert layer.precision["result_t"].startswith("ufixed<4,0,RND_CONV,SAT")


def test_project_serializes_and_says_no_synthesis(projects):
    project = projects["cnn"]
    data = json.loads(json.dumps(project.to_dict()))
    assert data["synthesized"] is False and data["resource_estimate"] is None
    assert "vendor tools" in data["resource_estimate_note"]
    on_disk = json.loads((project.project_dir / "hardwire_project.json").read_text())
    assert on_disk["layers"] == data["layers"]
    assert (project.project_dir / "build_prj.tcl").is_file()
    assert not list(project.project_dir.parent.glob(".*tmp-*"))  # nothing half-written beside it


def test_unsupported_node_is_named_and_leaves_no_directory(tmp_path):
    nodes = [
        helper.make_node(
            "Quant",
            ["x", "s", "z", "b"],
            ["q"],
            domain="qonnx.custom_op.general",
            name="Quant_0",
            rounding_mode="ROUND",
            signed=0,
            narrow=0,
        ),
        helper.make_node("Sin", ["q"], ["y"], name="Sin_0"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [
            helper.make_tensor("s", TensorProto.FLOAT, [], [0.0625]),
            helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("b", TensorProto.FLOAT, [], [4.0]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("qonnx.custom_op.general", 1)]
    )
    path = tmp_path / "sin.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=r"'Sin_0' \(op Sin\)"):
        hls4ml_project(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_reuse_factor_list_must_match_the_layers(models, tmp_path):
    _, path, _ = models["mlp"]
    with pytest.raises(ParameterError, match="reuse_factors"):
        hls4ml_project(path, tmp_path / "out", reuse_factors=[2, 2, 2])
    with pytest.raises(ParameterError, match="io_type"):
        hls4ml_project(path, tmp_path / "out", io_type="io_serial")
    assert not (tmp_path / "out").exists()


def test_missing_gxx_is_a_tool_missing_error(projects, models, monkeypatch):
    monkeypatch.setattr(hls4ml_backend.shutil, "which", lambda tool: None)
    with pytest.raises(ToolMissingError, match="apt-get install g\\+\\+"):
        csim_check(projects["mlp"], models["mlp"][1], _pixels(2, (64,), seed=0))


@pytest.mark.slow
@needs_gxx
@pytest.mark.parametrize("name", ["mlp4", "mlp2", "cnn4"])
def test_trained_zoo_network_is_bit_exact_on_the_digits_test_split(name, tmp_path):
    from hardwire.hls import zoo

    entry = zoo.build(name)  # trains once, then cached
    _, _, x_test, _ = zoo.load_digits_split()
    project = hls4ml_project(entry.onnx_path, tmp_path / name)
    assert all(audit.mismatches == 0 for audit in batchnorm_audit(project))
    check = csim_check(project, entry.onnx_path, zoo.shape_input(zoo.get_spec(name), x_test))
    assert check.n == 360 and check.mismatches == 0, check
