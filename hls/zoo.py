"""The example networks: small quantized classifiers on scikit-learn's 8x8 digits, trained with Brevitas and
exported to QONNX, so the front end and the back ends have real networks to compile and check against.

Every quantizer uses a power-of-two scale (Brevitas' fixed-point quantizers), so each tensor is an integer
times 2^k and qonnx' float32 execution of the export is exact: that is the reference the hardware must match
bit for bit.

Input: the digits pixels are integers 0..16. They are clipped to 0..15 and divided by 16, so an image is k/16
with k in 0..15, which an unsigned 4-bit quantizer with the fixed scale 1/16 represents exactly (the input
QuantIdentity is then the identity on the data and the hardware input is the integer pixel k itself).
Clipping 16 to 15 loses one grey level of the brightest pixels only.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hardwire.cache import atomic_dir, cache_root, digest
from hardwire.errors import ParameterError
from hardwire.threads import one_torch_thread

# Bump when a model definition, the training recipe or the export changes: it is part of the cache key.
ZOO_VERSION = 2

INPUT_BITS = 4
INPUT_SCALE = 1.0 / (1 << INPUT_BITS)


@dataclass(frozen=True)
class ZooSpec:
    """What defines one zoo network: its architecture, quantization and training hyperparameters."""

    name: str
    kind: str  # "mlp" or "cnn"
    weight_bits: int
    act_bits: int
    input_bits: int = INPUT_BITS
    hidden: tuple[int, ...] = (64, 64)
    conv_channels: tuple[int, ...] = ()
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 0.01
    seed: int = 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, 64) if self.kind == "mlp" else (1, 1, 8, 8)


SPECS: dict[str, ZooSpec] = {
    "mlp4": ZooSpec("mlp4", "mlp", weight_bits=4, act_bits=4),
    "mlp2": ZooSpec("mlp2", "mlp", weight_bits=2, act_bits=2),
    "cnn4": ZooSpec("cnn4", "cnn", weight_bits=4, act_bits=4, hidden=(), conv_channels=(8, 16), epochs=30),
}


@dataclass(frozen=True)
class ZooEntry:
    """A trained and exported network: where its QONNX file is and how well it classifies."""

    name: str
    onnx_path: Path
    test_accuracy: float
    train_seconds: float
    input_shape: tuple[int, ...]
    weight_bits: int
    act_bits: int
    input_bits: int
    input_scale: float
    key: str

    def to_json(self) -> dict:
        data = asdict(self)
        data["onnx_path"] = str(self.onnx_path)
        return data


# --- data -----------------------------------------------------------------------------------------


def load_digits_split(seed: int = 0):
    """scikit-learn's digits as float32 k/16 (k = pixel clipped to 0..15), stratified 80/20 split.

    Returns (x_train, y_train, x_test, y_test); x has shape (n, 64), y is int64; the test split has 360 images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (np.minimum(digits.data, 15) / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


def shape_input(spec: ZooSpec, x: np.ndarray) -> np.ndarray:
    """Flat (n, 64) images in the layout the network takes: (n, 64) or NCHW (n, 1, 8, 8)."""
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(-1, 64) if spec.kind == "mlp" else x.reshape(-1, 1, 8, 8)


# --- models ---------------------------------------------------------------------------------------


def _quantizers(spec: ZooSpec):
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    class InputQuant(Uint8ActPerTensorFixedPoint):
        bit_width = spec.input_bits
        scaling_impl_type = "const"
        scaling_init = 1.0  # threshold 1.0 over 2^bits levels: scale exactly 2^-bits

    class WeightQuant(Int8WeightPerTensorFixedPoint):
        bit_width = spec.weight_bits

    class ActQuant(Uint8ActPerTensorFixedPoint):
        bit_width = spec.act_bits

    return InputQuant, WeightQuant, ActQuant


def make_model(spec: ZooSpec):
    """The untrained Brevitas module for `spec` (FINN TFC style: QuantLinear -> BatchNorm -> QuantReLU)."""
    import brevitas.nn as qnn
    from torch import nn

    input_quant, weight_quant, act_quant = _quantizers(spec)
    layers: list[nn.Module] = [qnn.QuantIdentity(act_quant=input_quant)]
    if spec.kind == "mlp":
        width = 64
        for hidden in spec.hidden:
            layers += [
                qnn.QuantLinear(width, hidden, bias=False, weight_quant=weight_quant),
                nn.BatchNorm1d(hidden),
                qnn.QuantReLU(act_quant=act_quant),
            ]
            width = hidden
        layers.append(qnn.QuantLinear(width, 10, bias=False, weight_quant=weight_quant))
    elif spec.kind == "cnn":
        c1, c2 = spec.conv_channels
        layers += [
            qnn.QuantConv2d(1, c1, 3, padding=1, bias=False, weight_quant=weight_quant),  # 8x8
            nn.BatchNorm2d(c1),
            qnn.QuantReLU(act_quant=act_quant),
            nn.MaxPool2d(2),  # 4x4
            qnn.QuantConv2d(c1, c2, 3, padding=0, bias=False, weight_quant=weight_quant),  # 2x2
            nn.BatchNorm2d(c2),
            qnn.QuantReLU(act_quant=act_quant),
            nn.Flatten(),
            qnn.QuantLinear(c2 * 2 * 2, 10, bias=False, weight_quant=weight_quant),
        ]
    else:
        raise ValueError(f"zoo: kind={spec.kind!r} not in ('mlp', 'cnn')")
    return nn.Sequential(*layers)


def get_spec(name: str) -> ZooSpec:
    if name not in SPECS:
        raise ParameterError("zoo network", name, ", ".join(sorted(SPECS)))
    return SPECS[name]


def train(name: str, epochs: int | None = None, seed: int | None = None):
    """Train the zoo network `name` on the digits train split (deterministic, CPU). Returns the module in eval mode."""
    import torch

    spec = get_spec(name)
    epochs = spec.epochs if epochs is None else epochs
    seed = spec.seed if seed is None else seed
    x_train, y_train, _, _ = load_digits_split(seed=0)
    xt = torch.from_numpy(shape_input(spec, x_train))
    yt = torch.from_numpy(y_train)
    with one_torch_thread():
        torch.manual_seed(seed)
        model = make_model(spec)
        optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
        steps_per_epoch = -(-len(xt) // spec.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
        generator = torch.Generator().manual_seed(seed)
        loss_fn = torch.nn.CrossEntropyLoss()
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=generator)
            for start in range(0, len(xt), spec.batch_size):
                batch = order[start : start + spec.batch_size]
                if len(batch) < 2:  # BatchNorm needs two samples to train
                    continue
                optimizer.zero_grad()
                loss = loss_fn(model(xt[batch]), yt[batch])
                loss.backward()
                optimizer.step()
                schedule.step()
        model.eval()
    return model


def torch_predict(model, spec: ZooSpec, x: np.ndarray) -> np.ndarray:
    """The Brevitas module's own float32 logits for flat (n, 64) images."""
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(shape_input(spec, x))).numpy()


