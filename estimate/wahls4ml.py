"""wa-hls4ml interop: their published synthesis records as rows of our dataset, so a user who holds the
wa-hls4ml dataset can train our estimators on it.

wa-hls4ml (Hawks et al., arXiv:2511.05615; records written by `util/json_dataset_processor.py` of
github.com/ben-hawks/wa-hls4ml-search) publishes one JSON object per synthesized network:

  meta_data            {uuid, model_name, artifacts_file}
  model_config         the Keras layers in order, as rule4ml's `config_from_keras_model` lists them: class_name,
                       input_shape / output_shape (batch dimension first), parameters, reuse_factor (the valid
                       reuse factor hls4ml picks for that layer), and per kind neurons (Dense), filters /
                       channels / kernel_size / strides / padding (Conv), activation (Activation; a layer's own
                       activation follows it as an extra "Activation" entry)
  hls_config           hls4ml's HLSConfig: Model {Precision, ReuseFactor, Strategy} and LayerName
                       {keras layer name: {Precision (a string, or per variable: weight, bias, result, accum),
                       ReuseFactor, Strategy}}
  resource_report      Vivado synthesis: lut, ff, dsp, bram (BRAM_18K), uram; {} when synthesis failed
  hls_resource_report  the HLS (C synthesis) estimate, same keys
  latency_report       cycles_min/max, interval_min/max, target_clock, estimated_clock (ns)
  target_part, vivado_version, hls4ml_version

Numbers may be JSON numbers or numeric strings (hls4ml's report parser keeps the tool's text).

A record becomes one `DesignGraph(kind="hls4ml")`: one node per model_config entry, in order, chained by edges
(their networks are sequential; a branch is not represented). A node's op is the layer kind: input, dense,
conv1d, conv2d, activation, pooling, batchnorm, flatten, reshape, dropout, add, concatenate; QKeras classes map to
the same op with `quantized=1`. A layer class outside that list is kept as a node whose op is its class name in
lower case (e.g. "zeropadding1d"), so the op vocabulary of a model trained on such records grows with them.

Node features (see `_layer_features`): in_size / out_size (elements per sample), the layer's dimensions, its
precisions as hardware widths (in_width, out_width from `result`, w_width from `weight`, acc_width from `accum`,
each with its integer bits), reuse_factor, lanes (= ceil(weights / reuse factor), hls4ml's multiplier limit),
multiplier_bits, weight_bits, and one-hots for strategy, io type, activation and padding.

Where the hls4ml config says a precision is "auto" (hls4ml infers it), the node gets the model default and the
flag `<prefix>_auto=1`: the width hls4ml chose is not in the record. LayerName entries are matched to layers by
position when there is one per layer, else by the names Keras gives by default (`q_dense_1`,
`q_dense_1_relu` for its activation); a layer with no entry (`hls_config_entry=0`) takes the model defaults.
The io type is read from the record where it has one (hls_config.IOType, io_type); otherwise the dataset card's
convention applies: io_stream for the convolutional models, io_parallel for the fully connected ones.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path

from hardwire.errors import ModelError
from hardwire.estimate.features import DesignGraph, Node

SOURCE = "wa-hls4ml"
REPORTS = {"vivado": "resource_report", "hls": "hls_resource_report"}
# our label: the keys it may carry in a report (processed records use the first; raw hls4ml reports the others)
LABEL_KEYS = {"lut": ("lut", "LUT"), "ff": ("ff", "FF"), "dsp": ("dsp", "DSP48E", "DSP"), "bram": ("bram", "BRAM_18K")}
STRATEGIES = ("latency", "resource")
IO_TYPES = ("io_parallel", "io_stream")

LAYER_OPS = {
    "InputLayer": "input",
    "Dense": "dense",
    "QDense": "dense",
    "Conv1D": "conv1d",
    "QConv1D": "conv1d",
    "Conv2D": "conv2d",
    "QConv2D": "conv2d",
    "Activation": "activation",
    "QActivation": "activation",
    "ReLU": "activation",
    "LeakyReLU": "activation",
    "Softmax": "activation",
    "ELU": "activation",
    "PReLU": "activation",
    "MaxPooling1D": "pooling",
    "MaxPooling2D": "pooling",
    "AveragePooling1D": "pooling",
    "AveragePooling2D": "pooling",
    "GlobalMaxPooling1D": "pooling",
    "GlobalMaxPooling2D": "pooling",
    "GlobalAveragePooling1D": "pooling",
    "GlobalAveragePooling2D": "pooling",
    "BatchNormalization": "batchnorm",
    "QBatchNormalization": "batchnorm",
    "Flatten": "flatten",
    "Reshape": "reshape",
    "Dropout": "dropout",
    "Add": "add",
    "Concatenate": "concatenate",
}
QUANTIZED_CLASSES = ("QDense", "QConv1D", "QConv2D", "QActivation", "QBatchNormalization")
CLASS_ACTIVATIONS = {"ReLU": "relu", "LeakyReLU": "leaky_relu", "Softmax": "softmax", "ELU": "elu", "PReLU": "prelu"}
WEIGHT_KEYS = ("weight", "scale")  # hls4ml's name of the weight variable (batch normalization: scale)

_FIXED = re.compile(r"^\s*(?:ap_)?(u?)fixed\s*<\s*(\d+)\s*,\s*(-?\d+)\s*(?:,[^>]*)?>\s*$")
_INTEGER = re.compile(r"^\s*(?:ap_)?(u?)int\s*<\s*(\d+)\s*>\s*$")


# ---------------------------------------------------------------------------------------------------------------
# Files


def read_records(path) -> list[dict]:
    """The records of a wa-hls4ml file: .json (one record or a list of them) or .jsonl (one record, or a list of
    records, per line), either optionally gzipped (.json.gz, .jsonl.gz)."""
    path = Path(path)
    name = path.name.lower()
    gzipped = name.endswith(".gz")
    name = name.removesuffix(".gz")
    kind = ".jsonl" if name.endswith(".jsonl") else ".json" if name.endswith(".json") else ""
    if kind not in (".json", ".jsonl"):
        raise ModelError(f"{path}: not a wa-hls4ml record file (expected .json, .jsonl, .json.gz or .jsonl.gz)")
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        with gzip.open(path, "rt", encoding="utf-8") if gzipped else path.open(encoding="utf-8") as stream:
            if kind == ".json":
                return _as_records(_parse_json(stream.read(), path), path)
            records: list[dict] = []
            for number, line in enumerate(stream, start=1):
                if line.strip():
                    records.extend(_as_records(_parse_json(line, f"{path}:{number}"), f"{path}:{number}"))
            return records
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise ModelError(f"{path}: unreadable ({type(error).__name__}: {error})") from None


def read_rows(path, report: str = "vivado", skip_failed: bool = True) -> tuple[list[dict], int]:
    """Every record of `path` as a dataset row (see `record_to_row`), and the number of failed runs skipped:
    records whose resource report is empty, as wa-hls4ml keeps for runs whose synthesis failed."""
    report_key = _report_key(report)
    rows, failed = [], 0
    for index, record in enumerate(read_records(path)):
        if skip_failed and not record.get(report_key):
            failed += 1
            continue
        rows.append(_convert(record, _Where(record, f"{Path(path).name} record {index}"), report))
    return rows, failed


def _parse_json(text: str, where) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelError(f"{where}: not valid JSON ({error})") from None


def _as_records(data, where) -> list[dict]:
    items = data if isinstance(data, list) else [data]
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ModelError(f"{where}: record {index} is a JSON {type(item).__name__}, not an object")
    return items


# ---------------------------------------------------------------------------------------------------------------
# One record


def record_to_row(record: dict, index: int | None = None, report: str = "vivado") -> dict:
    """One wa-hls4ml record as a row of our dataset: {"design": DesignGraph(kind="hls4ml").to_dict(),
    "target": "hls4ml:<part>", "labels": {lut, ff, dsp, bram}, "exact": {latency_cycles, initiation_interval}
    (those the record has), "source": "wa-hls4ml", ...}. `report` picks the labels: "vivado" (resource_report,
    after logic synthesis) or "hls" (hls_resource_report, the C-synthesis estimate). `index` (the record's place
    in its file) only names the record in errors. Raises ModelError naming the record and the field."""
    return _convert(record, _Where(record, None if index is None else f"record {index}"), report)


def record_to_graph(record: dict, index: int | None = None) -> DesignGraph:
    """The design graph of one record (its layers and hls4ml configuration; no labels needed)."""
    where = _Where(record, None if index is None else f"record {index}")
    return _graph(_require_record(record, where), where)[0]


class _Where:
    """Names a record in errors: its place in the file and its id (uuid or model name) where it has them."""

    def __init__(self, record, place: str | None):
        meta = record.get("meta_data") if isinstance(record, dict) else None
        ident = None
        if isinstance(meta, dict):
            ident = meta.get("uuid") or meta.get("model_name")
        parts = [place] if place else []
        if ident:
            parts.append(f"id {ident}")
        self.label = "wa-hls4ml " + (" ".join(parts) if parts else "record")

    def error(self, field: str, problem: str) -> ModelError:
        return ModelError(f"{self.label}: {field}: {problem}")


def _report_key(report: str) -> str:
    if report not in REPORTS:
        raise ModelError(f"report={report!r}: expected one of " + ", ".join(REPORTS))
    return REPORTS[report]


def _require_record(record, where: _Where) -> dict:
    if not isinstance(record, dict):
        raise where.error("record", f"expected a JSON object, got {type(record).__name__}")
    return record


def _convert(record, where: _Where, report: str) -> dict:
    record = _require_record(record, where)
    report_key = _report_key(report)
    graph, io_type = _graph(record, where)
    target = record.get("target_part") or record.get("board")
    if not isinstance(target, str) or not target.strip():
        raise where.error("target_part", f"expected the FPGA part name, got {target!r}")
    resources = record.get(report_key)
    if not resources:
        raise where.error(report_key, "missing or empty (the run's synthesis failed or was not run)")
    if not isinstance(resources, dict):
        raise where.error(report_key, f"expected an object, got {type(resources).__name__}")
    labels = {}
    for label, keys in LABEL_KEYS.items():
        key = next((k for k in keys if k in resources), None)
        if key is None:
            raise where.error(f"{report_key}.{keys[0]}", "missing")
        labels[label] = _count(resources[key], where, f"{report_key}.{key}")
    meta = record.get("meta_data") if isinstance(record.get("meta_data"), dict) else {}
    row = {
        "design": graph.to_dict(),
        "target": f"hls4ml:{target.strip()}",
        "labels": labels,
        "exact": dict(graph.exact),
        "source": SOURCE,
        "id": meta.get("uuid") or meta.get("model_name") or graph.name,
        "report": report_key,
        "io_type": io_type,
    }
    clock = _clock(record.get("latency_report"), where)
    if clock:
        row["clock_ns"] = clock
    versions = {
        tool: record[f"{tool}_version"]
        for tool in ("vivado", "hls4ml")
        if isinstance(record.get(f"{tool}_version"), str)
    }
    if versions:
        row["tool_versions"] = versions
    return row


def _graph(record: dict, where: _Where) -> tuple[DesignGraph, str]:
    """The record's design graph and the io type it was built with."""
    layers = record.get("model_config")
    if not isinstance(layers, list) or not layers:
        raise where.error("model_config", "expected a non-empty list of layers")
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise where.error(f"model_config[{i}]", f"expected an object, got {type(layer).__name__}")
        if not isinstance(layer.get("class_name"), str) or not layer["class_name"]:
            raise where.error(
                f"model_config[{i}].class_name", f"expected a layer class name, got {layer.get('class_name')!r}"
            )
    config = record.get("hls_config")
    if not isinstance(config, dict):
        raise where.error("hls_config", "missing (expected hls4ml's HLSConfig object)")
    model = config.get("Model")
    if not isinstance(model, dict):
        raise where.error("hls_config.Model", "missing (expected Precision, ReuseFactor, Strategy)")
    default = _model_precision(model.get("Precision"), where)
    model_reuse = _positive_int(model.get("ReuseFactor"), where, "hls_config.Model.ReuseFactor")
    model_strategy = _strategy(model.get("Strategy"), where, "hls_config.Model.Strategy")
    layer_names = config.get("LayerName", {})
    if not isinstance(layer_names, dict):
        raise where.error("hls_config.LayerName", f"expected an object, got {type(layer_names).__name__}")
    io_type = _io_type(record, layers, where)

    nodes: list[Node] = []
    previous_out = None
    for i, (layer, (name, entry)) in enumerate(zip(layers, _match_entries(layers, layer_names), strict=True)):
        field = f"model_config[{i}]"
        if entry is not None and not isinstance(entry, dict):
            raise where.error(f"hls_config.LayerName.{name}", f"expected an object, got {type(entry).__name__}")
        entry = entry or {}
        efield = f"hls_config.LayerName.{name}"
        op = LAYER_OPS.get(layer["class_name"], layer["class_name"].lower())
        features = _layer_features(layer, op, where, field)
        features["hls_config_entry"] = 1.0 if name is not None else 0.0
        features["quantized"] = 1.0 if layer["class_name"] in QUANTIZED_CLASSES else 0.0

        precision = entry.get("Precision")
        if precision is not None and not isinstance(precision, (str, dict)):
            raise where.error(f"{efield}.Precision", f"expected a type string or an object, got {precision!r}")
        out = _variable_precision(precision, ("result",), default, where, f"{efield}.Precision")
        _put_precision(features, "out", out)
        incoming = previous_out if previous_out is not None else out
        _put_precision(features, "in", (incoming[0], incoming[1], False))
        previous_out = out
        if features.get("weight_count", 0.0) > 0 or op == "batchnorm":
            _put_precision(
                features, "w", _variable_precision(precision, WEIGHT_KEYS, default, where, f"{efield}.Precision")
            )
            _put_precision(
                features, "acc", _variable_precision(precision, ("accum",), default, where, f"{efield}.Precision")
            )

        if "reuse_factor" in layer:
            reuse = _positive_int(layer["reuse_factor"], where, f"{field}.reuse_factor")
        elif "ReuseFactor" in entry:
            reuse = _positive_int(entry["ReuseFactor"], where, f"{efield}.ReuseFactor")
        else:
            reuse = model_reuse
        features["reuse_factor"] = float(reuse)
        if "Strategy" in entry:
            strategy = _strategy(entry["Strategy"], where, f"{efield}.Strategy")
        else:
            strategy = model_strategy
        _one_hot(features, "strategy", strategy, STRATEGIES)
        _one_hot(features, "io_type", io_type, IO_TYPES)
        weights = features.get("weight_count", 0.0)
        if weights > 0:
            lanes = math.ceil(weights / reuse)
            features["lanes"] = float(lanes)
            features["multiplier_bits"] = float(lanes * features["in_width"] * features["w_width"])
            features["weight_bits"] = weights * features["w_width"]
        nodes.append(Node(name or f"layer{i}_{layer['class_name']}", op, features))

    exact = _exact(record.get("latency_report"), where)
    meta = record.get("meta_data") if isinstance(record.get("meta_data"), dict) else {}
    name = meta.get("model_name") or meta.get("uuid") or "wa-hls4ml"
    return DesignGraph("hls4ml", str(name), nodes, [(i, i + 1) for i in range(len(nodes) - 1)], exact), io_type


