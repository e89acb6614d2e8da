"""hls4ml back end: a QONNX network -> an hls4ml (Vitis HLS) C++ project, C-simulated against qonnx' execution.

The steps are the ones hls4ml's QONNX documentation lists: qonnx' cleanup, channels-last conversion, Gemm ->
MatMul (a bias-less Gemm first gets an explicit zero bias, which qonnx' GemmToMatMul requires), cleanup again,
then `hls4ml.converters.convert_from_onnx_model`.

Precisions. hls4ml 1.3 reads QONNX Quant nodes itself: a Quant with a power-of-two scale and zero point 0 becomes
a fixed-point type (weights: the weight type; activations: a `linear` activation or the preceding ReLU whose
result type is `ap_(u)fixed<bits, bits + log2(scale)>` with AP_RND_CONV = round half to even, the rounding of
qonnx' Quant (`np.round`), and AP_SAT, or AP_SAT_SYM for narrow range). Its precision inference sizes the
Dense/Conv accumulators from the input width, weight width and fan-in; we check that each accumulator and
result type holds every sum the layer can form (`LayerEntry.exact_accumulator`). Two things stay at hls4ml's
inexact default `fixed<16,6>` and are set here:
- the network input: set to the first Quant's type, so the float -> fixed conversion in the C++ wrapper *is* the
  input quantizer (same rounding, same saturation) and the hardware port is as narrow as the quantizer;
- BatchNormalization scale and bias (hls4ml computes them in float32 from gamma, beta, mean, var): set to the
  narrowest fixed-point type that holds every one of those values exactly (about 26-29 bits here), so the
  fixed-point `x * s + b` is exact; its result type is left to hls4ml's inference, which widens it to hold that.
  With hls4ml's default, a 64-32-10 MLP like the test's differed from qonnx in 106 of 1000 outputs (max 0.0098).
qonnx computes BatchNorm in float32, the hardware exactly: they could round differently only within a float32
ulp of a quantizer boundary. `batchnorm_audit` settles this per network by checking every value the BatchNorm's
input accumulator can take, on every channel, against qonnx' own execution of those nodes.

What hls4ml would compute inexactly runs on the host instead (`split_host_ops`): affine pre-processing before
the input quantizer and float ops after the last Dense/Conv that no Quant follows, both at hls4ml's default
fixed<16,6> otherwise (a (y - 0.37) / 1.3 * a + b tail differed from qonnx on every output). They are cut out
as ONNX models of their own, kept in the project and run by qonnx' executor on the exact values the project
takes and gives. Bipolar activations are refused, naming the node: hls4ml 1.3's C simulation of them is wrong.

We do not run synthesis: the project is ready for Vitis HLS (`build_prj.tcl`) by a user who has it. hls4ml 1.3
gives no resource estimate without the vendor tools (its `report` readers parse Vitis/Vivado output only).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import onnx

from hardwire.cache import atomic_dir, write_json_atomic
from hardwire.errors import ModelError, ParameterError, ToolMissingError

IO_TYPES = ("io_parallel", "io_stream")
BACKENDS = ("Vitis", "Vivado")
DEFAULT_PART = "xcu250-figd2104-2L-e"  # hls4ml's own default part for Vivado/Vitis
MAX_WEIGHT_BITS = 64  # widest fixed-point type a BatchNorm scale/bias may take to hold its float32 value exactly
COMPUTE_CLASSES = (
    "Dense",
    "Conv1D",
    "Conv2D",
    "PointwiseConv1D",
    "PointwiseConv2D",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
)
NO_ESTIMATE_NOTE = (
    "hls4ml 1.3 gives no resource estimate without the vendor tools: its report readers parse the "
    "output of a Vitis/Vivado HLS run, which we do not perform"
)
HOST_FILES = {"core": "hardwire_core.onnx", "before": "host_before.onnx", "after": "host_after.onnx"}
GXX_HINT = "g++ not found: hls4ml's C simulation compiles the project with g++ (apt-get install g++)"


@dataclass(frozen=True)
class LayerEntry:
    """One hls4ml layer: its name, class, every precision it declares and (Dense/Conv) its reuse factor."""

    name: str
    class_name: str
    precision: dict[str, str]
    reuse_factor: int | None
    requested_reuse_factor: int | None = None
    our_name: str | None = None  # the caller's layer name the reuse factor came from
    exact_accumulator: bool | None = None  # Dense/Conv: accum_t and result_t hold every possible sum exactly


@dataclass
class Hls4mlProject:
    """A written hls4ml project: where it is, what each layer got and the configuration used."""

    project_dir: Path
    onnx_path: Path
    backend: str
    part: str
    io_type: str
    layers: list[LayerEntry]
    config: dict
    hls4ml_version: str
    seconds: float
    resource_estimate: dict | None = None
    resource_estimate_note: str = NO_ESTIMATE_NOTE
    synthesized: bool = False
    source_onnx_path: Path | None = None  # the user's model when parts of it run on the host (else onnx_path)
    host_before: list[str] = field(default_factory=list)  # nodes run on the host before the project's input
    host_after: list[str] = field(default_factory=list)  # nodes run on the host on the project's output
    hls_model: object = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "hls_model"}
        data["layers"] = [asdict(layer) for layer in self.layers]
        data["config"] = json.loads(json.dumps(self.config, default=str))
        data["project_dir"] = str(self.project_dir)
        data["onnx_path"] = str(self.onnx_path)
        data["source_onnx_path"] = str(self.source_onnx_path) if self.source_onnx_path else None
        return data

    def host_model(self, which: str) -> Path | None:
        """The ONNX model of the nodes run on the host `before` or `after` the project, or None."""
        if not (self.host_before if which == "before" else self.host_after):
            return None
        return self.project_dir / HOST_FILES[which]

    @property
    def parameters_header(self) -> Path:
        return self.project_dir / "firmware" / "parameters.h"


@dataclass(frozen=True)
class CsimCheck:
    """hls4ml's C simulation against qonnx' execution of the same model, output by output."""

    n: int
    max_abs_diff: float
    mismatches: int  # outputs that are not bit-identical
    outputs: int
    argmax_agreement: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# QONNX preparation (the clean-ups hls4ml's QONNX front end documents)


def _load_clean(path: Path):
    """The QONNX model at `path`, cleaned up; a missing or unreadable file is the user's ModelError."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        return cleanup_model(ModelWrapper(onnx.load(str(path))))
    except Exception as error:  # noqa: BLE001 - onnx/qonnx raise many types for a bad file
        raise ModelError(f"{path}: qonnx could not load/clean the model ({type(error).__name__}: {error})") from None


