"""QONNX front end: a Brevitas-exported (QONNX) network -> our chain of integer layers (hls.graph.IntGraph).

The walk follows the data from the input Quant node. A MatMul/Gemm/Conv whose weights come from a Quant node
becomes a MatVecLayer with integer weights; the per-element float ops after it (bias Add, BatchNormalization,
Mul, ReLU, Clip, ...) up to the next activation Quant become per-channel thresholds (FINN's streamlining).

The thresholds are not derived by algebra on the float parameters: they are found by running those very ops
with qonnx' own executor on every candidate accumulator value (binary search per level, then an exhaustive or
sampled check), so the integer layer reproduces qonnx' float32 execution bit for bit. That equality rests on
one more fact, checked per layer and reported as `exact`: with power-of-two scales on the layer's input and
weights, qonnx' float MatMul/Conv is itself exact (every partial sum is a small multiple of the product scale).

At the two ends the host does the float work, by qonnx' executor on the model's own nodes: pre-processing before
the input Quant (layout ops, a constant affine: `Prefix`), the input quantizer itself, and after the last layer
either its output quantizer's scale or the float ops on its raw accumulators (`Tail`). `host_operations` says
which, for the report. Bipolar (-1/+1) values are integers like any other here; the RTL back end streams them as
bits and uses the XNOR-popcount mode of the mvu.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
from hardwire.hls.graph import (
    DepthwiseLayer,
    InputLayer,
    IntGraph,
    IntType,
    MatVecLayer,
    MaxPoolLayer,
    ResidualLayer,
    flat_layers,
)
from onnx import helper

from hardwire.errors import ModelError

QUANT_DOMAIN = "qonnx.custom_op.general"
ELEMENTWISE_OPS = ("Add", "Sub", "Mul", "Div", "BatchNormalization", "Relu", "Clip", "Identity", "Dropout")
SUPPORTED = (
    "Quant (inputs, weights, activations)",
    "BipolarQuant and 1-bit signed Quant (inputs, weights, activations)",
    "MatMul",
    "Gemm",
    "Conv (square kernel, group 1 or depthwise: group = channels)",
    "MaxPool (kernel = stride)",
    "AveragePool (square, no padding, or over the whole image)/GlobalAveragePool/ReduceMean over H, W, "
    "before an activation Quant",
    "Flatten/Reshape before a dense layer",
    "per-channel " + "/".join(ELEMENTWISE_OPS[:-2]) + " between a layer and its activation Quant",
    "layout ops and a constant affine x * a + b before the input Quant (run on the host)",
)
LAYOUT_OPS = ("Reshape", "Flatten", "Transpose", "Identity", "Dropout", "Squeeze", "Unsqueeze")
AFFINE_OPS = ("Mul", "Div", "Add", "Sub")  # with a constant operand (the divisor/subtrahend for Div/Sub)
FLOAT32_EXACT_BITS = 24  # float32 represents every integer multiple of a scale up to 2**24 exactly
EXHAUSTIVE_CHECK_LIMIT = 1 << 22  # accumulator values x channels checked one by one below this


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_model(source, example_input=None, *, clean: bool = True):
    """A qonnx ModelWrapper, cleaned up (`clean_model`; with clean=False as read, for hls.passes' clean-up pass),
    from a .onnx path or a Brevitas module (exported with `example_input`).

    Raises ModelError for a missing or corrupt file."""
    from qonnx.core.modelwrapper import ModelWrapper

    if hasattr(source, "forward"):
        if example_input is None:
            raise ModelError(
                "exporting a Brevitas module needs an example input tensor (its shape fixes the network's input shape)"
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            export_brevitas(source, example_input, path)
            return load_model(path, clean=clean)
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        proto = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001 - onnx raises protobuf DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({type(error).__name__}: {error})") from None
    if not proto.graph.node:
        raise ModelError(f"{path}: the ONNX graph has no nodes")
    return clean_model(ModelWrapper(proto), path) if clean else ModelWrapper(proto)


def clean_model(model, where):
    """qonnx' clean-up of a model read from `where` (shapes inferred, constants folded, names made unique and
    readable); ModelError when qonnx cannot take it."""
    from qonnx.util.cleanup import cleanup_model

    try:
        # conv biases split off into an Add after the Conv, where the thresholds absorb them
        return cleanup_model(model, extract_conv_bias=True)
    except Exception as error:  # noqa: BLE001 - any failure here means qonnx cannot take the file
        raise ModelError(f"{where}: qonnx could not clean up the model ({type(error).__name__}: {error})") from None


def export_brevitas(module, example_input, path: Path) -> Path:
    """Brevitas' own QONNX export of `module` (in eval mode) to `path`."""
    from brevitas.export import export_qonnx

    module.eval()
    export_qonnx(module, example_input, export_path=str(path))
    return Path(path)


def export_module(module, example_input) -> Path:
    """A Brevitas module (put in eval mode) exported with `example_input` to one self-contained QONNX file in
    the tool cache, named by the hash of its bytes: the same module gives the same file, and a compile report
    can name a model file that stays where a temporary one would not."""
    import hashlib

    from qonnx.core.modelwrapper import ModelWrapper

    from hardwire.cache import cache_root, write_bytes_atomic

    if example_input is None:
        raise ModelError(
            f"exporting the {type(module).__name__} module needs an example input tensor "
            "(example_input=...; its shape fixes the network's input shape)"
        )
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "raw.onnx"
        try:
            export_brevitas(module, example_input, raw)
        except Exception as error:  # noqa: BLE001 - torch.onnx and Brevitas raise many kinds
            raise ModelError(
                f"the {type(module).__name__} module does not export to QONNX with an input of "
                f"shape {tuple(getattr(example_input, 'shape', ()))} ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''})"
            ) from None
        data = ModelWrapper(str(raw)).model.SerializeToString()  # external weight files folded in
    path = cache_root() / "models" / f"{type(module).__name__.lower()}-{hashlib.sha256(data).hexdigest()[:16]}.onnx"
    if not path.is_file():
        write_bytes_atomic(path, data)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Reading nodes


class _Model:
    """Producer/consumer look-ups over a qonnx ModelWrapper."""

    def __init__(self, wrapper):
        self.wrapper = wrapper
        self.graph = wrapper.graph
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.graph.output}
        self.opset = list(wrapper.model.opset_import)

    def init(self, name: str):
        return self.wrapper.get_initializer(name)

    def shape(self, name: str) -> list[int]:
        return list(self.wrapper.get_tensor_shape(name))

    def only_consumer(self, tensor: str, after):
        users = self.consumers.get(tensor, [])
        if len(users) > 1:
            raise ModelError(
                f"tensor {tensor!r} after node {after.name!r} ({getattr(after, 'op_type', 'graph input')}) feeds {len(users)} nodes "
                f"({', '.join(u.name for u in users)}): branching graphs (residual Add) are not supported yet"
            )
        return users[0] if users else None


