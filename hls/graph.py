"""Our graph of integer layers: what the QONNX front end produces and both back ends consume.

A network is a chain of layers over integer tensors in channels-last (H, W, C) layout; a vector is a 1 x 1 image.
Every layer computes exactly on integers; the floating-point scales of the original network only matter at
the two ends (quantizing the input, reading the output) and are folded into thresholds in between, which is
FINN's streamlining idea: a quantized activation after an integer accumulator is a per-channel count of the
thresholds the accumulator reaches.

`run_integer` is the golden model of the whole network: plain NumPy, independent of how the hardware is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class IntType:
    """An integer datatype as a Quant node defines it: `bits` wide, signed or not, `narrow` drops the most
    negative (signed) or the largest (unsigned) code; bipolar is {-1, +1}."""

    bits: int
    signed: bool
    narrow: bool = False
    bipolar: bool = False

    @property
    def min(self) -> int:
        if self.bipolar:
            return -1
        if self.signed:
            return -(1 << (self.bits - 1)) + (1 if self.narrow else 0)
        return 0

    @property
    def max(self) -> int:
        if self.bipolar:
            return 1
        if self.signed:
            return (1 << (self.bits - 1)) - 1
        return (1 << self.bits) - 1 - (1 if self.narrow else 0)

    @property
    def threshold_base(self) -> int:
        """The level that reaching none of the 2**storage_bits - 1 thresholds stands for: `min`, except for a
        narrow signed type (e.g. INT2n: -1, 0, 1), whose count starts one below `min` so that base + count
        fits the two's-complement field; its first threshold is then one every accumulator reaches."""
        if self.signed and self.narrow and not self.bipolar:
            return self.min - 1
        return self.min

    @property
    def storage_bits(self) -> int:
        """Width of the two's-complement (signed) or plain binary field that holds every value."""
        return 2 if self.bipolar else self.bits

    @property
    def storage_signed(self) -> bool:
        return self.signed or self.bipolar

    @property
    def name(self) -> str:
        if self.bipolar:
            return "BIPOLAR"
        return f"{'INT' if self.signed else 'UINT'}{self.bits}{'n' if self.narrow else ''}"

    def check(self, values: np.ndarray, what: str) -> None:
        values = np.asarray(values)
        if values.size and (values.min() < self.min or values.max() > self.max):
            raise ValueError(
                f"{what}: values {values.min()}..{values.max()} outside {self.name} ({self.min}..{self.max})"
            )


@dataclass
class InputLayer:
    """The network input: float images become integers through the input Quant node."""

    name: str
    shape: tuple[int, int, int]  # (H, W, C)
    dtype: IntType
    scale: float
    source_layout: str  # "NCHW" or "NC": how the ONNX model takes its input

    kind = "input"

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.shape


@dataclass
class MatVecLayer:
    """A dense layer, or a convolution lowered to sliding windows + matrix-vector products.

    `weights` is (N, K) with K in (ky, kx, c) order for convolutions. With `thresholds` (N, T) the output
    is `out_base + count(acc >= thresholds[n])`; without, the output is the raw accumulator."""

    name: str
    in_shape: tuple[int, int, int]
    in_type: IntType
    weights: np.ndarray
    w_type: IntType
    thresholds: np.ndarray | None
    out_type: IntType | None  # None: raw accumulator
    out_scale: float | None
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    exact: bool = True  # qonnx' float execution of this layer is exact (power-of-two scales)
    nodes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "conv" if self.is_conv else "dense"

    @property
    def is_conv(self) -> bool:
        return not (self.in_shape[0] == 1 and self.in_shape[1] == 1 and self.kernel == 1)

    @property
    def out_features(self) -> int:
        return self.weights.shape[0]

    @property
    def in_features(self) -> int:
        return self.weights.shape[1]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        h, w, _ = self.in_shape
        oh = (h + 2 * self.padding - self.kernel) // self.stride + 1
        ow = (w + 2 * self.padding - self.kernel) // self.stride + 1
        return (oh, ow, self.out_features)

    @property
    def out_base(self) -> int:
        return self.out_type.threshold_base if self.out_type is not None else 0

    @property
    def acc_range(self) -> tuple[int, int]:
        """Exact reachable range of the accumulator per the operand types (over every output channel)."""
        lo_in, hi_in = self.in_type.min, self.in_type.max
        w = self.weights.astype(np.int64)
        per_term_max = np.maximum(w * lo_in, w * hi_in)
        per_term_min = np.minimum(w * lo_in, w * hi_in)
        if self.padding:
            # padded window positions contribute w * 0
            per_term_max = np.maximum(per_term_max, 0)
            per_term_min = np.minimum(per_term_min, 0)
        return int(per_term_min.sum(axis=1).min()), int(per_term_max.sum(axis=1).max())

    @property
    def macs_per_inference(self) -> int:
        oh, ow, n = self.out_shape
        return oh * ow * n * self.in_features


