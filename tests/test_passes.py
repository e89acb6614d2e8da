"""The compile path as named passes (hls.passes): each pass alone on small networks, checked on its change log
and on the graph it leaves, against what the one-piece front end (frontend.build_graph) and rtl.plan_dataflow
give; the PassManager's invariant checks; `hardwire compile --explain`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("brevitas.nn", reason="brevitas is a dependency: pip install -e .")
import onnx
from hardwire.hls import frontend, passes, rtl
from hardwire.hls.graph import MatVecLayer, ResidualLayer, flat_layers, run_integer
from onnx import TensorProto, helper
from test_frontend import cnn, grid_inputs, mlp
from test_user_networks import Normalized, Residual, _export

from hardwire.cli import main
from hardwire.errors import InternalError, ModelError, ParameterError

QUANT = "qonnx.custom_op.general"


def _const(name, value):
    return helper.make_tensor(name, TensorProto.FLOAT, np.shape(value), np.asarray(value, np.float32).reshape(-1))


def _quant(name, x, scale, bits, signed, out):
    return helper.make_node(
        "Quant",
        [x, scale, "zero", bits],
        [out],
        domain=QUANT,
        name=name,
        signed=int(signed),
        narrow=0,
        rounding_mode="ROUND",
    )


def hand_built():
    """A QONNX graph written by hand: x -> Quant (INT4, 1/8) -> Identity -> MatMul with weights Quant(A * B) (the
    Mul of two constants is for the clean-up to fold) -> Relu -> Quant (UINT4, 1/4) -> MatMul -> y."""
    from qonnx.core.modelwrapper import ModelWrapper

    rng = np.random.default_rng(0)
    a = rng.integers(-4, 4, size=(8, 6)).astype(np.float32) * 0.25
    nodes = [
        _quant("in_quant", "x", "s_in", "b4", True, "xq"),
        helper.make_node("Identity", ["xq"], ["xi"], name="keep"),
        helper.make_node("Mul", ["a", "two"], ["w0"], name="constant_mul"),
        _quant("w0_quant", "w0", "s_w", "b4", True, "w0q"),
        helper.make_node("MatMul", ["xi", "w0q"], ["acc0"], name="fc0"),
        helper.make_node("Relu", ["acc0"], ["r0"], name="relu0"),
        _quant("act_quant", "r0", "s_act", "b4", False, "h"),
        _quant("w1_quant", "w1", "s_w", "b4", True, "w1q"),
        helper.make_node("MatMul", ["h", "w1q"], ["y"], name="fc1"),
    ]
    inits = [
        _const("a", a),
        _const("two", np.float32(2.0)),
        _const("w1", rng.integers(-8, 8, (6, 3)) * 0.25),
        _const("s_in", np.float32(0.125)),
        _const("s_w", np.float32(0.25)),
        _const("s_act", np.float32(0.25)),
        _const("zero", np.float32(0.0)),
        _const("b4", np.float32(4.0)),
    ]
    graph = helper.make_graph(
        nodes,
        "hand_built",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QUANT, 1)])
    return ModelWrapper(model)


def _run(model, *steps, **state):
    manager = passes.PassManager()
    result = manager.run(passes.CompileState(model, "t", **state), steps)
    return result, manager.log[-1].changes if manager.log else []


def _changes(changes, kind):
    return [c for c in changes if c.kind == kind]


def _front_end(model):
    """The state after every front-end pass on `model` as read (not cleaned up)."""
    state, manager = passes.run_front_end(model, "t")
    return state, {record.name: record.changes for record in manager.log}


# ---------------------------------------------------------------------------------------------------------------
# Each pass on its own


def test_cleanup_folds_a_constant_subgraph_and_names_every_node():
    state, changes = _run(hand_built(), passes.Cleanup())
    ops = [node.op_type for node in state.model.graph.node]
    assert "Mul" not in ops and ops.count("Quant") == 4 and "Identity" in ops
    removed = _changes(changes, "removed")
    assert [c.node for c in removed] == ["constant_mul (Mul)"] and "constant" in removed[0].reason
    renamed = {c.node: c.reason for c in _changes(changes, "renamed")}
    assert renamed["MatMul_0 (MatMul)"] == "was 'fc0' (qonnx' unique node names)"
    assert len(renamed) == len(ops) and not _changes(changes, "added")


@pytest.mark.parametrize("which", ["hand_built", "mlp", "cnn", "normalized", "residual"])
def test_the_stepwise_cleanup_is_qonnx_cleanup_byte_for_byte(tmp_path, which):
    from qonnx.util.cleanup import cleanup_model

    def raw():
        if which == "hand_built":
            return hand_built()
        if which in ("normalized", "residual"):
            module, shape = (
                (Normalized(True), (1, 1, 8, 8)) if which == "normalized" else (Residual(True), (1, 4, 6, 6))
            )
            path = tmp_path / f"{which}.onnx"
            if not path.exists():
                torch.manual_seed(1)
                _export(module, shape, tmp_path, which)
            return frontend.load_model(path, clean=False)
        module, shape = (mlp(), (1, 64)) if which == "mlp" else (cnn(), (1, 1, 8, 8))
        return frontend.load_model(module, torch.rand(*shape), clean=False)

    ours, _ = passes.stepwise_cleanup(raw())
    theirs = cleanup_model(raw(), extract_conv_bias=True)
    assert ours.model.SerializeToString() == theirs.model.SerializeToString()


def test_cleanup_splits_a_conv_bias_off_into_an_add():
    raw = frontend.load_model(cnn(), torch.rand(1, 1, 8, 8), clean=False)
    state, changes = _run(raw, passes.Cleanup())
    added = _changes(changes, "added")
    assert len(added) == 1 and added[0].node.endswith("(Add)") and "bias" in added[0].reason
    assert sum(node.op_type == "Add" for node in state.model.graph.node) == 1


def test_absorb_preprocessing_moves_the_affine_steps_to_the_host_and_makes_the_input_layer(tmp_path):
    raw = frontend.load_model(_export(Normalized(per_pixel=True), (1, 1, 8, 8), tmp_path, "norm"), clean=False)
    clean, _ = _run(raw, passes.Cleanup())
    state, changes = _run(clean.model, passes.AbsorbPreprocessing())
    moved = _changes(changes, "moved")
    reference = frontend.build_graph(clean.model, "t")
    assert [c.node for c in moved] == reference.prefix.node_names
    ops = {c.node.split(" (")[1].rstrip(")"): c.reason for c in moved}
    assert {"Sub", "Div", "Mul", "Add"} <= set(ops) and "constant affine" in ops["Mul"]
    assert "layout op" in ops["Flatten" if "Flatten" in ops else "Reshape"]
    assert all("not folded into the hardware" in c.reason for c in moved)
    [layer] = _changes(changes, "rewritten")
    assert layer.node == f"{reference.input.name} (Quant)" and "INT4 codes" in layer.reason
    assert state.graph.layers == [] and state.graph.input == reference.input
    assert state.input_quant.name == reference.input.name


@pytest.mark.parametrize("build, shape", [(mlp, (1, 64)), (cnn, (1, 1, 8, 8))])
def test_streamline_gives_the_thresholds_the_front_end_gave(build, shape):
    raw = frontend.load_model(build(), torch.rand(*shape), clean=False)
    state, log = _front_end(raw)
    reference = frontend.build_graph(frontend.load_model(build(), torch.rand(*shape)), "t")
    ours, theirs = flat_layers(state.graph.layers), flat_layers(reference.layers)
    assert [layer.name for layer in ours] == [layer.name for layer in theirs]
    for a, b in zip(ours, theirs):
        if isinstance(a, MatVecLayer):
            assert np.array_equal(a.weights, b.weights) and a.out_type == b.out_type
            assert (a.thresholds is None) == (b.thresholds is None)
            assert a.thresholds is None or np.array_equal(a.thresholds, b.thresholds)
    x = grid_inputs(shape[1:], 32, seed=3)
    assert np.array_equal(
        run_integer(state.graph, frontend.quantize_input(state.graph, x)),
        run_integer(reference, frontend.quantize_input(reference, x)),
    )
    rewritten = {c.node: c.reason for c in _changes(log["streamline"], "rewritten")}
    assert list(rewritten) == [layer.name for layer in ours]
    for layer in ours:
        assert rewritten[layer.name].startswith(" + ".join(layer.nodes))
        if isinstance(layer, MatVecLayer) and layer.thresholds is not None:
            assert f"{layer.thresholds.shape[1]} thresholds per channel" in rewritten[layer.name]
    if build is cnn:  # the Flatten before the dense head is free: the weights are permuted instead
        [flatten] = _changes(log["streamline"], "removed")
        assert flatten.node.endswith(("(Flatten)", "(Reshape)")) and "free in hardware" in flatten.reason
        assert [layer.kind for layer in ours] == ["conv", "maxpool", "conv", "dense"]


def test_streamline_on_a_hand_built_graph_drops_the_identity_and_matches_qonnx():
    state, log = _front_end(hand_built())
    [identity] = _changes(log["streamline"], "removed")
    assert identity.node.endswith("(Identity)") and "free in hardware" in identity.reason
    first, last = state.graph.layers
    assert first.thresholds.shape == (6, 15) and last.thresholds is None
    x = np.random.default_rng(1).integers(-8, 8, size=(40, 8)).astype(np.float32) / 8
    out = frontend.model_output(state.graph, run_integer(state.graph, frontend.quantize_input(state.graph, x)))
    assert np.array_equal(out.view(np.uint32), frontend.qonnx_execute(state.model, x).view(np.uint32))


@pytest.mark.parametrize("projection", [False, True])
def test_branches_inserts_a_duplicator_and_an_add_for_a_residual_block(tmp_path, projection):
    torch.manual_seed(1)
    raw = frontend.load_model(_export(Residual(projection), (1, 4, 6, 6), tmp_path, "residual"), clean=False)
    state, log = _front_end(raw)
    block = state.graph.layers[0]
    assert isinstance(block, ResidualLayer)
    [entry] = state.branches
    assert entry["block"] == block.name and entry["branch"] == [layer.name for layer in block.branch]
    assert len(entry["shortcut"]) == int(projection)
    dup, add = log["branches"]
    assert (dup.kind, dup.node) == ("added", f"{block.name}_dup")
    assert ("identity shortcut" in dup.reason) != projection
    assert (add.kind, add.node) == ("rewritten", f"{block.name} (Add)")
    assert f"(a << {block.a_shift}) + (b << {block.b_shift})" in add.reason
    manager = passes.PassManager()
    state = manager.run(state, passes.BACK_END)
    changes = manager.log[-1].changes
    nodes = [c.node for c in changes]
    assert f"{block.name}_dup (duplicator)" in nodes and f"{block.name}_add (add)" in nodes
    depths = state.plan.stages[0].params.fifo_depths()
    add_unit = next(c for c in changes if c.node == f"{block.name}_add (add)")
    assert f"add inputs {depths['add_a']} (branch) and {depths['add_b']} (shortcut)" in add_unit.reason


def test_branches_changes_nothing_without_a_residual_block():
    state, log = _front_end(frontend.load_model(mlp(), torch.rand(1, 64), clean=False))
    assert log["branches"] == [] and state.branches == []


def test_fold_and_lower_yield_the_units_plan_dataflow_gives():
    model = frontend.load_model(cnn(), torch.rand(1, 1, 8, 8), clean=False)
    state, _ = _front_end(model)
    state.lowering = {"fps": 20_000, "clock_mhz": 100.0}
    manager = passes.PassManager()
    state = manager.run(state, passes.BACK_END)
    fold, lower = (record.changes for record in manager.log)
    reference_graph = frontend.build_graph(frontend.load_model(cnn(), torch.rand(1, 1, 8, 8)), "t")
    folding = rtl.solve_folding(reference_graph, fps=20_000, clock_mhz=100.0)
    reference = rtl.plan_dataflow(reference_graph, folding)
    assert [(s.kind, s.name, s.fifo_depth) for s in state.plan.stages] == [
        (s.kind, s.name, s.fifo_depth) for s in reference.stages
    ]
    assert [c.node for c in fold] == list(folding.folds)
    assert all(f"PE {folding.folds[c.node].pe}, SIMD {folding.folds[c.node].simd}" in c.reason for c in fold)
    units = [c for c in lower if c.node != "FIFOs"]
    assert [c.node for c in units] == [f"{s.name} ({s.kind})" for s in reference.stages]
    assert all(c.kind == "added" for c in lower)
    assert str([s.fifo_depth for s in reference.stages[1:]]) in lower[-1].reason


# ---------------------------------------------------------------------------------------------------------------
# The PassManager


class _ReverseThresholds:
    name = "reverse_thresholds"
    doc = "a broken pass: makes the first layer's thresholds decrease"
    user_errors = ()

    def run(self, state):
        layer = state.graph.layers[0]
        layer.thresholds = layer.thresholds[:, ::-1].copy()
        return state, [passes.Change("rewritten", layer.name, "reversed")]


class _Crash:
    name = "crash"
    doc = "a pass with a bug"
    user_errors = ()

    def run(self, state):
        raise KeyError("no such tensor")


class _Refuse:
    name = "refuse"
    doc = "a pass that finds the user's model unsupported"
    user_errors = ()

    def run(self, state):
        raise ModelError("node 'x' (op Foo) is not supported")


@pytest.fixture(scope="module")
def streamlined():
    return frontend.load_model(mlp(), torch.rand(1, 64), clean=False)


def test_a_pass_that_breaks_an_invariant_is_an_internal_error_naming_the_pass(streamlined):
    state, _ = _front_end(streamlined)
    state.source = "net.onnx"
    manager = passes.PassManager()
    with pytest.raises(InternalError) as caught:
        manager.run(state, [_ReverseThresholds()])
    message = str(caught.value)
    assert not isinstance(caught.value, ModelError)
    assert "compile pass 'reverse_thresholds'" in message and "broke an invariant" in message
    assert "thresholds decrease" in message and "hardwire bug" in message and message.startswith("net.onnx: ")
    assert len(message.splitlines()) == 1 and manager.log == []


def test_a_pass_that_crashes_is_an_internal_error_but_a_user_error_passes_through(streamlined):
    state, _ = _front_end(streamlined)
    with pytest.raises(InternalError, match=r"compile pass 'crash' \(KeyError: 'no such tensor'\).*hardwire bug"):
        passes.PassManager().run(state, [_Crash()])
    with pytest.raises(ModelError, match=r"^node 'x' \(op Foo\) is not supported$"):
        passes.PassManager().run(state, [_Refuse()])
    state.lowering = {"folds": {"no_such_layer": (1, 1)}}
    with pytest.raises(ParameterError, match="no_such_layer"):  # --fold is the user's: not an internal error
        passes.PassManager().run(state, [passes.Fold()])


def test_the_log_records_every_pass_in_order_with_its_time(streamlined):
    state, manager = passes.run_front_end(streamlined, "t")
    log = manager.to_dict()
    assert [r["pass"] for r in log] == ["cleanup", "absorb_preprocessing", "streamline", "branches"]
    assert all(r["wall_s"] >= 0 and r["doc"] for r in log) and state.done == [r["pass"] for r in log]
    json.dumps(log)  # the report's JSON takes it as it is
    text = passes.explain(log)
    assert text.splitlines()[1].split() == ["pass", "changes", "time", "ms"]
    renamed = sum(c["kind"] == "renamed" for c in log[0]["changes"])
    assert renamed > 3 and f"... and {renamed - 3} more nodes" in text


# ---------------------------------------------------------------------------------------------------------------
# hardwire compile --explain


def test_compile_explain_prints_the_passes_on_zoo_mlp2(tmp_path, capsys):
    out = tmp_path / "mlp2"
    assert main(["compile", "zoo:mlp2", "--explain", "--no-sim", "--no-synth", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("compile passes:") :].splitlines()
    assert table[1].split() == ["pass", "changes", "time", "ms"]
    names = [line.split()[0] for line in table[2:8]]
    assert names == ["cleanup", "absorb_preprocessing", "streamline", "branches", "fold", "lower"]
    counts = {line.split()[0]: int(line.split()[1]) for line in table[2:8]}
    assert counts["streamline"] == 3 and counts["branches"] == 0 and counts["lower"] == 4
    assert "rewritten Gemm_0: Quant_1 + Gemm_0 + BatchNormalization_0 + Relu_0 + Quant_4 -> dense layer" in printed
    assert "added     Gemm_2 (mvu): unit for layer Gemm_2" in printed
    report = json.loads((out / "report.json").read_text())
    assert [r["pass"] for r in report["passes"]] == names
    assert {tuple(c) for r in report["passes"] for c in map(dict.values, r["changes"])} >= {
        ("rewritten", "Quant_0 (Quant)", next(c["reason"] for c in report["passes"][1]["changes"]))
    }
    markdown = (out / "report.md").read_text()
    assert "## Compile passes" in markdown and "| streamline | 3 |" in markdown


def test_compile_without_explain_prints_no_pass_table_but_reports_it(tmp_path, capsys):
    out = tmp_path / "mlp2"
    assert main(["compile", "zoo:mlp2", "--no-sim", "--no-synth", "-o", str(out)]) == 0
    assert "compile passes:" not in capsys.readouterr().out
    assert len(json.loads((out / "report.json").read_text())["passes"]) == 6


def test_a_malformed_graph_through_the_passes_is_still_a_one_line_user_error(tmp_path, capsys):
    model = hand_built().model
    model.graph.node[4].input[0] = "nowhere"  # fc0 reads a tensor nothing produces
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "--no-sim", "--no-synth", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ["hardwire: error: tensor 'Identity_0_out0' is not used"]
