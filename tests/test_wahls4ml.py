"""wa-hls4ml records -> our dataset rows: checked against hand-computed node features and labels of a small file
written in their schema (tests/data/wahls4ml_sample.json), plus malformed records and file variants."""

import copy
import gzip
import json
import math
import random
from pathlib import Path

import pytest

from hardwire.errors import ModelError
from hardwire.estimate.features import DesignGraph, flat_features
from hardwire.estimate.wahls4ml import parse_precision, read_records, read_rows, record_to_graph, record_to_row

SAMPLE = Path(__file__).parent / "data" / "wahls4ml_sample.json"
PART = "hls4ml:xcu250-figd2104-2L-e"


@pytest.fixture(scope="module")
def records():
    return read_records(SAMPLE)


def nodes(row):
    return row["design"]["nodes"]


def features(row, index):
    return nodes(row)[index]["features"]


def assert_subset(actual: dict, expected: dict):
    for key, value in expected.items():
        assert key in actual, key
        assert actual[key] == pytest.approx(value), key


def test_sample_file_reads_five_records_and_skips_the_failed_run():
    assert len(read_records(SAMPLE)) == 5
    rows, failed = read_rows(SAMPLE)
    assert (len(rows), failed) == (4, 1)
    assert [r["id"] for r in rows] == [
        "3f2b1c1e-5a1d-4f0e-9a57-0d6c2a1b7e01",
        "a0c91f52-77b3-4c4e-8d0f-1e2b3c4d5e6f",
        "5d7e8f90-1a2b-4c3d-9e4f-5a6b7c8d9e0f",
        "c4d5e6f7-0818-4a29-b3c4-d5e6f7081920",
    ]


def test_failed_run_is_an_error_when_not_skipped():
    with pytest.raises(ModelError, match=r"record 4 id e1f20314.*resource_report: missing or empty"):
        read_rows(SAMPLE, skip_failed=False)


def test_dense_mlp_resource_strategy(records):
    row = record_to_row(records[0], index=0)
    assert [n["op"] for n in nodes(row)] == ["input", "dense", "activation", "dense", "activation"]
    assert [n["name"] for n in nodes(row)] == ["input_1", "q_dense", "q_dense_relu", "q_dense_1", "q_dense_1_softmax"]
    assert row["design"]["kind"] == "hls4ml" and row["design"]["edges"] == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert row["target"] == PART and row["source"] == "wa-hls4ml" and row["report"] == "resource_report"
    assert row["labels"] == {"lut": 4120, "ff": 3876, "dsp": 168, "bram": 2}  # numeric strings in the record
    assert row["exact"] == {"latency_cycles": 19, "initiation_interval": 4} == row["design"]["exact"]
    assert row["clock_ns"] == {"target": 5.0, "estimated": 4.275}
    assert row["tool_versions"] == {"vivado": "2023.2", "hls4ml": "0.8.1"}
    assert row["io_type"] == "io_parallel"  # no IOType: dense -> io_parallel
    assert_subset(features(row, 0), {"in_size": 16, "out_size": 16, "out_width": 16, "out_int_bits": 6})
    # 16 -> 32, 8-bit weights (fixed<8,1>), result/accum 'auto' -> the model default fixed<16,6>, flagged
    assert_subset(
        features(row, 1),
        {
            "units": 32,
            "in_features": 16,
            "weight_count": 512,
            "parameters": 544,
            "use_bias": 1,
            "quantized": 1,
            "reuse_factor": 4,
            "lanes": 128,
            "w_width": 8,
            "w_int_bits": 1,
            "in_width": 16,
            "in_int_bits": 6,
            "out_width": 16,
            "out_auto": 1,
            "acc_width": 16,
            "acc_int_bits": 6,
            "acc_auto": 1,
            "multiplier_bits": 128 * 16 * 8,
            "weight_bits": 512 * 8,
            "strategy=resource": 1,
            "strategy=latency": 0,
            "io_type=io_parallel": 1,
            "io_type=io_stream": 0,
            "hls_config_entry": 1,
        },
    )
    assert_subset(features(row, 2), {"activation=relu": 1, "in_size": 32, "out_size": 32})
    assert "out_auto" not in features(row, 2) and "w_width" not in features(row, 2)
    assert_subset(features(row, 3), {"units": 5, "weight_count": 160, "lanes": 40, "weight_bits": 1280})
    assert_subset(features(row, 4), {"activation=softmax": 1, "out_auto": 1})