# ---------------------------------------------------------------------------------------------------------------
# Layers


def _layer_features(layer: dict, op: str, where: _Where, field: str) -> dict[str, float]:
    """Sizes and dimensions of one model_config entry; the weighted layers also get weight_count and
    multiplies (per sample)."""
    in_shapes = _shapes(layer.get("input_shape"), where, f"{field}.input_shape")
    out_shapes = _shapes(layer.get("output_shape"), where, f"{field}.output_shape")
    out_dims = out_shapes[0]
    in_dims = in_shapes[0]
    f = {"in_size": float(sum(math.prod(d) for d in in_shapes)), "out_size": float(math.prod(out_dims))}
    if "parameters" in layer:
        f["parameters"] = _count(layer["parameters"], where, f"{field}.parameters")
    if "use_bias" in layer:
        if not isinstance(layer["use_bias"], bool):
            raise where.error(f"{field}.use_bias", f"expected true or false, got {layer['use_bias']!r}")
        f["use_bias"] = float(layer["use_bias"])
    if op == "dense":
        if not in_dims or not out_dims:
            raise where.error(f"{field}.input_shape", "a dense layer needs a feature dimension")
        units = out_dims[-1]
        if "neurons" in layer and _positive_int(layer["neurons"], where, f"{field}.neurons") != units:
            raise where.error(f"{field}.neurons", f"{layer['neurons']} disagrees with output_shape {out_dims}")
        f.update(
            units=units,
            in_features=in_dims[-1],
            weight_count=in_dims[-1] * units,
            multiplies=math.prod(in_dims) * units,
        )
    elif op in ("conv1d", "conv2d"):
        rank = 1 if op == "conv1d" else 2
        if len(in_dims) != rank + 1 or len(out_dims) != rank + 1:
            raise where.error(
                f"{field}.output_shape",
                f"{op} needs {rank} spatial dimensions and channels, got input {in_dims}, output {out_dims}",
            )
        filters = out_dims[-1]
        for key in ("filters", "n_filter"):
            if key in layer and _positive_int(layer[key], where, f"{field}.{key}") != filters:
                raise where.error(f"{field}.{key}", f"{layer[key]} disagrees with output_shape {out_dims}")
        channels = in_dims[-1]
        kernel = _dims(layer.get("kernel_size"), rank, where, f"{field}.kernel_size")
        strides = _dims(layer.get("strides", [1] * rank), rank, where, f"{field}.strides")
        names = ("width",) if rank == 1 else ("height", "width")
        for axis, k, s in zip(names, kernel, strides, strict=True):
            f[f"kernel_{axis}"] = float(k)
            f[f"stride_{axis}"] = float(s)
        positions = math.prod(out_dims[:-1])
        weight_count = math.prod(kernel) * channels * filters
        f.update(
            filters=filters,
            in_channels=channels,
            kernel_size=math.prod(kernel),
            out_positions=positions,
            weight_count=weight_count,
            multiplies=positions * weight_count,
        )
        padding = layer.get("padding", "valid")
        if not isinstance(padding, str):
            raise where.error(f"{field}.padding", f"expected 'valid' or 'same', got {padding!r}")
        _one_hot(f, "padding", padding.lower(), ("valid", "same"))
    elif op == "activation":
        activation = CLASS_ACTIVATIONS.get(layer["class_name"]) or layer.get("activation")
        if isinstance(activation, dict):  # a serialized Keras/QKeras object
            activation = activation.get("class_name")
        if not isinstance(activation, str) or not activation:
            raise where.error(f"{field}.activation", f"expected the activation function, got {activation!r}")
        f[f"activation={_activation_name(activation)}"] = 1.0
    elif op == "pooling":
        kind = "max" if "Max" in layer["class_name"] else "average"
        f[f"pool={kind}"] = 1.0
        f["global"] = float(layer["class_name"].startswith("Global"))
        f["channels"] = float(out_dims[-1]) if out_dims else 1.0
        f["reduction"] = f["in_size"] / f["out_size"]
        if "pool_size" in layer:
            pool = layer["pool_size"]
            rank = len(pool) if isinstance(pool, list) and pool else 1
            f["pool_size"] = math.prod(_dims(pool, rank, where, f"{field}.pool_size"))
    elif op in ("batchnorm", "input"):
        f["channels"] = float(out_dims[-1]) if out_dims else 1.0
    return {key: float(value) for key, value in f.items()}