def prepare_for_hls4ml(onnx_path: Path):
    """The model as hls4ml's ONNX front end takes it: cleaned, channels-last, Gemm -> MatMul + Add, cleaned."""
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    path = Path(onnx_path)
    model = _load_clean(path)
    for node in model.graph.node:
        if node.op_type == "Gemm" and len(node.input) == 2:
            # GemmToMatMul reads input C unconditionally; a zero bias keeps the graph's meaning
            n_out = model.get_tensor_shape(node.output[0])[-1]
            bias_name = f"{node.name}_zero_bias"
            model.set_initializer(bias_name, np.zeros(n_out, dtype=np.float32))
            node.input.append(bias_name)
    steps = (("channels-last conversion", ConvertToChannelsLastAndClean()), ("Gemm -> MatMul", GemmToMatMul()))
    for what, transform in steps:
        try:
            model = model.transform(transform)
        except Exception as error:  # noqa: BLE001 - qonnx transforms raise many types
            raise ModelError(f"{path}: qonnx' {what} failed ({type(error).__name__}: {error})") from None
    model = cleanup_model(model)
    _check_supported(model)
    return model


def _is_bipolar_activation(model, node) -> bool:
    """A BipolarQuant, or a signed 1-bit Quant (qonnx runs it as bipolar), on a tensor that is not a constant."""
    if model.get_initializer(node.input[0]) is not None:
        return False
    if node.op_type == "BipolarQuant":
        return True
    if node.op_type != "Quant":
        return False
    bits = model.get_initializer(node.input[3])
    signed = next((a.i for a in node.attribute if a.name == "signed"), 1)
    return bits is not None and float(np.ravel(bits)[0]) == 1 and bool(signed)


AVERAGING_OPS = ("AveragePool", "GlobalAveragePool", "ReduceMean")


def _check_supported(model) -> None:
    """Name the first node hls4ml's ONNX front end has no converter for (its own message omits the node)."""
    from hls4ml.converters import get_supported_onnx_layers

    supported = set(get_supported_onnx_layers())
    for node in model.graph.node:
        if _is_bipolar_activation(model, node):
            raise ModelError(
                f"node {node.name!r} ({node.op_type}) quantizes activations to bipolar -1/+1, which hls4ml 1.3 "
                "does not compute exactly (on a binary MLP its C simulation differed from qonnx on 295 of 320 "
                "outputs); compile binary networks with the RTL back end (--backend rtl), which has an "
                "XNOR-popcount datapath"
            )
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if (node.op_type == "Conv" and group != 1) or node.op_type in AVERAGING_OPS:
            what = (
                f"Conv, group={group}: a depthwise convolution"
                if node.op_type == "Conv"
                else f"{node.op_type}: an average"
            )
            raise ModelError(
                f"node {node.name!r} ({what}) is not supported by hardwire's hls4ml back end (it sets no "
                "exact precision for it); compile the network with the RTL back end (--backend rtl), "
                "which has a depthwise unit for it"
            )
        if node.op_type not in supported:
            raise ModelError(
                f"hls4ml 1.3's ONNX front end rejects node {node.name!r} (op {node.op_type}); it "
                f"converts {', '.join(sorted(supported))}"
            )


# ---------------------------------------------------------------------------------------------------------------
# What runs on the host: pre-processing before the input quantizer, a float tail after the last layer