def test_hls_report_labels(records):
    row = record_to_row(records[0], report="hls")
    assert row["labels"] == {"lut": 7893, "ff": 4511, "dsp": 168, "bram": 2}
    assert row["report"] == "hls_resource_report"
    with pytest.raises(ModelError, match="report='cosim'"):
        record_to_row(records[0], report="cosim")


def test_dense_latency_strategy_with_string_precisions_and_a_layer_without_config(records):
    row = record_to_row(records[1], index=1)
    # five layers, four LayerName entries: matched by Keras' default names; the linear activation has none
    assert [n["name"] for n in nodes(row)] == ["input_layer", "dense", "layer2_Activation", "dense_1", "dense_1_relu"]
    assert [features(row, i)["hls_config_entry"] for i in range(5)] == [1, 1, 0, 1, 1]
    assert [features(row, i)["quantized"] for i in range(5)] == [0] * 5
    assert_subset(
        features(row, 1),
        {
            "in_width": 12,
            "in_int_bits": 3,
            "w_width": 10,
            "w_int_bits": 2,
            "out_width": 18,
            "out_int_bits": 8,
            "acc_width": 24,
            "acc_int_bits": 10,
            "lanes": 128,
            "multiplier_bits": 128 * 12 * 10,
            "strategy=latency": 1,
        },
    )
    assert_subset(features(row, 2), {"activation=linear": 1, "in_width": 18, "out_width": 16, "out_int_bits": 6})
    # "Precision": "ap_fixed<12,4>" covers every variable of dense_1
    assert_subset(
        features(row, 3),
        {
            "in_width": 16,
            "w_width": 12,
            "w_int_bits": 4,
            "out_width": 12,
            "acc_width": 12,
            "lanes": 64,
            "multiplier_bits": 64 * 16 * 12,
        },
    )
    assert_subset(features(row, 4), {"activation=relu": 1, "out_width": 12, "out_int_bits": 4, "in_width": 12})
    assert row["labels"] == {"lut": 2210, "ff": 612, "dsp": 64, "bram": 0}
    assert row["exact"] == {"latency_cycles": 7, "initiation_interval": 1}  # the worst case, cycles_max
    assert row["io_type"] == "io_parallel" and "tool_versions" in row


def test_small_conv2d(records):
    row = record_to_row(records[2])
    assert [n["op"] for n in nodes(row)] == [
        "input",
        "conv2d",
        "activation",
        "pooling",
        "flatten",
        "dense",
        "activation",
    ]
    assert row["io_type"] == "io_stream"  # no IOType: convolutional -> io_stream
    assert_subset(features(row, 0), {"in_size": 64, "channels": 1})
    # 3x3 kernel, 1 -> 4 channels on 8x8 (valid): 6x6 outputs; reuse factor 36 is the layer's, not 8192
    assert_subset(
        features(row, 1),
        {
            "filters": 4,
            "in_channels": 1,
            "kernel_height": 3,
            "kernel_width": 3,
            "kernel_size": 9,
            "stride_height": 1,
            "stride_width": 1,
            "out_positions": 36,
            "weight_count": 36,
            "multiplies": 36 * 36,
            "in_size": 64,
            "out_size": 144,
            "reuse_factor": 36,
            "lanes": 1,
            "w_width": 8,
            "multiplier_bits": 16 * 8,
            "weight_bits": 36 * 8,
            "padding=valid": 1,
            "padding=same": 0,
            "io_type=io_stream": 1,
            "parameters": 40,
        },
    )
    assert_subset(features(row, 3), {"pool=max": 1, "global": 0, "reduction": 4, "channels": 4, "out_size": 36})
    assert_subset(
        features(row, 5), {"units": 10, "in_features": 36, "reuse_factor": 360, "lanes": 1, "weight_bits": 2880}
    )
    assert row["labels"] == {"lut": 5931, "ff": 6874, "dsp": 2, "bram": 3}
    assert row["exact"] == {"latency_cycles": 1490, "initiation_interval": 1297}