def _attr(node, name, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _unsupported(node, where: str) -> ModelError:
    return ModelError(
        f"node {node.name!r} (op {node.op_type}) {where} is not supported; supported: " + "; ".join(SUPPORTED)
    )


@dataclass(frozen=True)
class QuantSpec:
    dtype: IntType
    scale: np.ndarray
    zeropt: np.ndarray
    rounding_mode: str
    node: str

    def integers(self, values: np.ndarray) -> np.ndarray:
        """The integer codes qonnx' Quant computes for float `values` (same function, same float32 steps)."""
        from qonnx.custom_op.general.intquant import int_quant

        if self.dtype.bipolar:
            return np.where(np.asarray(values) >= 0, 1, -1).astype(np.int64)
        # the bit width goes in as the float32 array the Quant node's execution reads from its input
        out = int_quant(
            np.asarray(values, dtype=np.float32),
            self.scale,
            self.zeropt,
            np.asarray(self.dtype.bits, dtype=np.float32),
            self.dtype.signed,
            self.dtype.narrow,
            self.rounding_mode,
        )
        return np.rint(out / self.scale + self.zeropt).astype(np.int64)


def _quant_spec(m: _Model, node) -> QuantSpec:
    if node.op_type == "BipolarQuant":
        scale = m.init(node.input[1])
        if scale is None:
            raise ModelError(f"node {node.name!r} (BipolarQuant): its scale must be a constant")
        return QuantSpec(
            IntType(1, True, bipolar=True), np.asarray(scale, np.float32), np.zeros(1, np.float32), "ROUND", node.name
        )
    scale, zeropt, bits = (m.init(name) for name in node.input[1:4])
    if scale is None or zeropt is None or bits is None:
        raise ModelError(f"node {node.name!r} (Quant): scale, zero point and bit width must be constants")
    bits = float(np.asarray(bits).reshape(-1)[0])
    if bits != int(bits) or not 1 <= bits <= 8:
        raise ModelError(f"node {node.name!r} (Quant): bit width {bits:g} is not supported; supported 1..8")
    if np.any(np.asarray(zeropt) != 0):
        raise ModelError(f"node {node.name!r} (Quant): non-zero zero point is not supported")
    signed, narrow = bool(_attr(node, "signed", 1)), bool(_attr(node, "narrow", 0))
    rounding = _attr(node, "rounding_mode", b"ROUND")
    rounding = rounding.decode() if isinstance(rounding, bytes) else str(rounding)
    bipolar = signed and int(bits) == 1  # qonnx executes a signed 1-bit Quant as bipolar
    return QuantSpec(
        IntType(int(bits), signed, narrow, bipolar),
        np.asarray(scale, np.float32),
        np.asarray(zeropt, np.float32),
        rounding,
        node.name,
    )


def _is_quant(node) -> bool:
    return node is not None and node.op_type in ("Quant", "BipolarQuant")


def _quantized_weights(m: _Model, tensor: str, layer) -> tuple[np.ndarray, np.ndarray, IntType, list[str]]:
    """Integer weights, their scale (broadcastable like the weights) and type, from a Quant on a constant."""
    perm = None
    producer = m.producer.get(tensor)
    nodes = []
    if producer is not None and producer.op_type == "Transpose":
        perm = _attr(producer, "perm")
        nodes.append(producer.name)
        producer = m.producer.get(producer.input[0])
    if not _is_quant(producer) or m.init(producer.input[0]) is None:
        raise ModelError(
            f"node {layer.name!r} ({layer.op_type}): its weights are not quantized by a Quant node on "
            "a constant (use a Brevitas QuantLinear/QuantConv2d with a weight quantizer)"
        )
    spec = _quant_spec(m, producer)
    codes = spec.integers(m.init(producer.input[0]))
    scale = np.broadcast_to(spec.scale, codes.shape).astype(np.float32)
    if perm is not None:
        codes, scale = codes.transpose(perm), scale.transpose(perm)
    return codes, scale, spec.dtype, nodes + [producer.name]


def _per_output_scale(scale: np.ndarray, axis: int, layer) -> np.ndarray:
    """The weight scale as one value per output channel (`axis` of the weight tensor)."""
    moved = np.moveaxis(scale, axis, 0).reshape(scale.shape[axis], -1)
    if np.any(moved != moved[:, :1]):
        raise ModelError(
            f"node {layer.name!r} ({layer.op_type}): weight scales vary along the input dimension; "
            "only per-tensor or per-output-channel scales are supported"
        )
    return moved[:, 0].astype(np.float64)


def _is_power_of_two(values) -> bool:
    mantissa, _ = np.frexp(np.asarray(values, dtype=np.float64))
    return bool(np.all(mantissa == 0.5))


# ---------------------------------------------------------------------------------------------------------------
# The per-element chain after a layer: run by qonnx itself


@dataclass
class Chain:
    """The float ops between a layer's MatMul/Conv output and its activation Quant (or the graph output),
    with what it takes to evaluate them on integer accumulators."""

    nodes: list  # the ONNX nodes (copies)
    initializers: list
    opset: list
    input_name: str
    output_name: str
    conv: bool  # the chain takes NCHW tensors
    acc_scale: np.ndarray  # per output channel: input scale x weight scale
    channels: int

    def __post_init__(self):
        self._models = {}

    @property
    def node_names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def _model(self, shape: tuple[int, ...]):
        """The chain as a model of its own for one input shape (ONNX shapes are static)."""
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.infer_shapes import InferShapes

        if shape not in self._models:
            graph = helper.make_graph(
                [_copy(node) for node in self.nodes],
                "chain",
                [helper.make_tensor_value_info(self.input_name, onnx.TensorProto.FLOAT, list(shape))],
                [helper.make_tensor_value_info(self.output_name, onnx.TensorProto.FLOAT, None)],
                initializer=self.initializers,
            )
            self._models[shape] = ModelWrapper(helper.make_model(graph, opset_imports=self.opset)).transform(
                InferShapes()
            )
        return self._models[shape]

    def run(self, acc: np.ndarray) -> np.ndarray:
        """Evaluate on integer accumulators `acc` (..., channels) -> float32 (..., channels), exactly as the
        ops compute on the float value qonnx' MatMul/Conv produces for that accumulator."""
        from qonnx.core.onnx_exec import execute_onnx

        acc = np.asarray(acc)
        flat = acc.reshape(-1, self.channels)
        values = (flat.astype(np.float64) * self.acc_scale).astype(np.float32)
        if not self.nodes:
            return values.reshape(acc.shape)
        if self.conv:
            values = np.ascontiguousarray(values.T[None, :, :, None])  # (1, C, n, 1): positions are candidates
        model = self._model(values.shape)
        out = execute_onnx(model, {self.input_name: values})[self.output_name]
        if self.conv:
            out = out[0, :, :, 0].T
        return np.asarray(out, dtype=np.float32).reshape(acc.shape)


def _chain(m: _Model, nodes: list, input_name: str, conv: bool, acc_scale: np.ndarray) -> Chain:
    needed = {name for node in nodes for name in node.input}
    inits = [init for init in m.graph.initializer if init.name in needed]
    output_name = nodes[-1].output[0] if nodes else input_name
    return Chain(
        [_copy(node) for node in nodes], inits, m.opset, input_name, output_name, conv, acc_scale, len(acc_scale)
    )


def _copy(node):
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _collect_chain(m: _Model, layer_node, start: str):
    """Follow single consumers from `start` through per-element ops. Returns (nodes, quant_node or None,
    output tensor)."""
    nodes, tensor, after = [], start, layer_node
    while True:
        if tensor in m.outputs:
            return nodes, None, tensor
        node = m.only_consumer(tensor, after)
        if node is None:
            raise ModelError(f"tensor {tensor!r} after node {after.name!r} is neither used nor a graph output")
        if node.op_type in ("Quant", "BipolarQuant"):
            return nodes, node, node.output[0]
        if node.op_type not in ELEMENTWISE_OPS:
            raise _unsupported(node, f"between layer {layer_node.name!r} and its activation quantizer")
        for other in node.input[1:]:
            if other and m.init(other) is None:
                raise ModelError(
                    f"node {node.name!r} ({node.op_type}) after layer {layer_node.name!r}: input "
                    f"{other!r} is not a constant; only per-channel constant operands are supported"
                )
        nodes.append(node)
        tensor = node.output[0]
        after = node


def _thresholds(chain: Chain, out_spec: QuantSpec, acc_lo: int, acc_hi: int, layer_name: str):
    """Per-channel thresholds (N, 2**bits - 1) on the (possibly sign-flipped) accumulator, and the flip sign.

    level(acc) = the integer the activation Quant produces for the chain's output at accumulator acc."""
    n = chain.channels
    dtype = out_spec.dtype

    def level(acc):  # acc: (rows, n) int64 -> (rows, n) int64
        return out_spec.integers(chain.run(acc))

    ends = level(np.array([[acc_lo] * n, [acc_hi] * n], dtype=np.int64))
    sign = np.where(ends[1] >= ends[0], 1, -1).astype(np.int64)
    # work on acc' = sign * acc, which level() must be non-decreasing in
    lo = np.where(sign > 0, acc_lo, -acc_hi)
    hi = np.where(sign > 0, acc_hi, -acc_lo)
    if dtype.bipolar:  # one threshold: -1 below it, +1 from it on
        count, base, step = 1, -1, 2
    else:
        count, base, step = (1 << dtype.storage_bits) - 1, dtype.threshold_base, 1
    targets = base + step * (1 + np.arange(count))  # the level each threshold admits
    left = np.broadcast_to(lo, (count, n)).copy()  # smallest acc' with level >= target in [left, right]
    right = np.broadcast_to(hi + 1, (count, n)).copy()  # hi + 1 = "never"
    while np.any(left < right):
        mid = (left + right) // 2
        reached = level(sign * mid) >= targets[:, None]
        right = np.where(reached & (left < right), mid, right)
        left = np.where(~reached & (left < right), mid + 1, left)
    thresholds = left.T  # (n, count)
    _check_thresholds(level, sign, thresholds, base, lo, hi, layer_name, step=step)
    return thresholds.astype(np.int64), sign


def _check_thresholds(level, sign, thresholds, base, lo, hi, layer_name, seed=0, step=1):
    """Prove (exhaustively where small, else on a large sample plus every threshold's neighbours) that
    counting thresholds gives exactly the level qonnx computes."""
    n = len(sign)
    span = int((hi - lo).max()) + 1
    if span * n <= EXHAUSTIVE_CHECK_LIMIT:
        candidates = lo[None, :] + np.arange(span)[:, None]
        candidates = np.minimum(candidates, hi[None, :])
    else:
        rng = np.random.default_rng(seed)
        sampled = rng.integers(lo, hi + 1, size=(4096, n))
        edges = np.concatenate([thresholds.T - 1, thresholds.T])
        candidates = np.clip(np.concatenate([sampled, edges, lo[None], hi[None]]), lo, hi)
    expected = level(sign * candidates)
    counted = base + step * (candidates[:, :, None] >= thresholds[None, :, :]).sum(axis=2)
    bad = np.argwhere(expected != counted)
    if len(bad):
        row, channel = bad[0]
        raise ModelError(
            f"layer {layer_name!r}: the ops before its activation quantizer are not monotonic in the accumulator "
            f"for channel {channel} (at accumulator {sign[channel] * candidates[row, channel]}), so they cannot "
            "become thresholds"
        )


# ---------------------------------------------------------------------------------------------------------------
# The walk


@dataclass
class Tail:
    """What turns the last layer's integers into the model's float output, on the host: either the float ops
    after the last MatMul/Conv, run by qonnx' executor on the raw accumulators, or the output quantizer's scale.
    `layout` is the ONNX output's ("NC" or "NCHW"), `flatten` a trailing Flatten/Reshape to a vector."""

    chain: Chain | None  # raw accumulator output: the float ops after the last MatMul
    sign: np.ndarray | None
    out_scale: np.ndarray | None  # quantized output: integer x scale
    output_name: str
    layout: str = "NC"
    flatten: bool = False
    trailing: list = None  # names of the trailing layout nodes

    def apply(self, values: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """(B, H, W, N) (or (B, H*W*N)) integers from the hardware -> float32 as qonnx computes the model's
        output, in its layout."""
        oh, ow, n = shape
        values = np.asarray(values, dtype=np.int64).reshape(-1, oh, ow, n)
        if self.chain is not None:
            out = self.chain.run((values * self.sign).reshape(-1, n)).reshape(values.shape)
        else:
            out = (values.astype(np.float64) * self.out_scale).astype(np.float32)
        if self.layout == "NCHW":
            out = out.transpose(0, 3, 1, 2)
        if self.flatten or self.layout == "NC":
            out = out.reshape(len(out), -1)
        return np.ascontiguousarray(out, dtype=np.float32)

    def host_ops(self) -> str:
        trailing = f", then {', '.join(self.trailing)} (layout)" if self.trailing else ""
        if self.chain is not None:
            raw = f"the last layer's raw accumulators times the scale {_scales(self.chain.acc_scale)}"
            if not self.chain.nodes:
                return raw + trailing
            ops = ", ".join(f"{node.name} ({node.op_type})" for node in self.chain.nodes)
            return f"{raw}, then the float ops {ops} in float32 (qonnx' own executor){trailing}"
        return f"the output quantizer's integers times the output scale {_scales(self.out_scale)}{trailing}"


def _scales(values) -> str:
    values = np.unique(np.asarray(values, dtype=np.float64))
    return (
        f"{values[0]:g}"
        if len(values) == 1
        else f"per channel ({len(values)} values, {values.min():g}..{values.max():g})"
    )


def build_graph(model, name: str = "network") -> IntGraph:
    """Turn a cleaned-up QONNX ModelWrapper into our integer layer chain (see the module docstring). The same two
    steps run as hls.passes' `absorb_preprocessing` and `streamline` passes in `hardwire compile`."""
    m = _Model(model)
    graph, first, state = input_stage(m, name)
    walk_layers(m, graph, first, state)
    return graph


def input_stage(m: _Model, name: str):
    """(IntGraph with its input layer and no layers yet, the input Quant node, the stream state after it): the
    pre-processing before the input quantizer (run on the host) and the quantizer itself."""
    inputs = [i for i in m.graph.input if m.init(i.name) is None]
    if len(inputs) != 1:
        raise ModelError(
            f"the network must have exactly one input, it has {len(inputs)}: " + ", ".join(repr(i.name) for i in inputs)
        )
    if len(m.graph.output) != 1:
        raise ModelError(
            f"the network must have exactly one output, it has {len(m.graph.output)}: "
            + ", ".join(repr(o.name) for o in m.graph.output)
        )
    input_name = inputs[0].name
    prefix, first = _collect_prefix(m, input_name, inputs[0])
    spec = _quant_spec(m, first)
    if spec.scale.size != 1:
        raise ModelError(f"node {first.name!r}: the input quantizer must have one scale for the whole tensor")
    shape = m.shape(first.input[0])
    if len(shape) == 2:
        hwc, layout = (1, 1, shape[1]), "NC"
    elif len(shape) == 4:
        hwc, layout = (shape[2], shape[3], shape[1]), "NCHW"
    else:
        raise ModelError(
            f"node {first.name!r} (input Quant): its input has shape {shape}; supported (1, C) or (1, C, H, W)"
        )
    graph = IntGraph(
        name,
        InputLayer(first.name, hwc, spec.dtype, float(spec.scale.reshape(-1)[0]), layout),
        [],
        spec.dtype,
        input_spec=spec,
        prefix=prefix,
    )
    return graph, first, _Stream(spec.dtype, hwc, float(spec.scale.reshape(-1)[0]))


def walk_layers(m: _Model, graph: IntGraph, first, state) -> None:
    """Follow the data from the input Quant node `first` to the output, appending the integer layers (thresholds
    from the float ops before each activation Quant, residual blocks where the data forks) to `graph`."""
    kind, join, _, _, _ = _walk(m, graph, graph.layers, first.output[0], first, state)
    if kind == "join":
        raise ModelError(
            f"node {join.name!r} (Add) adds two activation tensors that do not come from one fork "
            "point; supported: a residual Add of two branches from one quantized tensor"
        )


@dataclass(frozen=True)
class _Stream:
    """What the walk knows about the tensor it follows: its integer type, (H, W, C) shape and scale, and the
    image shape a Flatten turned into this vector (None without one)."""

    dtype: IntType
    shape: tuple[int, int, int]
    scale: float
    flattened_from: tuple[int, int, int] | None = None


def _is_join(m: _Model, node) -> bool:
    """An Add of two activation tensors (no constant operand): where a residual block's branches meet."""
    return node.op_type == "Add" and len(node.input) == 2 and all(m.init(i) is None for i in node.input)


def _walk(m: _Model, graph: IntGraph, layers: list, tensor: str, after, state: _Stream, first=None):
    """Follow the data from `tensor`, appending layers to `layers`, until the network ends ("done") or an Add
    joins this path with another ("join"). `first`: the node to start with (a fork's tensor has two users).
    Returns (kind, the join Add or None, the tensor into it, the node before it, the stream state there)."""
    while True:
        node = first
        first = None
        if node is None:
            if tensor in m.outputs:
                raise ModelError(f"the network ends at {after.name!r} ({after.op_type}) without a dense or conv layer")
            if len(m.consumers.get(tensor, [])) > 1:
                done, tensor, after, state = _residual(m, graph, layers, tensor, after, state)
                if done:
                    return "done", None, tensor, after, state
                continue
            node = m.only_consumer(tensor, after)
            if node is None:
                raise ModelError(f"tensor {tensor!r} is not used")
        op = node.op_type
        if _is_join(m, node):
            return "join", node, tensor, after, state
        if op in ("Flatten", "Reshape"):
            h, w, c = state.shape
            state = _Stream(
                state.dtype, (1, 1, h * w * c), state.scale, state.shape if h * w > 1 else state.flattened_from
            )
            tensor, after = node.output[0], node
            continue
        if op in ("Identity", "Dropout"):
            tensor, after = node.output[0], node
            continue
        if op == "MaxPool":
            kernel = list(_attr(node, "kernel_shape", []))
            strides = list(_attr(node, "strides", kernel))
            pads = list(_attr(node, "pads", [0, 0, 0, 0]))
            if len(set(kernel)) != 1 or strides != kernel or any(pads) or _attr(node, "ceil_mode", 0):
                raise _unsupported(node, f"with kernel {kernel}, strides {strides}, pads {pads}")
            layer = MaxPoolLayer(node.name, state.shape, state.dtype, kernel[0], [node.name])
            layers.append(layer)
            state = _Stream(state.dtype, layer.out_shape, state.scale)
            tensor, after = node.output[0], node
            continue
        if op in ("MatMul", "Gemm", "Conv") or op in POOL_OPS:
            if node.input[0] != tensor:
                raise _unsupported(node, "with its activations on a second input")
            layer, tensor, after, current, cur_scale, done = _lowering(node)(
                m, node, graph, state.shape, state.dtype, state.scale, state.flattened_from
            )
            layers.append(layer)
            state = _Stream(current, layer.out_shape, cur_scale)
            if done:
                return "done", None, tensor, after, state
            continue
        raise _unsupported(node, f"(on tensor {tensor!r})")


def _residual(m: _Model, graph: IntGraph, layers: list, fork: str, after, state: _Stream):
    """A residual block from the fork at tensor `fork`: both users' paths are walked to the Add that joins them,
    the ops after the Add up to its activation Quant become thresholds on the aligned integer sum. Appends one
    ResidualLayer; returns (done, the tensor after the block, its node, the stream state)."""
    users = m.consumers[fork]
    where = f"tensor {fork!r} after node {after.name!r}"
    if len(users) != 2:
        raise ModelError(
            f"{where} feeds {len(users)} nodes ({', '.join(u.name for u in users)}); supported: a "
            "fork into two branches that one Add joins again (a residual block)"
        )
    if state.dtype.bipolar:
        raise ModelError(f"{where}: a residual block on bipolar (-1/+1) activations is not supported")
    paths = []
    for user in users:
        path: list = []
        if _is_join(m, user):
            paths.append((path, user, state))  # the identity shortcut
            continue
        kind, join, _, _, end = _walk(m, graph, path, fork, after, state, first=user)
        if kind != "join":
            raise ModelError(
                f"the branch from {where} through node {user.name!r} ends the network instead of "
                "meeting the other branch at an Add; supported: two branches joined by one Add"
            )
        paths.append((path, join, end))
    if paths[0][1].name != paths[1][1].name:
        raise ModelError(
            f"the two branches from {where} end at different Add nodes ({paths[0][1].name!r}, "
            f"{paths[1][1].name!r}); supported: one Add joining them"
        )
    add = paths[0][1]
    paths.sort(key=lambda p: -len(p[0]))  # a: the longer branch, b: the shortcut
    (a_layers, _, a_end), (b_layers, _, b_end) = paths
    if not a_layers:
        raise ModelError(
            f"node {add.name!r} (Add) adds tensor {fork!r} to itself; supported: a branch of layers plus a shortcut"
        )
    for end in (a_end, b_end):
        if end.dtype is None:
            raise ModelError(
                f"node {add.name!r} (Add): one of its inputs is a raw accumulator; quantize both "
                "branches before the residual Add (a Brevitas QuantIdentity/QuantReLU)"
            )
        if end.dtype.bipolar:
            raise ModelError(f"node {add.name!r} (Add): adding bipolar (-1/+1) tensors is not supported")
    if a_end.shape != b_end.shape:
        raise ModelError(
            f"node {add.name!r} (Add): its inputs have shapes {a_end.shape} and {b_end.shape} (H, W, C); "
            "supported: the same shape (no broadcasting)"
        )
    if not (_is_power_of_two(a_end.scale) and _is_power_of_two(b_end.scale)):
        raise ModelError(
            f"node {add.name!r} (Add): its inputs' scales {a_end.scale:g} and {b_end.scale:g} are not "
            "both powers of two; supported: power-of-two scales (e.g. Brevitas' *FixedPoint quantizers), "
            "which the hardware aligns by shifts"
        )
    fine = min(a_end.scale, b_end.scale)
    a_shift, b_shift = (int(round(np.log2(s / fine))) for s in (a_end.scale, b_end.scale))
    chain_nodes, quant, out_tensor = _collect_chain(m, add, add.output[0])
    if quant is None:
        raise ModelError(
            f"node {add.name!r} (Add): the residual sum reaches the output without an activation "
            "quantizer; supported: a Quant node (QuantIdentity/QuantReLU) after the residual Add"
        )
    out_spec = _quant_spec(m, quant)
    if out_spec.scale.size != 1:
        raise ModelError(f"node {quant.name!r}: activation quantizers need one scale per tensor")
    channels = a_end.shape[2]
    conv = len(m.shape(add.output[0])) == 4
    chain = _chain(m, chain_nodes, add.output[0], conv, np.full(channels, fine))
    layer = ResidualLayer(
        add.name,
        state.shape,
        state.dtype,
        a_layers,
        b_layers,
        a_end.dtype,
        b_end.dtype,
        a_shift,
        b_shift,
        None,
        out_spec.dtype,
        float(out_spec.scale.reshape(-1)[0]),
        nodes=[add.name] + [n.name for n in chain_nodes] + [quant.name],
    )
    lo, hi = layer.sum_range
    thresholds, sign = _thresholds(chain, out_spec, lo, hi, add.name)
    if np.any(sign != 1) or np.any(thresholds != thresholds[:1]):
        raise ModelError(
            f"node {add.name!r} (Add): the ops after it ({', '.join(layer.nodes[1:-1]) or 'none'}) "
            "differ per channel or decrease; supported: per-tensor monotonic ops (e.g. ReLU) before "
            "its activation quantizer"
        )
    layer.thresholds = thresholds[:1]
    layers.append(layer)
    state = _Stream(out_spec.dtype, a_end.shape, layer.out_scale)
    trailing = _layout_to_output(m, out_tensor, quant)
    if trailing is not None:
        layout = "NCHW" if conv else "NC"
        flatten = bool(trailing) and len(m.shape(m.graph.output[0].name)) == 2
        graph.tail = Tail(
            None,
            None,
            np.full(channels, layer.out_scale),
            m.graph.output[0].name,
            layout,
            flatten,
            [f"{t.name} ({t.op_type})" for t in trailing],
        )
        graph.output_type = out_spec.dtype
        return True, out_tensor, quant, state
    return False, out_tensor, quant, state


# ---------------------------------------------------------------------------------------------------------------
# Pre-processing before the input quantizer: run on the host


@dataclass
class Prefix:
    """The pre-processing between the network input and its input Quant node: layout ops (Reshape, Flatten,
    Transpose, ...) and constant affine steps (x * a + b, per tensor or per element/channel). Its nodes run on
    the host, by qonnx' own executor, before the input quantizer (which runs on the host anyway: the hardware
    takes the integer codes), so the codes the hardware gets are exactly the ones the exported model computes.
    Nothing of it is folded into the hardware."""

    nodes: list
    initializers: list
    opset: list
    input_name: str
    input_shape: list[int]
    output_name: str

    def __post_init__(self):
        self._models = {}

    @property
    def node_names(self) -> list[str]:
        return [f"{node.name} ({node.op_type})" for node in self.nodes]

    def _model(self, layout_only: bool):
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.infer_shapes import InferShapes

        if layout_only not in self._models:
            nodes = [_copy(node) for node in self.nodes]
            if layout_only:  # every affine step becomes the identity on its data input: what remains is layout
                inits = {init.name for init in self.initializers}
                nodes = [
                    helper.make_node(
                        "Identity", [next(i for i in n.input if i not in inits)], [n.output[0]], name=n.name
                    )
                    if n.op_type in AFFINE_OPS
                    else n
                    for n in nodes
                ]
            graph = helper.make_graph(
                nodes,
                "prefix",
                [helper.make_tensor_value_info(self.input_name, onnx.TensorProto.FLOAT, self.input_shape)],
                [helper.make_tensor_value_info(self.output_name, onnx.TensorProto.FLOAT, None)],
                initializer=self.initializers,
            )
            self._models[layout_only] = ModelWrapper(helper.make_model(graph, opset_imports=self.opset)).transform(
                InferShapes()
            )
        return self._models[layout_only]

    def run(self, x: np.ndarray, layout_only: bool = False) -> np.ndarray:
        """Model inputs (B, ...) -> the input Quant's float inputs (B, ...), one sample at a time (batch 1)."""
        from qonnx.core.onnx_exec import execute_onnx

        model = self._model(layout_only)
        outs = [
            execute_onnx(model, {self.input_name: np.asarray(sample[None], dtype=np.float32)})[self.output_name]
            for sample in np.asarray(x, dtype=np.float32)
        ]
        return np.concatenate(outs).astype(np.float32)

    def invert(self, y: np.ndarray) -> np.ndarray:
        """Model inputs whose pre-processed values are about `y` (B, ...): the affine part inverted in float64
        and the layout undone. Used only to choose verification inputs that cover the quantizer's levels;
        exactness never depends on it (qonnx and the host both start from the same model inputs)."""
        y = np.asarray(y, dtype=np.float64)
        zero = self.run(np.zeros((1, *self.input_shape[1:]), np.float32)).astype(np.float64)
        slope = self.run(np.ones((1, *self.input_shape[1:]), np.float32)).astype(np.float64) - zero
        size = int(np.prod(self.input_shape))
        index = (
            np.rint(self.run(np.arange(size, dtype=np.float32).reshape(1, *self.input_shape[1:]), layout_only=True))
            .astype(np.int64)
            .reshape(-1)
        )
        safe = np.where(slope == 0, 1.0, slope)
        values = ((y - zero) / safe).reshape(len(y), -1)
        x = np.zeros((len(y), size))
        x[:, index] = values
        return x.reshape(len(y), *self.input_shape[1:]).astype(np.float32)


def _collect_prefix(m: _Model, input_name: str, graph_input):
    """(Prefix or None, the input Quant node): follow the input through layout ops and constant affine steps."""
    tensor, after, nodes = input_name, graph_input, []
    while True:
        node = m.only_consumer(tensor, after)
        if node is None:
            raise ModelError(f"the network input {input_name!r} is not used")
        if node.op_type in ("Quant", "BipolarQuant"):
            break
        constants = [name for name in node.input if name != tensor]
        if node.op_type in LAYOUT_OPS and all(not name or m.init(name) is not None for name in constants):
            pass
        elif node.op_type in AFFINE_OPS and len(constants) == 1 and m.init(constants[0]) is not None:
            if node.op_type == "Div" and node.input[0] != tensor:
                raise _unsupported(node, "dividing a constant by the network input")
            if list(np.broadcast_shapes(tuple(m.shape(tensor)), np.shape(m.init(constants[0])))) != m.shape(tensor):
                raise _unsupported(node, "broadcasting the network input to a larger shape")
        else:
            where = "before the network's input quantizer"
            if node.op_type in ("MatMul", "Gemm", "Conv"):
                raise ModelError(
                    f"the network input {input_name!r} is not quantized: node {node.name!r} ({node.op_type}) "
                    f"reads it before any Quant node; start the network with a Brevitas QuantIdentity so the "
                    "hardware knows the input datatype (layout ops and a constant x * a + b may come before it)"
                )
            raise _unsupported(node, where)
        nodes.append(node)
        tensor, after = node.output[0], node
    if not nodes:
        return None, node
    needed = {name for n in nodes for name in n.input}
    prefix = Prefix(
        [_copy(n) for n in nodes],
        [init for init in m.graph.initializer if init.name in needed],
        m.opset,
        input_name,
        m.shape(input_name),
        tensor,
    )
    return prefix, node


def _layout_to_output(m: _Model, tensor: str, after):
    """The layout-only nodes (Flatten/Reshape/Identity) from `tensor` to the graph output, or None when the path
    to the output has anything else on it."""
    nodes = []
    while tensor not in m.outputs:
        users = m.consumers.get(tensor, [])
        if len(users) != 1 or users[0].op_type not in ("Flatten", "Reshape", "Identity", "Dropout"):
            return None
        nodes.append(users[0])
        tensor = users[0].output[0]
    return nodes


def _gemm_bias(m: _Model, node):
    """An Add node standing for a Gemm's bias input C (None without one): acc -> acc + C."""
    if node.op_type != "Gemm" or len(node.input) < 3 or not node.input[2]:
        return None
    return helper.make_node(
        "Add", [node.output[0] + "__accumulator", node.input[2]], [node.output[0]], name=node.name + "__bias"
    )


def _matvec(m: _Model, node, graph: IntGraph, in_shape, in_type: IntType, in_scale: float, flattened_from):
    op = node.op_type
    codes, scale, w_type, weight_nodes = _quantized_weights(m, node.input[1], node)
    kernel, stride, padding = 1, 1, 0
    if op == "Conv":
        if _attr(node, "group", 1) != 1 or any(d != 1 for d in _attr(node, "dilations", [1, 1])):
            raise _unsupported(node, "with groups or dilation")
        ks = list(_attr(node, "kernel_shape", codes.shape[2:]))
        strides = list(_attr(node, "strides", [1, 1]))
        pads = list(_attr(node, "pads", [0, 0, 0, 0]))
        if len(set(ks)) != 1 or len(set(strides)) != 1 or len(set(pads)) != 1:
            raise _unsupported(node, f"with kernel {ks}, strides {strides}, pads {pads} (square and symmetric only)")
        kernel, stride, padding = ks[0], strides[0], pads[0]
        if in_type.bipolar and padding:
            raise ModelError(
                f"node {node.name!r} (Conv): zero padding of a bipolar (-1/+1) input is not supported "
                "(0 is not a bipolar value, and the XNOR datapath has no code for it); use padding=0"
            )
        if codes.shape[1] != in_shape[2]:
            raise ModelError(f"node {node.name!r} (Conv): {codes.shape[1]} input channels, tensor has {in_shape[2]}")
        w_scale = _per_output_scale(scale, 0, node)
        weights = codes.transpose(0, 2, 3, 1).reshape(codes.shape[0], -1)  # (N, ky, kx, c)
    else:
        if op == "Gemm":
            if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
                raise _unsupported(node, "with transA, or alpha or beta other than 1")
            if len(node.input) > 2 and node.input[2] and m.init(node.input[2]) is None:
                raise _unsupported(node, "with a bias that is not a constant")
            if not _attr(node, "transB", 0):
                codes, scale = codes.T, scale.T
        else:
            codes, scale = codes.T, scale.T  # MatMul: (K, N) -> (N, K)
        w_scale = _per_output_scale(scale, 0, node)
        weights = codes
        if weights.shape[1] != in_shape[2]:
            raise ModelError(
                f"node {node.name!r} ({op}): weights take {weights.shape[1]} inputs, tensor has {in_shape[2]}"
            )
        if flattened_from is not None:
            # ONNX flattens NCHW as (c, y, x); our stream is (y, x, c): permute the weight columns to match
            h, w, c = flattened_from
            weights = weights.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weights.shape[0], -1)
    weights = weights.astype(np.int64)
    w_type.check(weights, f"node {node.name!r} weights")
    layer = MatVecLayer(
        node.name,
        in_shape,
        in_type,
        weights,
        w_type,
        None,
        None,
        None,
        kernel,
        stride,
        padding,
        nodes=weight_nodes + [node.name],
    )
    acc_lo, acc_hi = layer.acc_range
    acc_scale = in_scale * w_scale
    layer.exact = _is_power_of_two(acc_scale) and max(abs(acc_lo), abs(acc_hi)) < (1 << FLOAT32_EXACT_BITS)
    chain_nodes, quant, out_tensor = _collect_chain(m, node, node.output[0])
    layer.nodes += [n.name for n in chain_nodes]
    n = weights.shape[0]
    conv = op == "Conv"
    acc_scale = np.broadcast_to(acc_scale, (n,)).astype(np.float64)
    chain_input = node.output[0]
    bias_node = _gemm_bias(m, node)
    if bias_node is not None:
        # the bias of a Gemm is an Add on the accumulator; exact only when the bias is a multiple of its scale
        chain_nodes = [bias_node] + chain_nodes
        chain_input = bias_node.input[0]
        bias = np.broadcast_to(m.init(node.input[2]), (n,)) / acc_scale
        layer.exact = layer.exact and bool(np.all(bias == np.rint(bias)))
    chain = _chain(m, chain_nodes, chain_input, conv, acc_scale)
    layout = "NCHW" if len(m.shape(node.output[0])) == 4 else "NC"
    if quant is None:
        graph.tail = Tail(chain, np.ones(n, np.int64), None, out_tensor, layout)
        graph.output_type = None
        return layer, out_tensor, node, None, None, True
    out_spec = _quant_spec(m, quant)
    thresholds, sign = _thresholds(chain, out_spec, acc_lo, acc_hi, node.name)
    layer.weights = weights * sign[:, None]
    layer.thresholds = thresholds
    layer.out_type = out_spec.dtype
    layer.nodes.append(quant.name)
    if out_spec.scale.size != 1:
        raise ModelError(f"node {quant.name!r}: activation quantizers need one scale per tensor")
    out_scale = float(out_spec.scale.reshape(-1)[0])
    layer.out_scale = out_scale
    trailing = _layout_to_output(m, out_tensor, quant)
    if trailing is not None:
        flatten = bool(trailing) and len(m.shape(m.graph.output[0].name)) == 2
        graph.tail = Tail(
            None,
            None,
            np.full(n, out_scale),
            m.graph.output[0].name,
            layout,
            flatten,
            [f"{t.name} ({t.op_type})" for t in trailing],
        )
        graph.output_type = out_spec.dtype
        return layer, out_tensor, quant, out_spec.dtype, out_scale, True
    return layer, out_tensor, quant, out_spec.dtype, out_scale, False


# ---------------------------------------------------------------------------------------------------------------
# Depthwise convolution and average pooling: one dot product per channel (gen/vvu.py)

POOL_OPS = ("AveragePool", "GlobalAveragePool", "ReduceMean")


def _lowering(node):
    """The function that turns a layer node into an integer layer: depthwise Conv and the average pools have
    their own, every other MatMul/Gemm/Conv goes to `_matvec`."""
    if node.op_type in POOL_OPS:
        return _average_pool
    if node.op_type == "Conv" and _attr(node, "group", 1) != 1:
        return _depthwise
    return _matvec


def _square_window(node, in_shape) -> tuple[int, int, int]:
    """(kernel, stride, padding) of a Conv/AveragePool node; square and symmetric only."""
    ks = list(_attr(node, "kernel_shape", []))
    strides = list(_attr(node, "strides", [1] * len(ks)))
    pads = list(_attr(node, "pads", [0] * 2 * len(ks)))
    if any(d != 1 for d in _attr(node, "dilations", [1, 1])):
        raise _unsupported(node, "with dilation")
    if len(set(ks)) != 1 or len(set(strides)) != 1 or len(set(pads)) != 1:
        raise _unsupported(node, f"with kernel {ks}, strides {strides}, pads {pads} (square and symmetric only)")
    return ks[0], strides[0], pads[0]


def _depthwise(m: _Model, node, graph: IntGraph, in_shape, in_type: IntType, in_scale: float, flattened_from):
    """A Conv with group = channels (one k x k filter per channel): a DepthwiseLayer."""
    channels, group = in_shape[2], _attr(node, "group", 1)
    codes, scale, w_type, weight_nodes = _quantized_weights(m, node.input[1], node)
    if group != channels or codes.shape[:2] != (channels, 1):
        raise ModelError(
            f"node {node.name!r} (Conv): group={group} with {channels} input and {codes.shape[0]} output "
            "channels is not supported; supported: group=1 (a full convolution) or group = input "
            "channels = output channels (depthwise)"
        )
    if in_type.bipolar:
        raise ModelError(
            f"node {node.name!r} (Conv): a depthwise convolution of bipolar (-1/+1) activations is not supported"
        )
    kernel, stride, padding = _square_window(node, in_shape)
    weights = codes.reshape(channels, kernel * kernel).astype(np.int64)  # (c, ky * k + kx)
    w_type.check(weights, f"node {node.name!r} weights")
    layer = DepthwiseLayer(
        node.name,
        in_shape,
        in_type,
        weights,
        w_type,
        None,
        None,
        None,
        kernel,
        stride,
        padding,
        nodes=weight_nodes + [node.name],
    )
    acc_scale = in_scale * _per_output_scale(scale, 0, node)
    lo, hi = layer.acc_range
    layer.exact = _is_power_of_two(acc_scale) and max(abs(lo), abs(hi)) < (1 << FLOAT32_EXACT_BITS)
    return _finish_layer(m, node, graph, layer, acc_scale, [], [], node.output[0])


def _average_pool(m: _Model, node, graph: IntGraph, in_shape, in_type: IntType, in_scale: float, flattened_from):
    """AveragePool / GlobalAveragePool / ReduceMean over (H, W): the window sum as a depthwise layer with unit
    weights; the division by the window size, as the node computes it in float32, goes into the thresholds of
    the activation quantizer that must follow (it is not a power of two in general)."""
    h, w, channels = in_shape
    if in_type.bipolar:
        raise ModelError(f"node {node.name!r} ({node.op_type}): averaging bipolar (-1/+1) activations is not supported")
    kernel, stride, padding, whole = 1, 1, 0, False
    if node.op_type == "GlobalAveragePool":
        whole = True
    elif node.op_type == "ReduceMean":
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = m.init(node.input[1])
        rank = len(m.shape(node.input[0]))
        axes = sorted(int(a) % rank for a in np.ravel(axes)) if axes is not None else None
        if rank != 4 or axes != [2, 3]:
            raise _unsupported(
                node, f"over axes {axes} of a rank-{rank} tensor (supported: the spatial axes 2, 3 of an NCHW image)"
            )
        whole = True
    else:
        ks = list(_attr(node, "kernel_shape", []))
        pads = list(_attr(node, "pads", [0] * 2 * len(ks)))
        if _attr(node, "ceil_mode", 0) or any(pads):
            raise _unsupported(node, f"with pads {pads} or ceil_mode (supported: no padding, floor)")
        if ks == [h, w]:
            whole = True
        else:
            kernel, stride, padding = _square_window(node, in_shape)
    window = h * w if whole else kernel * kernel
    weights = np.ones((channels, window), dtype=np.int64)
    layer = DepthwiseLayer(
        node.name,
        in_shape,
        in_type,
        weights,
        IntType(1, False),
        None,
        None,
        None,
        w if whole else kernel,
        w if whole else stride,
        0,
        nodes=[node.name],
        global_pool=whole,
    )
    lo, hi = layer.acc_range
    layer.exact = _is_power_of_two(in_scale) and max(abs(lo), abs(hi)) < (1 << FLOAT32_EXACT_BITS)
    tensor, after = node.output[0], node
    while tensor not in m.outputs:  # an activation quantizer must follow (through per-element ops)
        user = m.only_consumer(tensor, after)
        if user is None or _is_quant(user):
            break
        if user.op_type not in ELEMENTWISE_OPS:
            raise ModelError(
                f"node {node.name!r} ({node.op_type}): its average reaches node {user.name!r} "
                f"({user.op_type}) without an activation quantizer; supported: a Quant node "
                "(QuantIdentity/QuantReLU) after the average pool"
            )
        tensor, after = user.output[0], user
    # the node's float output is sum / window: a Div on the sum heads the chain the thresholds are found on
    count = f"{node.name}__window_size"
    total = f"{node.output[0]}__window_sum"
    divide = helper.make_node("Div", [total, count], [node.output[0]], name=f"{node.name}__average")
    constant = onnx.numpy_helper.from_array(np.asarray(window, dtype=np.float32), count)
    return _finish_layer(
        m, node, graph, layer, np.full(channels, in_scale), [divide], [constant], total, require_quant=True
    )


def _finish_layer(
    m: _Model,
    node,
    graph: IntGraph,
    layer,
    acc_scale,
    head: list,
    constants: list,
    chain_input: str,
    *,
    require_quant: bool = False,
):
    """The per-element ops after a depthwise or pooling layer up to its activation Quant become its thresholds
    (as in `_matvec`), or the float tail at the network's end. Returns `_matvec`'s tuple."""
    chain_nodes, quant, out_tensor = _collect_chain(m, node, node.output[0])
    layer.nodes += [n.name for n in chain_nodes]
    n = layer.out_features
    conv = len(m.shape(node.output[0])) == 4
    chain = _chain(m, head + chain_nodes, chain_input, conv, np.broadcast_to(acc_scale, (n,)).astype(np.float64))
    chain.initializers = list(chain.initializers) + constants
    layout = "NCHW" if conv else "NC"
    if quant is None:
        if require_quant:
            raise ModelError(
                f"node {node.name!r} ({node.op_type}): its output reaches the network output without an "
                "activation quantizer; supported: a Quant node (QuantIdentity/QuantReLU) after it"
            )
        graph.tail = Tail(chain, np.ones(n, np.int64), None, out_tensor, layout)
        graph.output_type = None
        return layer, out_tensor, node, None, None, True
    out_spec = _quant_spec(m, quant)
    if out_spec.scale.size != 1:
        raise ModelError(f"node {quant.name!r}: activation quantizers need one scale per tensor")
    if out_spec.dtype.bipolar:
        raise ModelError(
            f"node {quant.name!r}: a bipolar (-1/+1) quantizer after node {node.name!r} "
            f"({node.op_type}) is not supported"
        )
    lo, hi = layer.acc_range
    thresholds, sign = _thresholds(chain, out_spec, lo, hi, node.name)
    layer.weights = layer.weights * sign[:, None]
    layer.thresholds = thresholds
    layer.out_type = out_spec.dtype
    layer.nodes.append(quant.name)
    layer.out_scale = float(out_spec.scale.reshape(-1)[0])
    trailing = _layout_to_output(m, out_tensor, quant)
    done = trailing is not None
    if done:
        flatten = bool(trailing) and len(m.shape(m.graph.output[0].name)) == 2
        graph.tail = Tail(
            None,
            None,
            np.full(n, layer.out_scale),
            m.graph.output[0].name,
            layout,
            flatten,
            [f"{t.name} ({t.op_type})" for t in trailing],
        )
        graph.output_type = out_spec.dtype
    return layer, out_tensor, quant, out_spec.dtype, layer.out_scale, done


# ---------------------------------------------------------------------------------------------------------------
# Using the graph


def quantize_input(graph: IntGraph, x: np.ndarray) -> np.ndarray:
    """Float inputs in the model's layout ((B, C) or (B, C, H, W)) -> integers (B, H, W, C) as the input Quant
    node computes them."""
    x = np.asarray(x, dtype=np.float32)
    if graph.prefix is not None:
        x = graph.prefix.run(x)
    codes = graph.input_spec.integers(x)
    if graph.input.source_layout == "NCHW":
        return codes.transpose(0, 2, 3, 1)
    return codes.reshape(codes.shape[0], 1, 1, -1)


def model_output(graph: IntGraph, integers: np.ndarray) -> np.ndarray:
    """The last layer's integers (B, OH, OW, N) or (B, OH * OW * N) -> the model's float32 output, in its
    layout ((B, N), or (B, N, OH, OW) for a network that ends in a convolution)."""
    return graph.tail.apply(integers, graph.out_shape)


def host_operations(graph: IntGraph) -> dict:
    """What runs on the host around the hardware, in words: the pre-processing and the input quantizer before
    it, the output scale or float tail after it."""
    before = []
    if graph.prefix is not None:
        before.append(
            "pre-processing " + ", ".join(graph.prefix.node_names) + " in float32 (qonnx' own "
            "executor; not folded into the hardware)"
        )
    before.append(
        f"the input quantizer {graph.input.name} (float -> {graph.input.dtype.name} codes, scale {graph.input.scale:g})"
    )
    return {
        "before": before,
        "after": [graph.tail.host_ops()],
        "hardware": [f"{layer.name} ({layer.kind})" for layer in graph.layers],
    }


def qonnx_execute(model, x: np.ndarray) -> np.ndarray:
    """qonnx' execution of the whole model, one input at a time (the graph has batch size 1)."""
    from qonnx.core.onnx_exec import execute_onnx

    name = model.graph.input[0].name
    out_name = model.graph.output[0].name
    outs = [execute_onnx(model, {name: np.asarray(sample[None], dtype=np.float32)})[out_name] for sample in x]
    return np.concatenate(outs).astype(np.float32)


def describe_exactness(graph: IntGraph) -> str:
    inexact = [layer.name for layer in flat_layers(graph.layers) if isinstance(layer, MatVecLayer) and not layer.exact]
    if not inexact:
        return "every layer's scales are powers of two: qonnx' float execution is exact, the integer graph equals it"
    return (
        "layers " + ", ".join(inexact) + " have non-power-of-two scales: qonnx computes them in rounded float32, "
        "so a result that lands within float32 rounding of a quantization step may differ by one level"
    )