def _submodel(model, nodes: list, input_name: str, output_name: str):
    """The nodes of `model` from tensor `input_name` to `output_name` as a model of their own."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper

    used = {name for node in nodes for name in node.input}
    graph = helper.make_graph(
        list(nodes),
        "part",
        [helper.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT, model.get_tensor_shape(input_name))],
        [helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, model.get_tensor_shape(output_name))],
        [init for init in model.graph.initializer if init.name in used],
        value_info=[
            info
            for info in model.graph.value_info
            if info.name in (used | {n.output[0] for n in nodes}) - {input_name, output_name}
        ],
    )
    return ModelWrapper(helper.make_model(graph, opset_imports=list(model.model.opset_import)))


def _split_last_gemm_bias(model, last) -> bool:
    """The float bias of the last layer, a Gemm no Quant follows, as an Add of its own after it (the Gemm keeps no
    bias), so that it goes to the host with the rest of the float tail: hls4ml would add it at a default precision
    (on MLPerf Tiny's autoencoder every output differed from qonnx, by up to 1e-3). True when the graph changed."""
    if last.op_type != "Gemm" or len(last.input) < 3 or not last.input[2]:
        return False
    if model.get_initializer(last.input[2]) is None:
        return False
    tensor = last.output[0]
    while tensor != model.graph.output[0].name:
        users = model.find_consumers(tensor)
        if len(users) != 1 or users[0].op_type in ("Quant", "BipolarQuant"):
            return False
        tensor = users[0].output[0]
    from onnx import helper

    bias, out = last.input[2], last.output[0]
    shape = model.get_tensor_shape(out)
    del last.input[2]
    last.output[0] = f"{out}_without_bias"
    model.set_tensor_shape(last.output[0], shape)
    add = helper.make_node("Add", [last.output[0], bias], [out], name=f"{last.name}_bias")
    nodes = list(model.graph.node)
    index = next(i for i, node in enumerate(nodes) if node is last or node == last)
    ordered = [*nodes[: index + 1], add, *nodes[index + 1 :]]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return True


def split_host_ops(onnx_path: Path, out_dir: Path) -> tuple[Path, list[str], list[str]]:
    """Cut the model into what hls4ml computes exactly and what runs on the host, and write the parts to
    `out_dir` (HOST_FILES). Before: the pre-processing between the input and the input Quant (layout ops and a
    constant affine x * a + b): hls4ml would compute it at its default fixed<16,6>. After: float ops after the
    last Dense/Conv that no Quant follows (e.g. a normalization as Sub/Div/Mul/Add with constants that are not
    powers of two): likewise. Both run on the host in float32 by qonnx' executor, on exactly the values the
    exported model gives them, so the results stay bit-exact. Returns (core model path, before, after) with the
    host nodes as "name (op)"; the core is the model itself when nothing is cut."""

    from hardwire.hls.frontend import AFFINE_OPS, LAYOUT_OPS

    path = Path(onnx_path)
    model = _load_clean(path)
    nodes = list(model.graph.node)
    in_name, out_name = model.graph.input[0].name, model.graph.output[0].name
    # before: from the input through layout/affine ops to the first Quant
    tensor, head = in_name, []
    while True:
        users = model.find_consumers(tensor)
        if len(users) != 1 or users[0].op_type not in LAYOUT_OPS + AFFINE_OPS:
            break
        head.append(users[0])
        tensor = users[0].output[0]
    cut_in = tensor
    if not any(node.op_type in AFFINE_OPS for node in head):
        head, cut_in = [], in_name  # layout alone: hls4ml handles it exactly
    # after: the ops after the last Dense/Conv when no Quant follows it
    compute = [
        i
        for i, node in enumerate(nodes)
        if node.op_type in ("MatMul", "Gemm", "Conv") and model.get_initializer(node.input[1]) is None
    ]
    tail, cut_out = [], out_name
    if compute and _split_last_gemm_bias(model, nodes[compute[-1]]):
        nodes = list(model.graph.node)
    if compute:
        last = nodes[compute[-1]]
        after = nodes[compute[-1] + 1 :]
        if (
            after
            and not any(node.op_type in ("Quant", "BipolarQuant") for node in after)
            and all(node.op_type in LAYOUT_OPS + AFFINE_OPS + ("BatchNormalization", "Relu", "Clip") for node in after)
        ):
            tail, cut_out = after, last.output[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    if not head and not tail:
        return path, [], []
    core_nodes = [node for node in nodes if node not in head and node not in tail]
    _submodel(model, core_nodes, cut_in, cut_out).save(str(out_dir / HOST_FILES["core"]))
    if head:
        _submodel(model, head, in_name, cut_in).save(str(out_dir / HOST_FILES["before"]))
    if tail:
        _submodel(model, tail, cut_out, out_name).save(str(out_dir / HOST_FILES["after"]))
    name = lambda node: f"{node.name} ({node.op_type})"  # noqa: E731
    return out_dir / HOST_FILES["core"], [name(n) for n in head], [name(n) for n in tail]


def _run_host_model(path: Path, x: np.ndarray) -> np.ndarray:
    """qonnx' execution of a host part, one sample at a time (batch 1, as exported) -> (B, ...)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(str(path))
    in_name, out_name = model.graph.input[0].name, model.graph.output[0].name
    shape = tuple(model.get_tensor_shape(in_name))
    outs = [execute_onnx(model, {in_name: np.asarray(sample, np.float32).reshape(shape)})[out_name] for sample in x]
    return np.stack([np.asarray(o) for o in outs]).reshape(len(x), *model.get_tensor_shape(out_name)[1:])


# ---------------------------------------------------------------------------------------------------------------
# Precisions


def _fixed_type_holding(values: np.ndarray, max_bits: int = MAX_WEIGHT_BITS) -> str:
    """The narrowest signed `fixed<W,I>` that represents every value exactly (values are float32/float64)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return "fixed<2,1>"
    frac = 0
    for v in nonzero:
        mantissa, exponent = math.frexp(float(v))  # v = mantissa * 2**exponent, 0.5 <= |mantissa| < 1
        digits = 53
        m = int(mantissa * (1 << 53))
        while m % 2 == 0:  # trailing zero bits of the mantissa
            m //= 2
            digits -= 1
        frac = max(frac, digits - exponent)
    integer = max(1, math.floor(math.log2(np.max(np.abs(nonzero)))) + 2)  # sign bit + integer bits
    width = integer + frac
    if width > max_bits:
        raise ModelError(f"a BatchNorm parameter needs fixed<{width},{integer}> to be exact (limit {max_bits} bits)")
    width = max(width, 1)  # all values tiny powers of two below 2**-integer: keep at least one bit
    return f"fixed<{width},{integer}>"


def _first_quant_type(model) -> str | None:
    """The hls4ml type string of the Quant that reads the graph input (through layout-only Transpose/Reshape
    nodes, e.g. the channels-last Transpose), or None."""
    tensor = model.graph.input[0].name
    for node in model.graph.node:
        if node.input[0] != tensor:
            continue
        if node.op_type in ("Transpose", "Reshape", "Flatten"):
            tensor = node.output[0]
            continue
        if node.op_type == "Quant":
            scale = model.get_initializer(node.input[1])
            zero = model.get_initializer(node.input[2])
            bits = model.get_initializer(node.input[3])
            if scale is None or zero is None or bits is None or np.any(zero != 0) or np.unique(scale).size != 1:
                return None
            mantissa, exponent = math.frexp(float(np.ravel(scale)[0]))
            if mantissa != 0.5:
                return None  # not a power of two: hls4ml scales explicitly, keep its own handling
            attrs = {a.name: a for a in node.attribute}
            signed = attrs["signed"].i if "signed" in attrs else 1
            narrow = attrs["narrow"].i if "narrow" in attrs else 0
            mode = attrs["rounding_mode"].s.decode() if "rounding_mode" in attrs else "ROUND"
            rounding = {"ROUND": "RND_CONV", "FLOOR": "TRN"}.get(mode)
            if rounding is None:
                return None
            width = math.ceil(float(np.ravel(bits)[0]))
            integer = width + exponent - 1
            kind = "fixed" if signed else "ufixed"
            saturation = "SAT_SYM" if narrow else "SAT"
            return f"{kind}<{width},{integer},{rounding},{saturation}>"
        return None
    return None


def _compute_layer_names(model, config: dict) -> list[str]:
    """ONNX node names of the MatMul/Conv nodes that become hls4ml Dense/Conv layers, in graph order (the order
    hls4ml parses and keeps). A MatMul with no constant (Quant-ed) operand is not a dense layer and not counted."""
    names = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Conv") and node.name in config["LayerName"]:
            names.append(node.name)
    return names


def _reuse_plan(reuse_factors, compute_names: list[str]) -> list[tuple[str | None, int]]:
    """(our name, reuse factor) per hls4ml compute layer, by order; a dict's insertion order is its order."""
    if reuse_factors is None:
        return [(None, 1)] * len(compute_names)
    items = list(reuse_factors.items()) if isinstance(reuse_factors, dict) else [(None, r) for r in reuse_factors]
    if len(items) != len(compute_names):
        raise ParameterError(
            "reuse_factors",
            reuse_factors,
            f"one entry per Dense/Conv layer in order: {len(compute_names)} ({compute_names})",
        )
    for our_name, rf in items:
        if not isinstance(rf, (int, np.integer)) or rf < 1:
            raise ParameterError(f"reuse_factors[{our_name!r}]" if our_name else "reuse_factors", rf, "an int >= 1")
    return [(name, int(rf)) for name, rf in items]


def _holds(precision, lsb_exponent: int, max_abs: float) -> bool:
    """Whether a fixed/integer type has a step of at most 2**lsb_exponent and holds every value up to max_abs."""
    width, integer = int(precision.width), int(precision.integer)
    if width - integer < -lsb_exponent:
        return False
    top = 2.0 ** (integer - 1) if precision.signed else 2.0**integer
    return max_abs < top


def _accumulator_range(layer) -> tuple[int, float] | None:
    """(step exponent, largest |value|) of every sum a Dense/Conv layer can form from its input type, weights and
    bias: step = input step * weight step (or the bias step if finer), |sum| <= sum over the fan-in of |w| * max|x|
    + |bias|. None when a type is not fixed-point or the bias is not exactly representable in its type."""
    in_type = layer.get_input_variable().type.precision
    w_type = layer.types["weight_t"].precision
    if not all(hasattr(t, "integer") for t in (in_type, w_type)):
        return None
    in_frac = int(in_type.width) - int(in_type.integer)
    w_frac = int(w_type.width) - int(w_type.integer)
    x_max = 2.0 ** (int(in_type.integer) - (1 if in_type.signed else 0))
    weights = np.abs(np.asarray(layer.weights["weight"].data, dtype=np.float64))
    n_out = int(layer.get_attr("n_out") or layer.get_attr("n_filt"))
    per_output = weights.reshape(-1, n_out).sum(axis=0) if weights.shape[-1] == n_out else weights.sum()
    bias = np.abs(np.asarray(layer.weights["bias"].data, dtype=np.float64)) if "bias" in layer.weights else 0.0
    max_abs = float(np.max(per_output * x_max + bias))
    lsb = -(in_frac + w_frac)
    if "bias" in layer.weights and np.any(bias != 0):
        b_type = layer.types["bias_t"].precision
        b_frac = int(b_type.width) - int(b_type.integer)
        if not np.all(np.ldexp(bias, b_frac) == np.round(np.ldexp(bias, b_frac))):
            return None  # the bias itself is rounded to its type
        lsb = min(lsb, -b_frac)
    return lsb, max_abs


def _accumulator_is_exact(layer) -> bool:
    """A Dense/Conv layer's accumulator and result types hold every sum it can form (see _accumulator_range)."""
    bound = _accumulator_range(layer)
    return bound is not None and all(_holds(layer.types[t].precision, *bound) for t in ("accum_t", "result_t"))


def _layer_table(hls_model, requested: dict[str, tuple[str | None, int]]) -> list[LayerEntry]:
    table = []
    compute_index = 0
    plan = list(requested.values())
    for layer in hls_model.get_layers():
        precision = {name: str(t.precision) for name, t in layer.types.items()}
        is_compute = layer.class_name in COMPUTE_CLASSES
        our_name, wanted = plan[compute_index] if is_compute and compute_index < len(plan) else (None, None)
        if is_compute:
            compute_index += 1
        table.append(
            LayerEntry(
                name=layer.name,
                class_name=layer.class_name,
                precision=precision,
                reuse_factor=int(layer.get_attr("reuse_factor")) if is_compute else None,
                requested_reuse_factor=wanted,
                our_name=our_name,
                exact_accumulator=_accumulator_is_exact(layer) if is_compute else None,
            )
        )
    return table


def _check_batchnorm_types(hls_model, config: dict) -> None:
    """Every BatchNorm layer must carry the exact scale/bias types we set (a renamed one would keep the default)."""
    for layer in hls_model.get_layers():
        if layer.class_name != "BatchNormalization":
            continue
        wanted = config["LayerName"].get(layer.name, {}).get("Precision", {})
        for weight in ("scale", "bias"):
            have = layer.types[f"{weight}_t"].precision
            if weight not in wanted or not str(have).startswith(wanted[weight].rstrip(">")):
                raise ModelError(
                    f"hls4ml layer {layer.name!r} (BatchNormalization): {weight} type {have} is not the "
                    f"exact type {wanted.get(weight)!r} we set; its arithmetic would not be exact"
                )


def _convert(model, config: dict, out_dir: Path, io_type: str, backend: str, part: str, project_name: str):
    import hls4ml

    try:
        return hls4ml.converters.convert_from_onnx_model(
            model,
            output_dir=str(out_dir),
            project_name=project_name,
            io_type=io_type,
            backend=backend,
            part=part,
            hls_config=config,
        )
    except Exception as error:  # hls4ml raises bare Exception/KeyError/RuntimeError
        raise ModelError(f"hls4ml rejected the model: {_name_the_node(model, error)}") from error


def _name_the_node(model, error: Exception) -> str:
    """hls4ml's message, with the ONNX node (name, op type) it is about when the message mentions one."""
    message = f"{type(error).__name__}: {error}"
    for node in model.graph.node:
        if node.name and re.search(rf"\b({re.escape(node.name)}|{re.escape(node.op_type)})\b", message):
            return f"node {node.name!r} (op {node.op_type}): {message}"
    return message


def build_config(model, reuse_factors=None, backend: str = "Vitis", strategy: str = "Latency"):
    """hls4ml's per-name configuration with our precisions and reuse factors (before the BatchNorm pass)."""
    import hls4ml

    try:
        config = hls4ml.utils.config.config_from_onnx_model(
            model, granularity="name", backend=backend, default_precision="fixed<16,6>", default_reuse_factor=1
        )
    except Exception as error:  # hls4ml raises bare Exception
        raise ModelError(f"hls4ml rejected the model: {_name_the_node(model, error)}") from error
    config["Model"]["Strategy"] = strategy
    compute_names = _compute_layer_names(model, config)
    plan = _reuse_plan(reuse_factors, compute_names)
    for onnx_name, (_, rf) in zip(compute_names, plan):
        config["LayerName"][onnx_name]["ReuseFactor"] = rf
    input_type = _first_quant_type(model)
    if input_type is not None:
        input_name = model.graph.input[0].name
        config["LayerName"].setdefault(input_name, {}).setdefault("Precision", {})["result"] = input_type
    return config, dict(zip(compute_names, plan))


# ---------------------------------------------------------------------------------------------------------------
# The project


def hls4ml_project(
    onnx_path,
    out_dir,
    *,
    reuse_factors: dict[str, int] | list[int] | None = None,
    io_type: str = "io_stream",
    backend: str = "Vitis",
    part: str = DEFAULT_PART,
    strategy: str = "Latency",
    project_name: str = "myproject",
    replace: bool = True,
    exact_batchnorm: bool = True,
) -> Hls4mlProject:
    """Write the hls4ml project of the QONNX model at `onnx_path` into `out_dir` (atomically).

    `reuse_factors` gives the i-th Dense/Conv layer (hls4ml order = the network's order) the i-th entry (a dict's
    keys are our layer names, kept in the table). hls4ml moves an invalid reuse factor to the closest valid one;
    the table shows requested and used values.

    `io_type` defaults to "io_stream": layers become a dataflow pipeline joined by FIFOs, one layer per stage with
    its own reuse factor, which is the architecture our network compiler's folding (SIMD/PE per layer) describes;
    convolutions stream through line buffers instead of hls4ml's fully unrolled im2col of io_parallel. Both
    io types C-simulate bit-exactly on the test networks.

    `exact_batchnorm=False` leaves BatchNorm scale/bias at hls4ml's default type (for measuring what hls4ml's
    automatic precisions give: not bit-exact)."""

    if io_type not in IO_TYPES:
        raise ParameterError("io_type", io_type, " or ".join(IO_TYPES))
    if backend not in BACKENDS:
        raise ParameterError("backend", backend, " or ".join(BACKENDS))
    if strategy not in ("Latency", "Resource"):
        raise ParameterError("strategy", strategy, "Latency or Resource")
    start = time.perf_counter()
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as parts:
        core_path, host_before, host_after = split_host_ops(onnx_path, Path(parts))
        model = prepare_for_hls4ml(core_path)
        config, requested = build_config(model, reuse_factors, backend, strategy)
        with atomic_dir(out_dir, replace=replace) as tmp:
            for piece in Path(parts).iterdir():
                shutil.copy(piece, tmp / piece.name)
            project = _write_project(
                model,
                config,
                requested,
                tmp,
                out_dir,
                onnx_path,
                io_type,
                backend,
                part,
                project_name,
                exact_batchnorm,
                start,
                host_before,
                host_after,
            )
    project.hls_model.config.config["OutputDir"] = str(out_dir)  # the directory was renamed into place
    return project


def _write_project(
    model,
    config,
    requested,
    tmp: Path,
    out_dir: Path,
    onnx_path: Path,
    io_type,
    backend,
    part,
    project_name,
    exact_batchnorm,
    start,
    host_before,
    host_after,
) -> Hls4mlProject:
    """Convert (twice: the first pass reads the BatchNorm values to type them exactly), write and describe."""
    import hls4ml

    # first pass: read the BatchNorm scale/bias hls4ml computes, to give them types that hold them exactly
    probe = _convert(model, json.loads(json.dumps(config)), tmp / "probe", io_type, backend, part, project_name)
    for layer in probe.get_layers():
        if exact_batchnorm and layer.class_name == "BatchNormalization" and layer.name in config["LayerName"]:
            precision = config["LayerName"][layer.name].setdefault("Precision", {})
            for weight in ("scale", "bias"):
                precision[weight] = _fixed_type_holding(layer.weights[weight].data_unquantized)
            precision["result"] = "auto"
    shutil.rmtree(tmp / "probe", ignore_errors=True)

    project_dir = tmp
    hls_model = _convert(model, json.loads(json.dumps(config)), project_dir, io_type, backend, part, project_name)
    if exact_batchnorm:
        _check_batchnorm_types(hls_model, config)
    hls_model.write()
    model.save(str(project_dir / "model_hls4ml_input.onnx"))
    table = _layer_table(hls_model, requested)
    split = bool(host_before or host_after)
    project = Hls4mlProject(
        project_dir=out_dir,
        onnx_path=out_dir / HOST_FILES["core"] if split else onnx_path,
        backend=backend,
        part=part,
        io_type=io_type,
        layers=table,
        config=config,
        hls4ml_version=hls4ml.__version__,
        seconds=round(time.perf_counter() - start, 3),
        source_onnx_path=onnx_path if split else None,
        host_before=host_before,
        host_after=host_after,
        hls_model=hls_model,
    )
    write_json_atomic(project_dir / "hardwire_project.json", project.to_dict())
    return project


# ---------------------------------------------------------------------------------------------------------------
# C simulation against qonnx


def _qonnx_reference(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    """qonnx' execution of the original model, one sample at a time (batch 1, as exported)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(str(onnx_path))
    in_name = model.graph.input[0].name
    out_name = model.graph.output[0].name
    shape = tuple(model.get_tensor_shape(in_name))
    outputs = [execute_onnx(model, {in_name: sample.reshape(shape).astype(np.float32)})[out_name] for sample in x]
    return np.stack([np.asarray(o).reshape(-1) for o in outputs])


def _hls_model(project: Hls4mlProject):
    """The project's hls4ml model object; rebuilt from the same ONNX and config for a project read from JSON."""
    if project.hls_model is None:
        model = prepare_for_hls4ml(project.onnx_path)
        project.hls_model = _convert(
            model,
            json.loads(json.dumps(project.config)),
            project.project_dir,
            project.io_type,
            project.backend,
            project.part,
            "myproject",
        )
    project.hls_model.config.config["OutputDir"] = str(project.project_dir)
    return project.hls_model


def csim_check(project: Hls4mlProject, onnx_path, x: np.ndarray) -> CsimCheck:
    """Compile the project with g++ (hls4ml's C simulation), predict `x` (samples in the ONNX layout, channels
    first) and compare against qonnx' execution of the model at `onnx_path`. Writes only inside the project."""
    if shutil.which("g++") is None:
        raise ToolMissingError(GXX_HINT)
    start = time.perf_counter()
    x = np.asarray(x, dtype=np.float32)
    hls_model = _hls_model(project)
    try:
        if getattr(hls_model, "_top_function_lib", None) is None:  # compile once per model object
            hls_model.compile()
    except Exception as error:  # hls4ml raises a bare Exception with the compiler output
        raise ModelError(f"g++ could not compile the hls4ml project in {project.project_dir}: {error}") from error
    # the prepared graph keeps the ONNX input layout (channels-last conversion puts a Transpose after the input)
    before, after = project.host_model("before"), project.host_model("after")
    core_in = _run_host_model(before, x) if before is not None else x
    predicted = np.asarray(
        hls_model.predict(np.ascontiguousarray(core_in.reshape(len(x), -1).astype(np.float32))), dtype=np.float32
    )
    if after is not None:
        # the project's output is the last layer's (exact) output; the float tail runs on it as qonnx runs it
        predicted = _run_host_model(after, predicted)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(len(x), -1)
    expected = _qonnx_reference(Path(onnx_path), x).astype(np.float64)
    if predicted.shape != expected.shape:
        raise ModelError(f"C simulation gave outputs of shape {predicted.shape}, qonnx {expected.shape}")
    diff = np.abs(predicted - expected)
    return CsimCheck(
        n=len(x),
        max_abs_diff=float(diff.max(initial=0.0)),
        mismatches=int(np.count_nonzero(predicted != expected)),
        outputs=int(expected.size),
        argmax_agreement=float(np.mean(np.argmax(predicted, axis=1) == np.argmax(expected, axis=1))),
        seconds=round(time.perf_counter() - start, 3),
    )


# ---------------------------------------------------------------------------------------------------------------
# BatchNorm audit: every accumulator value, hardware arithmetic vs qonnx' float32 BatchNorm -> ReLU -> Quant


@dataclass(frozen=True)
class BatchNormAudit:
    """One BatchNorm -> activation quantizer stage checked on every value its input accumulator can take."""

    layer: str
    channels: int
    values_per_channel: int
    mismatches: int  # (value, channel) pairs where the hardware's quantized output differs from qonnx'
    max_level_diff: int  # largest difference, in quantizer levels

    def to_dict(self) -> dict:
        return asdict(self)


def _fixed_parts(precision) -> tuple[int, int, bool]:
    return int(precision.width), int(precision.integer), bool(precision.signed)


def _round_half_even_shift(y: np.ndarray, shift: int) -> np.ndarray:
    """y / 2**shift rounded half to even (AP_RND_CONV), in integers."""
    if shift <= 0:
        return y << -shift
    floor = y >> shift
    rest = y - (floor << shift)
    half = 1 << (shift - 1)
    up = (rest > half) | ((rest == half) & (floor % 2 == 1))
    return floor + up


def _hardware_batchnorm_levels(k: np.ndarray, lsb_frac: int, bn, activation) -> np.ndarray:
    """What the generated C++ computes, as quantizer levels (values x channels): the exact fixed-point
    `x * scale + bias` (x = k * 2**-lsb_frac), ReLU if the activation is one, then the cast to the activation's
    result type with round half to even and saturation."""
    s_w, s_i, _ = _fixed_parts(bn.types["scale_t"].precision)
    b_w, b_i, _ = _fixed_parts(bn.types["bias_t"].precision)
    s_frac, b_frac = s_w - s_i, b_w - b_i
    scale = np.ldexp(np.asarray(bn.weights["scale"].data, dtype=np.float64).ravel(), s_frac).astype(np.int64)
    bias = np.ldexp(np.asarray(bn.weights["bias"].data, dtype=np.float64).ravel(), b_frac).astype(np.int64)
    frac = max(lsb_frac + s_frac, b_frac)
    y = (k[:, None] * scale[None, :]) << (frac - lsb_frac - s_frac)
    y = y + (bias[None, :] << (frac - b_frac))
    if activation.get_attr("activation", "").lower() == "relu":
        y = np.maximum(y, 0)
    out = activation.types["result_t"].precision
    o_w, o_i, o_signed = _fixed_parts(out)
    levels = _round_half_even_shift(y, frac - (o_w - o_i))
    if o_signed:
        low, high = -(1 << (o_w - 1)), (1 << (o_w - 1)) - 1
        if "SAT_SYM" in str(out):
            low += 1
    else:
        low, high = 0, (1 << o_w) - 1
    return np.clip(levels, low, high)


def _qonnx_stage(onnx_path: Path, bn_name: str, x: np.ndarray) -> tuple[np.ndarray, float]:
    """qonnx' execution of the original BatchNorm node and the nodes after it up to its activation Quant, on
    x (values x channels, broadcast over any spatial dimensions). Returns (levels, quantizer scale)."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    model = ModelWrapper(str(onnx_path))
    bn = next((n for n in model.graph.node if n.name == bn_name and n.op_type == "BatchNormalization"), None)
    if bn is None:
        raise ModelError(f"{onnx_path}: no BatchNormalization node {bn_name!r} to audit")
    chain, tensor = [bn], bn.output[0]
    while chain[-1].op_type != "Quant":
        consumers = model.find_consumers(tensor)
        if len(consumers) != 1 or consumers[0].op_type not in ("Relu", "Quant", "Identity"):
            raise ModelError(f"node {bn_name!r}: the audit expects BatchNorm -> [Relu] -> Quant")
        chain.append(consumers[0])
        tensor = consumers[0].output[0]
    rank = len(model.get_tensor_shape(bn.input[0]))
    shape = (x.shape[0], x.shape[1]) + (1,) * (rank - 2)
    used = {name for node in chain for name in node.input[1:]}
    graph = helper.make_graph(
        list(chain),
        "stage",
        [helper.make_tensor_value_info(bn.input[0], onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, shape)],
        [init for init in model.graph.initializer if init.name in used],
    )
    stage = ModelWrapper(helper.make_model(graph, opset_imports=list(model.model.opset_import)))
    stage = stage.transform(InferShapes())
    out = execute_onnx(stage, {bn.input[0]: x.reshape(shape).astype(np.float32)})[tensor].reshape(x.shape)
    scale = float(np.ravel(model.get_initializer(chain[-1].input[1]))[0])
    return np.asarray(out, dtype=np.float64) / scale, scale


def batchnorm_audit(project: Hls4mlProject, onnx_path=None) -> list[BatchNormAudit]:
    """Check each BatchNorm stage on every value its input accumulator can take (the whole range of the exact
    sum, see _accumulator_range, every channel): the hardware's fixed-point result against qonnx' float32
    execution of the same BatchNorm -> ReLU -> Quant nodes. This covers all inputs, not a sample."""
    onnx_path = Path(onnx_path) if onnx_path is not None else project.onnx_path
    hls_model = _hls_model(project)
    audits = []
    for bn in hls_model.get_layers():
        if bn.class_name != "BatchNormalization":
            continue
        producer = bn.get_input_node()
        consumers = [layer for layer in hls_model.get_layers() if bn.outputs[0] in layer.inputs]
        bound = _accumulator_range(producer) if producer.class_name in COMPUTE_CLASSES else None
        if bound is None or len(consumers) != 1 or consumers[0].class_name != "Activation":
            raise ModelError(f"hls4ml layer {bn.name!r}: the audit expects Dense/Conv -> BatchNorm -> activation")
        lsb, max_abs = bound
        count = int(np.floor(max_abs * 2.0**-lsb))
        k = np.arange(-count, count + 1, dtype=np.int64)
        hardware = _hardware_batchnorm_levels(k, -lsb, bn, consumers[0])
        values = np.ldexp(k.astype(np.float64), lsb)
        x = np.repeat(values[:, None], hardware.shape[1], axis=1)
        reference, _ = _qonnx_stage(onnx_path, bn.name, x)
        diff = np.abs(hardware - reference)
        audits.append(
            BatchNormAudit(
                layer=bn.name,
                channels=int(hardware.shape[1]),
                values_per_channel=len(k),
                mismatches=int(np.count_nonzero(diff)),
                max_level_diff=int(diff.max(initial=0)),
            )
        )
    return audits