def test_conv1d_with_an_unknown_layer_class_and_a_quantized_activation(records):
    row = record_to_row(records[3])
    # ZeroPadding1D is not in our op list: kept as a node, op = its class name in lower case
    assert [n["op"] for n in nodes(row)] == [
        "input",
        "zeropadding1d",
        "conv1d",
        "activation",
        "pooling",
        "dense",
        "activation",
    ]
    assert_subset(features(row, 1), {"in_size": 64, "out_size": 68})
    assert_subset(
        features(row, 2),
        {
            "kernel_width": 3,
            "kernel_size": 3,
            "filters": 8,
            "in_channels": 2,
            "out_positions": 32,
            "weight_count": 48,
            "multiplies": 32 * 48,
            "reuse_factor": 48,
            "lanes": 1,
            "w_width": 4,
            "w_int_bits": 1,
        },
    )
    assert "kernel_height" not in features(row, 2)
    assert_subset(features(row, 3), {"activation=quantized_relu": 1, "quantized": 1, "out_width": 8, "out_int_bits": 0})
    assert_subset(features(row, 4), {"pool=average": 1, "global": 1, "reduction": 32, "in_width": 8})
    assert_subset(features(row, 5), {"reuse_factor": 32, "lanes": 1, "weight_bits": 32 * 4})
    assert row["io_type"] == "io_stream"  # from hls_config.IOType
    assert row["labels"] == {"lut": 3870, "ff": 4122, "dsp": 0, "bram": 1}


def test_custom_layer_names_pair_by_position_when_there_is_one_entry_per_layer(records):
    record = copy.deepcopy(records[0])
    entries = list(record["hls_config"]["LayerName"].values())
    entries[1] = {"Precision": {"weight": "fixed<6,2>", "result": "fixed<10,3>", "accum": "fixed<20,8>"}}
    record["hls_config"]["LayerName"] = dict(zip(["inputs", "fc1", "relu1", "fc2", "out"], entries, strict=True))
    row = record_to_row(record)
    assert [n["name"] for n in nodes(row)] == ["inputs", "fc1", "relu1", "fc2", "out"]
    assert_subset(
        features(row, 1),
        {"w_width": 6, "w_int_bits": 2, "out_width": 10, "acc_width": 20, "multiplier_bits": 128 * 16 * 6},
    )
    assert_subset(features(row, 2), {"in_width": 10, "in_int_bits": 3})
    # one entry fewer and no Keras default names: nothing can be matched, every layer takes the model defaults
    del record["hls_config"]["LayerName"]["out"]
    row = record_to_row(record)
    assert [features(row, i)["hls_config_entry"] for i in range(5)] == [0] * 5
    assert_subset(features(row, 1), {"w_width": 16, "w_int_bits": 6, "out_width": 16, "acc_width": 16})
    assert "out_auto" not in features(row, 1)


def test_batchnorm_pooling_window_and_dropout():
    shape = [None, 8, 8, 3]
    layers = [
        {"class_name": "InputLayer", "input_shape": shape, "output_shape": shape},
        {"class_name": "BatchNormalization", "input_shape": shape, "output_shape": shape, "parameters": 12},
        {"class_name": "MaxPooling2D", "input_shape": shape, "output_shape": [None, 4, 4, 3], "pool_size": [2, 2]},
        {"class_name": "Dropout", "input_shape": [None, 4, 4, 3], "output_shape": [None, 4, 4, 3], "dropout_rate": 0.2},
        {"class_name": "Flatten", "input_shape": [None, 4, 4, 3], "output_shape": [None, 48]},
        {"class_name": "Dense", "input_shape": [None, 48], "output_shape": [None, 2], "neurons": 2},
    ]
    names = ["input_1", "batch_normalization", "max_pooling2d", "dropout", "flatten", "dense"]
    record = {
        "model_config": layers,
        "target_part": "xcvu9p-flga2104-2L-e",
        "hls_config": {
            "Model": {"Precision": "ap_fixed<16,6>", "ReuseFactor": 16, "Strategy": "Resource"},
            "LayerName": {name: {} for name in names},
        },
        "resource_report": {"lut": 900, "ff": 1000, "dsp": 1, "bram": 0},
    }
    record["hls_config"]["LayerName"]["batch_normalization"] = {
        "Precision": {"scale": "fixed<12,4>", "bias": "fixed<12,4>", "result": "fixed<16,6>"}
    }
    row = record_to_row(record)
    assert [n["op"] for n in nodes(row)] == ["input", "batchnorm", "pooling", "dropout", "flatten", "dense"]
    assert_subset(
        features(row, 1),
        {"channels": 3, "parameters": 12, "w_width": 12, "w_int_bits": 4, "in_size": 192, "out_size": 192},
    )
    assert_subset(features(row, 2), {"pool_size": 4, "reduction": 4, "pool=max": 1, "global": 0})
    assert_subset(features(row, 5), {"weight_count": 96, "reuse_factor": 16, "lanes": 6, "w_width": 16})
    assert row["exact"] == {} and "clock_ns" not in row and row["id"] == "wa-hls4ml"
    assert row["target"] == "hls4ml:xcvu9p-flga2104-2L-e" and row["io_type"] == "io_parallel"