@dataclass
class DepthwiseLayer(MatVecLayer):
    """A depthwise convolution (Conv with group = channels) or an average pool (a depthwise convolution with unit
    weights, its 1/(k*k) folded into the thresholds after it): every channel has its own window dot product.

    `weights` is (C, KK) with KK window positions in (ky, kx) order; with `global_pool` the window is the whole
    (H, W) image in raster order (a global average pool) and the output is 1 x 1 x C."""

    global_pool: bool = False

    @property
    def kind(self) -> str:
        return "depthwise"

    @property
    def is_conv(self) -> bool:
        return True

    @property
    def out_shape(self) -> tuple[int, int, int]:
        if self.global_pool:
            return (1, 1, self.out_features)
        return super().out_shape


@dataclass
class MaxPoolLayer:
    name: str
    in_shape: tuple[int, int, int]
    dtype: IntType
    kernel: int
    nodes: list[str] = field(default_factory=list)

    kind = "maxpool"

    @property
    def out_shape(self) -> tuple[int, int, int]:
        h, w, c = self.in_shape
        return (h // self.kernel, w // self.kernel, c)


@dataclass
class ResidualLayer:
    """Two branches from one fork, joined by an elementwise add: out = threshold((a << a_shift) + (b << b_shift))
    where a is `branch` run on the input and b is `shortcut` run on it (empty: the identity shortcut). The
    shifts put both on the finer of their two (power-of-two) scales; `thresholds` (1, T) are the activation
    quantizer after the add, one set for the whole tensor."""

    name: str
    in_shape: tuple[int, int, int]
    in_type: IntType
    branch: list
    shortcut: list
    a_type: IntType
    b_type: IntType
    a_shift: int
    b_shift: int
    thresholds: np.ndarray
    out_type: IntType
    out_scale: float
    nodes: list[str] = field(default_factory=list)

    kind = "residual"

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.branch[-1].out_shape

    @property
    def out_base(self) -> int:
        return self.out_type.threshold_base

    @property
    def sum_range(self) -> tuple[int, int]:
        return (
            (self.a_type.min << self.a_shift) + (self.b_type.min << self.b_shift),
            (self.a_type.max << self.a_shift) + (self.b_type.max << self.b_shift),
        )


Layer = MatVecLayer | MaxPoolLayer | ResidualLayer


def flat_layers(layers: list) -> list:
    """Every layer of a chain, the layers inside residual blocks included (branch, then shortcut)."""
    out = []
    for layer in layers:
        if isinstance(layer, ResidualLayer):
            out += flat_layers(layer.branch) + flat_layers(layer.shortcut)
        else:
            out.append(layer)
    return out


@dataclass
class IntGraph:
    """A chain of integer layers. `output_scale` (per output channel) and `tail` turn the last layer's raw
    integers into the model's float output: `tail(acc)` is evaluated by the front end with qonnx itself."""

    name: str
    input: InputLayer
    layers: list[Layer]
    output_type: IntType | None
    tail: object = None  # frontend.Tail: the float ops after the last integer layer
    input_spec: object = None  # frontend.QuantSpec of the input Quant node
    prefix: object = None  # frontend.Prefix: pre-processing before the input Quant (on the host)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.layers[-1].out_shape

    def summary(self) -> list[dict]:
        rows = [
            {
                "name": self.input.name,
                "kind": "input",
                "out_shape": list(self.input.shape),
                "type": self.input.dtype.name,
            }
        ]
        for layer in self.layers:
            row = {
                "name": layer.name,
                "kind": layer.kind,
                "in_shape": list(layer.in_shape),
                "out_shape": list(layer.out_shape),
            }
            if isinstance(layer, MatVecLayer):
                row.update(
                    in_type=layer.in_type.name,
                    w_type=layer.w_type.name,
                    out_type=layer.out_type.name if layer.out_type else "acc",
                    weights=list(layer.weights.shape),
                    thresholds=(list(layer.thresholds.shape) if layer.thresholds is not None else None),
                    kernel=layer.kernel,
                    stride=layer.stride,
                    padding=layer.padding,
                    exact=layer.exact,
                    macs=layer.macs_per_inference,
                    onnx_nodes=layer.nodes,
                )
            elif isinstance(layer, ResidualLayer):
                row.update(
                    in_type=layer.in_type.name,
                    out_type=layer.out_type.name,
                    branch=[b.name for b in layer.branch],
                    shortcut=[b.name for b in layer.shortcut],
                    a_shift=layer.a_shift,
                    b_shift=layer.b_shift,
                    onnx_nodes=layer.nodes,
                )
            else:
                row.update(type=layer.dtype.name, kernel=layer.kernel, onnx_nodes=layer.nodes)
            rows.append(row)
        return rows


# ---------------------------------------------------------------------------------------------------------------
# Golden model of the whole network


def im2col(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """(B, H, W, C) -> (B, OH, OW, k*k*C) with the window in (ky, kx, c) order; padding is integer zero."""
    b, h, w, c = x.shape
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    oh = (h + 2 * padding - kernel) // stride + 1
    ow = (w + 2 * padding - kernel) // stride + 1
    cols = np.empty((b, oh, ow, kernel * kernel * c), dtype=np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            patch = x[:, ky : ky + stride * (oh - 1) + 1 : stride, kx : kx + stride * (ow - 1) + 1 : stride, :]
            start = (ky * kernel + kx) * c
            cols[..., start : start + c] = patch
    return cols


def threshold_count(acc: np.ndarray, thresholds: np.ndarray, base: int) -> np.ndarray:
    """base + number of thresholds[n, :] that acc[..., n] reaches."""
    return base + (acc[..., :, None] >= thresholds).sum(axis=-1)


def run_layer(layer: Layer, x: np.ndarray) -> np.ndarray:
    # a flattened image is the same element sequence in (y, x, c) order: reshaping is all a Flatten does here
    x = x.astype(np.int64).reshape(len(x), *layer.in_shape)
    if isinstance(layer, ResidualLayer):
        a, b = x, x
        for inner in layer.branch:
            a = run_layer(inner, a)
        for inner in layer.shortcut:
            b = run_layer(inner, b)
        total = (a.reshape(len(x), *layer.out_shape) << layer.a_shift) + (
            b.reshape(len(x), *layer.out_shape) << layer.b_shift
        )
        return threshold_count(total, layer.thresholds.astype(np.int64), layer.out_base)
    if isinstance(layer, MaxPoolLayer):
        b, h, w, c = x.shape
        k = layer.kernel
        oh, ow = h // k, w // k
        return x[:, : oh * k, : ow * k, :].reshape(b, oh, k, ow, k, c).max(axis=(2, 4))
    if isinstance(layer, DepthwiseLayer):
        b, h, w, c = x.shape
        if layer.global_pool:
            windows = x.reshape(b, 1, 1, h * w, c)
        else:
            oh, ow, _ = layer.out_shape
            windows = im2col(x, layer.kernel, layer.stride, layer.padding).reshape(b, oh, ow, -1, c)
        acc = np.einsum("bijkc,ck->bijc", windows, layer.weights.astype(np.int64))
    else:
        cols = im2col(x, layer.kernel, layer.stride, layer.padding)
        acc = cols @ layer.weights.astype(np.int64).T
    if layer.thresholds is None:
        return acc
    if layer.out_type.bipolar:  # one threshold: -1 below it, +1 from it on
        return 2 * threshold_count(acc, layer.thresholds.astype(np.int64), 0) - 1
    return threshold_count(acc, layer.thresholds.astype(np.int64), layer.out_base)


def run_integer(graph: IntGraph, x: np.ndarray, *, upto: int | None = None) -> np.ndarray:
    """Integer inputs (B, H, W, C) -> the last layer's integers (B, OH, OW, N), exactly as the hardware does."""
    graph.input.dtype.check(x, "network input")
    for layer in graph.layers[:upto]:
        x = run_layer(layer, x)
    return x