# --- export and execution -------------------------------------------------------------------------


def export(model, path: Path, input_shape: tuple[int, ...] = (1, 64)) -> Path:
    """Export to QONNX (batch 1 in the graph) and apply qonnx' cleanup (shape inference, constant folding,
    unique readable names). `input_shape` is (1, 64) for the MLPs, (1, 1, 8, 8) for the CNN."""
    import torch
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    # The exporter may write its weights as external data beside the raw file: keep both out of `path`'s folder.
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "raw.onnx"
        export_qonnx(model, torch.zeros(input_shape, dtype=torch.float32), export_path=str(raw))
        cleaned = cleanup_model(ModelWrapper(str(raw)))
        cleaned.save(str(path))  # weights inline: one self-contained file
    return path


_MODEL_CACHE: dict[str, object] = {}


def _batched_model(onnx_path: Path, batch: int):
    """The QONNX model with its batch dimension set to `batch` (shapes re-inferred), loaded once per batch."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    key = f"{Path(onnx_path).resolve()}:{Path(onnx_path).stat().st_mtime_ns}:{batch}"
    if key not in _MODEL_CACHE:
        model = ModelWrapper(str(onnx_path))
        graph = model.graph
        for value in list(graph.input) + list(graph.output):
            value.type.tensor_type.shape.dim[0].dim_value = batch
        keep = {v.name for v in list(graph.input) + list(graph.output)}
        intermediates = [v for v in graph.value_info if v.name not in keep]
        for v in intermediates:
            graph.value_info.remove(v)
        # Brevitas exports flatten as Reshape to the constant (1, features): give it the new batch too.
        for node in graph.node:
            if node.op_type == "Reshape":
                shape = model.get_initializer(node.input[1])
                if shape is not None and shape.ndim == 1 and len(shape) > 0 and shape[0] == 1:
                    shape = shape.copy()
                    shape[0] = batch
                    model.set_initializer(node.input[1], shape)
        _MODEL_CACHE[key] = model.transform(InferShapes())
    return _MODEL_CACHE[key]


def qonnx_execute(onnx_path: Path, x: np.ndarray, batch: int = 0) -> np.ndarray:
    """Run the QONNX graph with qonnx' executor (Quant nodes are qonnx custom ops) on a batch `x` shaped as the
    graph input without its batch dimension, e.g. (n, 64) or (n, 1, 8, 8). Returns float32 outputs (n, ...).

    The whole batch runs in one execution (the graph's batch dimension is rewritten); `batch` > 0 splits it
    into chunks of that size."""
    from qonnx.core.onnx_exec import execute_onnx

    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    chunk = n if batch <= 0 else batch
    outputs = []
    for start in range(0, n, chunk):
        part = x[start : start + chunk]
        model = _batched_model(Path(onnx_path), len(part))
        in_name = model.graph.input[0].name
        out_name = model.graph.output[0].name
        expected = tuple(model.get_tensor_shape(in_name))
        if part.shape != expected:
            part = part.reshape(expected)
        outputs.append(execute_onnx(model, {in_name: part})[out_name])
    return np.concatenate(outputs).astype(np.float32)


# --- the cache ------------------------------------------------------------------------------------


def zoo_key(spec: ZooSpec) -> str:
    """Cache key: the zoo version, the spec and the versions of the libraries that shape the export."""
    import brevitas
    import qonnx
    import torch

    versions = {
        "brevitas": brevitas.__version__,
        "qonnx": getattr(qonnx, "__version__", "?"),
        "torch": torch.__version__,
    }
    return digest(ZOO_VERSION, asdict(spec), versions)


def zoo_dir(name: str) -> Path:
    spec = get_spec(name)
    return cache_root() / "zoo" / f"{name}-{zoo_key(spec)}"


def build(name: str, out_dir: Path | None = None) -> ZooEntry:
    """Train and export the zoo network `name`, cached under `cache_root()/zoo/<name>-<key>`.

    The directory holds `<name>.onnx`, `<name>.pt` (the Brevitas state dict) and `entry.json` (test accuracy,
    training time, ...). A second call returns the cached entry without training. `out_dir` overrides the
    cache location (the directory is still written atomically)."""
    spec = get_spec(name)
    final = Path(out_dir) if out_dir is not None else zoo_dir(name)
    entry_json = final / "entry.json"
    if not entry_json.exists():
        with _build_lock(final):
            if not entry_json.exists():  # another process may have finished it while we waited
                _train_and_export(spec, final)
    data = json.loads(entry_json.read_text())
    return ZooEntry(
        name=data["name"],
        onnx_path=final / f"{name}.onnx",
        test_accuracy=data["test_accuracy"],
        train_seconds=data["train_seconds"],
        input_shape=tuple(data["input_shape"]),
        weight_bits=data["weight_bits"],
        act_bits=data["act_bits"],
        input_bits=data["input_bits"],
        input_scale=data["input_scale"],
        key=data["key"],
    )


@contextlib.contextmanager
def _build_lock(final: Path):
    """An exclusive file lock per cache entry: parallel pytest workers train a network once, not once each."""
    import fcntl

    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_and_export(spec: ZooSpec, final: Path) -> None:
    import torch

    name = spec.name
    with atomic_dir(final) as tmp:
        start = time.perf_counter()
        model = train(name)
        seconds = time.perf_counter() - start
        _, _, x_test, y_test = load_digits_split(seed=0)
        accuracy = float(np.mean(np.argmax(torch_predict(model, spec, x_test), axis=1) == y_test))
        export(model, tmp / f"{name}.onnx", spec.input_shape)
        torch.save(model.state_dict(), tmp / f"{name}.pt")
        data = {
            "name": name,
            "test_accuracy": accuracy,
            "train_seconds": round(seconds, 2),
            "input_shape": list(spec.input_shape),
            "weight_bits": spec.weight_bits,
            "act_bits": spec.act_bits,
            "input_bits": spec.input_bits,
            "input_scale": INPUT_SCALE,
            "key": zoo_key(spec),
            "spec": asdict(spec),
        }
        (tmp / "entry.json").write_text(json.dumps(data, indent=2) + "\n")


def load_model(name: str, out_dir: Path | None = None):
    """The trained Brevitas module of a built zoo entry (eval mode), rebuilt from its saved state dict."""
    import torch

    spec = get_spec(name)
    final = Path(out_dir) if out_dir is not None else zoo_dir(name)
    build(name, out_dir)
    model = make_model(spec)
    model.load_state_dict(torch.load(final / f"{name}.pt", weights_only=True))
    model.eval()
    return model