def test_rows_are_dataset_rows(records):
    for index, record in enumerate(records[:4]):
        row = record_to_row(record, index=index)
        again = json.loads(json.dumps(row))
        graph = DesignGraph.from_dict(again["design"])
        assert graph == record_to_graph(record)
        assert all(isinstance(v, float) for n in graph.nodes for v in n.features.values())
        assert flat_features(graph)["nodes"] == len(record["model_config"])


@pytest.mark.parametrize("name", ["records.jsonl", "records.jsonl.gz", "records.json.gz", "records.JSON"])
def test_file_variants_read_the_same_records(tmp_path, records, name):
    path = tmp_path / name
    if ".jsonl" in name:
        text = "".join(json.dumps(r) + "\n\n" for r in records)  # blank lines are skipped
    else:
        text = json.dumps(records)
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as stream:
            stream.write(text)
    else:
        path.write_text(text)
    assert read_records(path) == records
    assert len(read_rows(path)[0]) == 4


def test_single_record_file_and_wrapped_jsonl_line(tmp_path, records):
    single = tmp_path / "one.json"
    single.write_text(json.dumps(records[2]))
    assert read_records(single) == [records[2]]
    wrapped = tmp_path / "wrapped.jsonl"
    wrapped.write_text(json.dumps([records[0]]) + "\n" + json.dumps(records[1]) + "\n")
    assert read_records(wrapped) == records[:2]


def test_file_errors_name_the_file_and_line(tmp_path, records):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(records[0]) + "\n{not json\n")
    with pytest.raises(ModelError, match=r"bad\.jsonl:2: not valid JSON"):
        read_records(bad)
    with pytest.raises(ModelError, match=r"no such file"):
        read_records(tmp_path / "missing.json")
    with pytest.raises(ModelError, match=r"expected \.json, \.jsonl"):
        read_records(SAMPLE.with_suffix(".csv"))
    numbers = tmp_path / "numbers.json"
    numbers.write_text("[1, 2]")
    with pytest.raises(ModelError, match=r"record 0 is a JSON int"):
        read_records(numbers)
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(ModelError, match=r"unreadable"):
        read_records(broken)


def _set(path: str, value):
    def mutate(record):
        *parents, last = path.split("/")
        node = record
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return mutate


_DELETE = object()
MALFORMED = [
    ("model_config", _DELETE, "model_config"),
    ("model_config/1/class_name", _DELETE, r"model_config\[1\]\.class_name"),
    ("model_config/1/output_shape", [None, "32"], r"model_config\[1\]\.output_shape"),
    ("model_config/1/input_shape", 16, r"model_config\[1\]\.input_shape"),
    ("model_config/1/neurons", 33, r"model_config\[1\]\.neurons"),
    ("model_config/1/reuse_factor", 0, r"model_config\[1\]\.reuse_factor"),
    ("model_config/2/activation", _DELETE, r"model_config\[2\]\.activation"),
    ("hls_config/Model/ReuseFactor", 0, r"hls_config\.Model\.ReuseFactor"),
    ("hls_config/Model/Strategy", _DELETE, r"hls_config\.Model\.Strategy"),
    ("hls_config/Model/Precision", {"default": "float"}, r"hls_config\.Model\.Precision\.default"),
    ("hls_config/LayerName/q_dense/Precision/weight", "float32", r"hls_config\.LayerName\.q_dense\.Precision\.weight"),
    ("hls_config/Model", _DELETE, r"hls_config\.Model"),
    ("resource_report/lut", "n/a", r"resource_report\.lut"),
    ("resource_report/dsp", -1, r"resource_report\.dsp"),
    ("resource_report/ff", _DELETE, r"resource_report\.ff"),
    ("resource_report/bram", True, r"resource_report\.bram"),
    ("target_part", _DELETE, r"target_part"),
    ("latency_report/cycles_max", "?", r"latency_report\.cycles_max"),
]


@pytest.mark.parametrize(
    "path,value,field", MALFORMED, ids=[m[0] + ("-del" if m[1] is _DELETE else "") for m in MALFORMED]
)
def test_malformed_record_names_the_record_and_the_field(records, path, value, field):
    record = copy.deepcopy(records[0])
    _set(path, value)(record)
    with pytest.raises(ModelError) as caught:
        record_to_row(record, index=7)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("wa-hls4ml record 7 id 3f2b1c1e-5a1d-4f0e-9a57-0d6c2a1b7e01: ")
    assert caught.match(field)