def _activation_name(activation: str) -> str:
    """'relu' stays; a QKeras quantizer such as 'quantized_relu(8,0)' becomes 'quantized_relu'."""
    return activation.split("(", 1)[0].strip().lower()


def _shapes(value, where: _Where, field: str) -> list[list[int]]:
    """A Keras shape (batch first, null for the batch) or a list of them (Keras 2 input layers, merges), as the
    per-sample dimensions of each."""
    if not isinstance(value, list) or not value:
        raise where.error(field, f"expected a shape such as [null, 16], got {value!r}")
    shapes = value if all(isinstance(v, list) for v in value) else [value]
    out = []
    for shape in shapes:
        dims = shape[1:]
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise where.error(field, f"expected positive sizes after the batch dimension, got {shape!r}")
        out.append(dims)
    return out


def _dims(value, rank: int, where: _Where, field: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * rank
    if (
        not isinstance(value, list)
        or len(value) != rank
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise where.error(field, f"expected {rank} positive integer(s), got {value!r}")
    return value


def _keras_stem(class_name: str) -> str:
    """The name Keras gives a layer of this class by default, without its _N suffix (QConv2D -> q_conv2d)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _match_entries(layers: list[dict], layer_names: dict) -> list[tuple[str | None, object]]:
    """(LayerName key, entry) per layer: by position when there is one entry per layer, else by Keras' default
    names in order; (None, None) for a layer that has no entry."""
    names = list(layer_names)
    if len(names) == len(layers):
        return [(name, layer_names[name]) for name in names]
    matched: list[tuple[str | None, object]] = []
    start = 0
    previous: str | None = None
    for layer in layers:
        class_name = layer["class_name"]
        if isinstance(layer.get("name"), str) and layer["name"] in layer_names:
            patterns = [re.escape(layer["name"])]
        elif class_name == "InputLayer":
            patterns = [r"input(_layer)?(_\d+)?"]
        else:
            patterns = [re.escape(_keras_stem(class_name)) + r"(_\d+)?"]
        if class_name == "Activation" and previous is not None and isinstance(layer.get("activation"), str):
            patterns.insert(0, re.escape(f"{previous}_{_activation_name(layer['activation'])}"))
        found = next((k for k in range(start, len(names)) for p in patterns if re.fullmatch(p, names[k])), None)
        if found is None:
            matched.append((None, None))
            previous = None
        else:
            matched.append((names[found], layer_names[names[found]]))
            previous = names[found]
            start = found + 1
    return matched


# ---------------------------------------------------------------------------------------------------------------
# hls4ml configuration


def parse_precision(text: str) -> tuple[int, int, bool] | None:
    """(total bits, integer bits, signed) of an hls4ml type string: ap_fixed<16,6>, fixed<8,1,RND,SAT>,
    ufixed<8,0>, ap_int<8>, uint<4>; None for 'auto' and for anything else."""
    if not isinstance(text, str):
        return None
    match = _FIXED.match(text)
    if match:
        return int(match.group(2)), int(match.group(3)), match.group(1) != "u"
    match = _INTEGER.match(text)
    if match:
        return int(match.group(2)), int(match.group(2)), match.group(1) != "u"
    return None


def _model_precision(value, where: _Where) -> tuple[int, int, bool]:
    field = "hls_config.Model.Precision"
    if isinstance(value, dict):
        field += ".default"
        value = value.get("default")
    parsed = parse_precision(value)
    if parsed is None or parsed[0] < 1:
        raise where.error(field, f"expected an hls4ml type such as ap_fixed<16,6>, got {value!r}")
    return parsed


def _variable_precision(precision, keys: tuple[str, ...], default, where: _Where, field: str):
    """(width, integer bits, from_auto) of the first of `keys` the layer's Precision names; a Precision string
    applies to every variable; missing -> the model default."""
    if isinstance(precision, str):
        text = precision
    elif isinstance(precision, dict):
        key = next((k for k in keys if k in precision), None)
        if key is None:
            return default[0], default[1], False
        text, field = precision[key], f"{field}.{key}"
    else:
        return default[0], default[1], False
    if isinstance(text, str) and text.strip().lower() == "auto":
        return default[0], default[1], True
    parsed = parse_precision(text)
    if parsed is None or parsed[0] < 1:
        raise where.error(field, f"expected an hls4ml type such as ap_fixed<16,6> or 'auto', got {text!r}")
    return parsed[0], parsed[1], False


def _put_precision(features: dict, prefix: str, precision) -> None:
    width, integer, auto = precision
    features[f"{prefix}_width"] = float(width)
    features[f"{prefix}_int_bits"] = float(integer)
    if auto:
        features[f"{prefix}_auto"] = 1.0


def _strategy(value, where: _Where, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(field, f"expected an hls4ml strategy such as Latency or Resource, got {value!r}")
    return value.strip().lower()


def _io_type(record: dict, layers: list[dict], where: _Where) -> str:
    config = record["hls_config"]
    for field, value in (
        ("hls_config.IOType", config.get("IOType")),
        ("hls_config.Model.IOType", config["Model"].get("IOType")),
        ("io_type", record.get("io_type")),
    ):
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise where.error(field, f"expected io_parallel or io_stream, got {value!r}")
            return value.strip().lower()
    convolutional = any(LAYER_OPS.get(layer["class_name"]) in ("conv1d", "conv2d") for layer in layers)
    return "io_stream" if convolutional else "io_parallel"


def _one_hot(features: dict, name: str, value: str, known: tuple[str, ...]) -> None:
    for option in known:
        features[f"{name}={option}"] = 0.0
    features[f"{name}={value}"] = 1.0


# ---------------------------------------------------------------------------------------------------------------
# Reports


def _count(value, where: _Where, field: str) -> float:
    """A non-negative number, as a JSON number or the numeric string hls4ml's report parser leaves."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise where.error(field, f"expected a non-negative number, got {value!r}")
    return number


def _positive_int(value, where: _Where, field: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise where.error(field, f"expected a positive integer, got {value!r}")
    return value


def _latency(report, where: _Where) -> dict:
    if report is None:
        return {}
    if not isinstance(report, dict):
        raise where.error("latency_report", f"expected an object, got {type(report).__name__}")
    return report


def _exact(report, where: _Where) -> dict[str, float]:
    """Worst-case latency and initiation interval (cycles_max, interval_max; the *_min value where only it is
    given)."""
    report = _latency(report, where)
    exact = {}
    for ours, keys in (
        ("latency_cycles", ("cycles_max", "cycles_min")),
        ("initiation_interval", ("interval_max", "interval_min")),
    ):
        key = next((k for k in keys if report.get(k) is not None), None)
        if key is not None:
            exact[ours] = _count(report[key], where, f"latency_report.{key}")
    return exact


def _clock(report, where: _Where) -> dict[str, float]:
    report = _latency(report, where)
    return {
        ours: _count(report[key], where, f"latency_report.{key}")
        for ours, key in (("target", "target_clock"), ("estimated", "estimated_clock"))
        if report.get(key) is not None
    }