def test_malformed_conv_names_its_kernel(records):
    record = copy.deepcopy(records[2])
    del record["model_config"][1]["kernel_size"]
    with pytest.raises(ModelError, match=r"record 2 id 5d7e8f90.*model_config\[1\]\.kernel_size"):
        record_to_row(record, index=2)
    record = copy.deepcopy(records[2])
    record["model_config"][1]["output_shape"] = [None, 36, 4]
    with pytest.raises(ModelError, match=r"model_config\[1\]\.output_shape: conv2d needs 2 spatial"):
        record_to_row(record)


def test_record_without_id_or_index_is_still_named(records):
    record = copy.deepcopy(records[0])
    del record["meta_data"]
    del record["target_part"]
    with pytest.raises(ModelError, match=r"^wa-hls4ml record: target_part"):
        record_to_row(record)
    with pytest.raises(ModelError, match=r"^wa-hls4ml record 3: record: expected a JSON object"):
        record_to_row([1, 2], index=3)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("ap_fixed<16,6>", (16, 6, True)),
        ("fixed<8,1,RND,SAT>", (8, 1, True)),
        ("ufixed<8,0,RND_CONV,SAT>", (8, 0, False)),
        ("ap_ufixed<12, 4>", (12, 4, False)),
        ("ap_int<8>", (8, 8, True)),
        ("uint<4>", (4, 4, False)),
        ("fixed<6,-2>", (6, -2, True)),
        ("auto", None),
        ("float", None),
        (16, None),
    ],
)
def test_parse_precision(text, expected):
    assert parse_precision(text) == expected


def _random_mlp(rng: random.Random) -> tuple[dict, list[int], int, list[tuple[int, int]]]:
    """A dense MLP record in wa-hls4ml's schema with random widths, reuse factors and precisions."""
    sizes = [rng.choice([4, 8, 12, 16, 32, 64]) for _ in range(rng.randint(2, 5))]
    reuse = rng.choice([1, 2, 4, 8])
    layers = [
        {
            "class_name": "InputLayer",
            "input_shape": [[None, sizes[0]]],
            "output_shape": [[None, sizes[0]]],
            "parameters": 0,
        }
    ]
    names = {"input_1": {"Precision": {"result": "fixed<16,6>"}}}
    precisions = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        w_width, r_width = rng.randint(2, 16), rng.randint(4, 18)
        precisions.append((w_width, r_width))
        layers.append(
            {
                "class_name": "QDense",
                "input_shape": [None, n_in],
                "output_shape": [None, n_out],
                "neurons": n_out,
                "parameters": n_in * n_out + n_out,
                "use_bias": True,
                "reuse_factor": reuse,
            }
        )
        names["q_dense" + (f"_{i}" if i else "")] = {
            "Precision": {"weight": f"fixed<{w_width},1>", "result": f"fixed<{r_width},4>"}
        }
    record = {
        "model_config": layers,
        "target_part": "xc7z020clg400-1",
        "hls_config": {
            "Model": {"Precision": "ap_fixed<16,6>", "ReuseFactor": reuse, "Strategy": "Resource"},
            "LayerName": names,
        },
        "resource_report": {"lut": 1, "ff": 2, "dsp": 3, "bram": 4},
    }
    return record, sizes, reuse, precisions


def test_random_dense_mlps_match_hls4ml_multiplier_arithmetic():
    rng = random.Random(11)
    for _ in range(50):
        record, sizes, reuse, precisions = _random_mlp(rng)
        row = record_to_row(record)
        assert len(nodes(row)) == len(sizes)
        assert row["design"]["edges"] == [[i, i + 1] for i in range(len(sizes) - 1)]
        assert row["target"] == "hls4ml:xc7z020clg400-1"
        in_width = 16
        for layer, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), start=1):
            w_width, r_width = precisions[layer - 1]
            lanes = math.ceil(n_in * n_out / reuse)  # hls4ml's multiplier limit for a dense layer
            assert_subset(
                features(row, layer),
                {
                    "in_features": n_in,
                    "units": n_out,
                    "lanes": lanes,
                    "w_width": w_width,
                    "in_width": in_width,
                    "out_width": r_width,
                    "acc_width": 16,
                    "multiplier_bits": lanes * in_width * w_width,
                    "weight_bits": n_in * n_out * w_width,
                    "reuse_factor": reuse,
                },
            )
            in_width = r_width
