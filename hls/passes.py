"""The compile path as a sequence of named passes over one state (FINN's transformations are the model).

    cleanup               qonnx' clean-up of the ONNX graph (shapes, constants folded, conv biases split off,
                          unique readable names), one qonnx transformation at a time so each change is seen
    absorb_preprocessing  layout ops and a constant x * a + b before the input quantizer go to the host; the
                          input quantizer becomes the input layer (float -> integer codes, on the host)
    streamline            each MatMul/Gemm/Conv with its float ops and activation Quant -> an integer layer with
                          thresholds (found by running qonnx on the accumulators); MaxPool; free layout ops dropped
    branches              each residual block: a stream duplicator at the fork, an add unit at the join with
                          the shifts that align the two power-of-two scales (the blocks themselves are found
                          by streamline's walk, which follows the data through forks; this pass sets and
                          records the fork/join structure the lowering lays out)
    fold                  (PE, SIMD) per matrix-vector layer from the throughput target, budget or given folds
    lower                 the integer layers -> the dataflow units (mvu, swg, maxpool, dwc, residual), FIFO
                          depths sized from the composed schedule models

A pass is an object with a `name`, a one-line `doc` and `run(state) -> (state, [Change])`. Each pass wraps the
functions that did the work before there were passes (hls.frontend, hls.rtl): the code and its results are
the same, what is new is that each step is named, timed, testable alone and says what it changed. The
PassManager runs a sequence, keeps the change log, and checks the state's invariants after every pass: a pass
that breaks one, or fails with anything but a user error, is reported as hardwire's internal error naming the
pass (never as a problem with the user's model). `hardwire compile --explain` prints the log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hardwire.errors import InternalError, ModelError, ParameterError, SimulationError, ToolError, ToolMissingError
from hardwire.hls import frontend, rtl
from hardwire.hls.graph import DepthwiseLayer, IntGraph, MatVecLayer, MaxPoolLayer, ResidualLayer, flat_layers

# errors that say what is wrong with the user's model or tools, or are already hardwire's: passed on unchanged
PASS_THROUGH = (ModelError, ToolMissingError, ToolError, SimulationError, InternalError)
FREE_LAYOUT_OPS = ("Flatten", "Reshape", "Identity", "Dropout")


@dataclass(frozen=True)
class Change:
    """One thing a pass did: `kind` is removed, added, rewritten, moved (to the host) or renamed; `node` the
    ONNX node or hardware layer/unit it concerns; `reason` one line saying what and why."""

    kind: str
    node: str
    reason: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "node": self.node, "reason": self.reason}


@dataclass
class CompileState:
    """What the passes work on: the ONNX model, then the integer graph, its folding and its dataflow plan.
    `lowering` holds the folding's inputs (solve_folding's keyword arguments)."""

    model: object  # qonnx ModelWrapper
    name: str = "network"
    source: str = "the model"  # where the model came from, for messages
    graph: IntGraph | None = None
    input_quant: object = None  # the input Quant node (absorb_preprocessing)
    stream: object = None  # the stream after the input quantizer (frontend._Stream)
    branches: list = field(default_factory=list)  # one dict per residual block (branches)
    lowering: dict = field(default_factory=dict)
    folding: object = None  # rtl.FoldingResult
    plan: object = None  # rtl.DataflowPlan
    done: list = field(default_factory=list)  # names of the passes run so far


class Pass(Protocol):
    name: str
    doc: str
    user_errors: tuple

    def run(self, state: CompileState) -> tuple[CompileState, list[Change]]: ...


@dataclass
class PassRecord:
    name: str
    doc: str
    changes: list[Change]
    time_s: float

    def to_dict(self) -> dict:
        return {
            "pass": self.name,
            "doc": self.doc,
            "wall_s": round(self.time_s, 5),  # "wall_s" as every timing in a report: comparisons leave it out
            "changes": [c.to_dict() for c in self.changes],
        }


# ---------------------------------------------------------------------------------------------------------------
# The passes


class Cleanup:
    name = "cleanup"
    doc = "qonnx' clean-up: shapes inferred, constants folded, conv biases split off, unique readable names"
    user_errors = ()

    def run(self, state):
        try:
            state.model, changes = stepwise_cleanup(state.model)
        except Exception as error:  # noqa: BLE001 - as frontend.clean_model: qonnx cannot take the file
            raise ModelError(
                f"{state.source}: qonnx could not clean up the model ({type(error).__name__}: {error})"
            ) from None
        return state, changes


# Why each of qonnx' clean-up transformations removes or adds a node.
CLEANUP_REASONS = {
    "FoldConstants": ("every input is a constant: folded into one constant (qonnx FoldConstants)", None),
    "FoldTransposeIntoQuantInit": ("a Transpose of a quantized constant, folded into the Quant's constant", None),
    "ExtractBiasFromConv": (None, "the Conv's bias split off into an Add after it, where the thresholds absorb it"),
}


def _cleanup_steps() -> list:
    """qonnx.util.cleanup.cleanup_model(model, extract_conv_bias=True) (what frontend.clean_model runs) as its
    list of transformations, so that each one's changes can be told apart; tests/test_passes.py checks that the
    result is the same model, byte for byte."""
    from qonnx.transformation.extract_conv_bias import ExtractBiasFromConv
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import (
        GiveReadableTensorNames,
        GiveUniqueNodeNames,
        GiveUniqueParameterTensors,
        RemoveStaticGraphInputs,
        RemoveUnusedTensors,
    )
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.quant_constant_folding import FoldTransposeIntoQuantInit

    preserved = ["Quant", "BipolarQuant", "QuantizeLinear", "DequantizeLinear"]
    return [
        InferShapes(),
        GiveUniqueParameterTensors(),
        FoldConstants(exclude_op_types=preserved),
        FoldTransposeIntoQuantInit(),
        RemoveUnusedTensors(),
        RemoveStaticGraphInputs(),
        GiveUniqueNodeNames(),
        GiveReadableTensorNames(),
        ExtractBiasFromConv(),
        InferShapes(),
        GiveUniqueNodeNames(),
        GiveReadableTensorNames(),
    ]


def stepwise_cleanup(model):
    """(the cleaned model, its changes): qonnx' clean-up one transformation at a time. A renaming step is
    recorded node by node (it keeps the node order); any other step by the nodes it removed and added."""
    for node in model.graph.node:  # qonnx' own clean-up first puts its quantizers in their domain
        if node.op_type in ("Quant", "Trunc", "BipolarQuant"):
            node.domain = frontend.QUANT_DOMAIN
    changes: list[Change] = []
    unnamed: list[int] = []  # added nodes without a name yet: a later renaming step names them
    for step in _cleanup_steps():
        kind = type(step).__name__
        before = list(model.graph.node)
        model = model.transform(step)
        after = list(model.graph.node)
        if kind == "GiveUniqueNodeNames":
            for old, new in zip(before, after):
                named = next((i for i in unnamed if changes[i].node == f" ({new.op_type})"), None)
                if not old.name and named is not None:
                    changes[named] = Change("added", f"{new.name} ({new.op_type})", changes[named].reason)
                    unnamed.remove(named)
                elif old.name != new.name:
                    changes.append(
                        Change("renamed", f"{new.name} ({new.op_type})", f"was {old.name!r} (qonnx' unique node names)")
                    )
            continue
        gone_reason, new_reason = CLEANUP_REASONS.get(kind, (None, None))
        old_keys, new_keys = _node_keys_of(before), _node_keys_of(after)
        changes += [
            Change("removed", f"{node.name} ({node.op_type})", gone_reason or f"removed by qonnx' {kind}")
            for node, key in zip(before, old_keys)
            if key not in set(new_keys)
        ]
        for node, key in zip(after, new_keys):
            if key not in set(old_keys):
                unnamed += [len(changes)] if not node.name else []
                changes.append(
                    Change("added", f"{node.name} ({node.op_type})", new_reason or f"added by qonnx' {kind}")
                )
    return model, changes


def _node_keys_of(nodes: list) -> list:
    """A key per node that a transformation which does not rename keeps: its name where set and unique, else its
    op and output tensors."""
    names = [node.name for node in nodes]
    return [
        node.name if node.name and names.count(node.name) == 1 else (node.op_type, tuple(node.output)) for node in nodes
    ]


class AbsorbPreprocessing:
    name = "absorb_preprocessing"
    doc = (
        "layout ops and a constant x * a + b before the input quantizer run on the host; the input quantizer "
        "becomes the input layer"
    )
    user_errors = ()

    def run(self, state):
        m = frontend._Model(state.model)
        graph, first, stream = frontend.input_stage(m, state.name)
        state.graph, state.input_quant, state.stream = graph, first, stream
        changes = []
        if graph.prefix is not None:
            for node in graph.prefix.nodes:
                what = (
                    "a constant affine step (x * a + b), computed in float32 by qonnx' executor"
                    if node.op_type in frontend.AFFINE_OPS
                    else "a layout op"
                )
                changes.append(
                    Change(
                        "moved",
                        f"{node.name} ({node.op_type})",
                        f"{what} before the input quantizer {first.name}: runs on the host, not "
                        "folded into the hardware",
                    )
                )
        changes.append(
            Change(
                "rewritten",
                f"{first.name} ({first.op_type})",
                f"the input quantizer -> the input layer: {graph.input.dtype.name} codes of scale "
                f"{graph.input.scale:g}, {'x'.join(map(str, graph.input.shape))} (H x W x C), "
                "quantized on the host",
            )
        )
        return state, changes


class Streamline:
    name = "streamline"
    doc = (
        "each MatMul/Gemm/Conv with its float ops and activation Quant -> integer weights and thresholds; "
        "MaxPool; free layout ops dropped"
    )
    user_errors = ()

    def run(self, state):
        m = frontend._Model(state.model)
        frontend.walk_layers(m, state.graph, state.input_quant, state.stream)
        return state, _streamline_changes(state)


def _layer_change(layer) -> Change:
    if isinstance(layer, MatVecLayer):
        n, k = layer.weights.shape
        shape = f"{layer.w_type.name} weights {n}x{k}"
        if layer.kind == "conv":
            shape += f", kernel {layer.kernel}, stride {layer.stride}, padding {layer.padding}"
        if layer.thresholds is None:
            out = "raw accumulator out (made the model's floats on the host)"
        else:
            out = f"{layer.thresholds.shape[1]} thresholds per channel, {layer.out_type.name} out"
        return Change("rewritten", layer.name, f"{' + '.join(layer.nodes)} -> {layer.kind} layer: {shape}; {out}")
    if isinstance(layer, MaxPoolLayer):
        return Change("rewritten", layer.name, f"{' + '.join(layer.nodes)} -> maxpool layer, kernel {layer.kernel}")
    ops = " + ".join(layer.nodes[1:]) or "its quantizer"
    return Change(
        "rewritten",
        layer.name,
        f"{ops} after the residual Add -> {layer.thresholds.shape[1]} thresholds "
        f"on the aligned integer sum, {layer.out_type.name} out",
    )


def _walk_all(layers: list):
    """Every layer in data order, residual blocks included (the block, then its branch, then its shortcut)."""
    for layer in layers:
        yield layer
        if isinstance(layer, ResidualLayer):
            yield from _walk_all(layer.branch)
            yield from _walk_all(layer.shortcut)


def _streamline_changes(state) -> list[Change]:
    graph = state.graph
    changes = [_layer_change(layer) for layer in _walk_all(graph.layers)]
    taken = {state.input_quant.name}
    taken |= {node.name for node in (graph.prefix.nodes if graph.prefix is not None else [])}
    taken |= {name for layer in _walk_all(graph.layers) for name in layer.nodes}
    tail = graph.tail
    if tail is not None and tail.chain is not None:
        for node in tail.chain.nodes:
            taken.add(node.name)
            changes.append(
                Change(
                    "moved",
                    f"{node.name} ({node.op_type})",
                    "a float op after the last layer: runs on the host on the raw accumulators (qonnx' executor)",
                )
            )
    trailing = {text.rsplit(" (", 1)[0] for text in (tail.trailing or [])} if tail is not None else set()
    for node in state.model.graph.node:
        if node.name in taken:
            continue
        if node.name in trailing:
            changes.append(
                Change(
                    "moved",
                    f"{node.name} ({node.op_type})",
                    "layout op after the last layer: applied on the host to the output",
                )
            )
        elif node.op_type in FREE_LAYOUT_OPS:
            changes.append(
                Change(
                    "removed",
                    f"{node.name} ({node.op_type})",
                    "layout op: free in hardware (the stream is already in this order; weights are permuted to match)",
                )
            )
        else:
            changes.append(
                Change("removed", f"{node.name} ({node.op_type})", "not on the path from the input to the output")
            )
    return changes


class Branches:
    name = "branches"
    doc = "each residual block: a stream duplicator at the fork, an add unit aligning the two scales at the join"
    user_errors = ()

    def run(self, state):
        changes, blocks = [], []
        for layer in _walk_all(state.graph.layers):
            if not isinstance(layer, ResidualLayer):
                continue
            branch = [inner.name for inner in layer.branch]
            shortcut = [inner.name for inner in layer.shortcut]
            blocks.append(
                {
                    "block": layer.name,
                    "fork_shape": list(layer.in_shape),
                    "branch": branch,
                    "shortcut": shortcut,
                    "a_shift": layer.a_shift,
                    "b_shift": layer.b_shift,
                }
            )
            changes.append(
                Change(
                    "added",
                    f"{layer.name}_dup",
                    f"stream duplicator at the fork of the "
                    f"{'x'.join(map(str, layer.in_shape))} {layer.in_type.name} stream: one copy "
                    f"through {', '.join(branch)}, one through "
                    f"{', '.join(shortcut) if shortcut else 'the identity shortcut'}",
                )
            )
            changes.append(
                Change(
                    "rewritten",
                    f"{layer.name} (Add)",
                    f"-> add unit: (a << {layer.a_shift}) + "
                    f"(b << {layer.b_shift}) ({layer.a_type.name} + {layer.b_type.name} on the finer "
                    "power-of-two scale), then the block's thresholds; both inputs get FIFOs sized "
                    "in `lower`",
                )
            )
        state.branches = blocks
        return state, changes


class Fold:
    name = "fold"
    doc = "(PE, SIMD) per matrix-vector layer from the throughput target, the LUT budget or the given folds"
    user_errors = (ParameterError,)  # --fold, --fps and --budget are the user's

    def run(self, state):
        state.folding = rtl.solve_folding(state.graph, **state.lowering)
        folding = state.folding
        changes = [
            Change(
                "rewritten",
                name,
                f"PE {fold.pe}, SIMD {fold.simd}: {folding.cycles[name]} cycles per "
                "inference" + (" (the bottleneck)" if name == folding.bottleneck else ""),
            )
            for name, fold in folding.folds.items()
        ]
        return state, changes


class Lower:
    name = "lower"
    doc = (
        "integer layers -> dataflow units (mvu, vvu, swg, maxpool, dwc, residual); FIFO depths from the schedule models"
    )
    user_errors = ()

    def run(self, state):
        state.plan = rtl.plan_dataflow(state.graph, state.folding)
        changes = []
        for stage in state.plan.stages:
            changes += _stage_changes(stage)
        changes.append(
            Change(
                "added",
                "FIFOs",
                f"{len(state.plan.stages) - 1} FIFOs between units, depths "
                f"{[s.fifo_depth for s in state.plan.stages[1:]]} from the composed schedule (initiation "
                f"interval {state.plan.interval} cycles)",
            )
        )
        return state, changes


def _stage_changes(stage, where: str = "") -> list[Change]:
    if stage.kind != "residual":
        params = stage.params
        detail = {
            "mvu": lambda p: (
                f"PE {p.pe}, SIMD {p.simd}, {p.in_width}-bit in, {p.w_width}-bit weights"
                + (", XNOR-popcount" if getattr(p, "binary", False) else "")
            ),
            "swg": lambda p: f"{p.kernel_size}x{p.kernel_size} windows, stride {p.stride}, SIMD {p.simd}",
            "maxpool": lambda p: f"{p.kernel_size}x{p.kernel_size}, SIMD {p.simd}",
            "dwc": lambda p: f"{p.in_lanes} -> {p.out_lanes} lanes",
            "vvu": lambda p: (
                f"{p.channels} channels x {p.kernel_elements} window positions, PE {p.pe}, SIMD {p.simd}, "
                f"{p.in_width}-bit in, {p.w_width}-bit weights"
            ),
        }.get(stage.kind, lambda p: "")(params)
        return [Change("added", f"{stage.name} ({stage.kind})", f"unit for layer {stage.layer}{where}: {detail}")]
    plan = stage.params
    changes = [
        Change("added", f"{stage.name}_dup (duplicator)", f"{plan.dup.lanes} lanes, feeds the branch and the shortcut")
    ]
    for inner in plan.branch:
        changes += _stage_changes(inner, f" (residual {stage.name}, branch)")
    for inner in plan.shortcut:
        changes += _stage_changes(inner, f" (residual {stage.name}, shortcut)")
    depths = plan.fifo_depths()
    changes.append(
        Change(
            "added",
            f"{stage.name}_add (add)",
            f"(a << {plan.add.a_shift}) + (b << {plan.add.b_shift}), "
            f"{len(plan.add.thresholds)} thresholds; FIFO depths from the composed schedule: branch "
            f"{depths['branch']}, shortcut {depths['shortcut']}, add inputs {depths['add_a']} (branch) "
            f"and {depths['add_b']} (shortcut)",
        )
    )
    return changes


FRONT_END = (Cleanup(), AbsorbPreprocessing(), Streamline(), Branches())
BACK_END = (Fold(), Lower())
PASSES = FRONT_END + BACK_END


# ---------------------------------------------------------------------------------------------------------------
# Invariants checked between passes


def check_state(state: CompileState) -> list[str]:
    """What is wrong with the state (empty when nothing): the properties every later pass relies on."""
    problems = []
    if "cleanup" in state.done:
        names = [node.name for node in state.model.graph.node]
        if not all(names):
            problems.append("an ONNX node has no name")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"ONNX node names repeat: {', '.join(repeated)}")
    graph = state.graph
    if graph is not None:
        if "streamline" in state.done and not graph.layers:
            problems.append("the integer graph has no layers")
        problems += _check_chain(graph.layers, graph.input.shape)
    if state.folding is not None and graph is not None:
        for layer in flat_layers(graph.layers):
            if isinstance(layer, MatVecLayer):
                fold = state.folding.folds.get(layer.name)
                if fold is None or layer.out_features % fold.pe or layer.in_features % fold.simd:
                    problems.append(
                        f"layer {layer.name}: folding {fold} does not divide its "
                        f"{layer.out_features}x{layer.in_features} weights"
                    )
    if state.plan is not None:
        if not state.plan.stages:
            problems.append("the dataflow plan has no units")
        names = {layer.name for layer in _walk_all(graph.layers)} if graph is not None else set()
        for stage in state.plan.stages:
            if names and stage.layer not in names:
                problems.append(f"unit {stage.name} stands for layer {stage.layer!r}, which the graph does not have")
        if any(stage.fifo_depth < 1 for stage in state.plan.stages[1:]):
            problems.append("a FIFO between units has depth < 1")
        laid_out = sorted(_residual_stages(state.plan.stages))
        if "branches" in state.done and laid_out != sorted(b["block"] for b in state.branches):
            problems.append(
                f"the plan lays out residual blocks {laid_out}, the branches pass found "
                f"{sorted(b['block'] for b in state.branches)}"
            )
    return problems


def _residual_stages(stages: list) -> list[str]:
    names = []
    for stage in stages:
        if stage.kind == "residual":
            names += [stage.name] + _residual_stages(stage.params.branch) + _residual_stages(stage.params.shortcut)
    return names


def _check_chain(layers: list, shape: tuple) -> list[str]:
    problems = []
    for layer in layers:
        if isinstance(layer, MatVecLayer):
            flat = (1, 1, shape[0] * shape[1] * shape[2])
            if tuple(layer.in_shape) not in (tuple(shape), flat):
                problems.append(f"layer {layer.name} takes {layer.in_shape}, the stream before it is {shape}")
            n, k = layer.weights.shape
            if isinstance(layer, DepthwiseLayer):
                # one row of window weights per channel; a global pool's window is the whole image
                window = layer.in_shape[0] * layer.in_shape[1] if layer.global_pool else layer.kernel * layer.kernel
                if (n, k) != (layer.in_shape[2], window):
                    problems.append(
                        f"depthwise layer {layer.name}: weights of shape {(n, k)} for {layer.in_shape[2]} channels "
                        f"and a window of {window}"
                    )
            elif k != layer.kernel * layer.kernel * layer.in_shape[2]:
                problems.append(
                    f"layer {layer.name}: {k} weights per output for a {layer.kernel}x{layer.kernel} "
                    f"window of {layer.in_shape[2]} channels"
                )
            if layer.weights.size and np.abs(layer.weights).max() > max(abs(layer.w_type.min), abs(layer.w_type.max)):
                problems.append(f"layer {layer.name}: weights outside {layer.w_type.name} (up to the sign flip)")
            if layer.thresholds is not None:
                problems += _check_thresholds(
                    layer.name,
                    layer.thresholds,
                    n,
                    1 if layer.out_type.bipolar else (1 << layer.out_type.storage_bits) - 1,
                )
        elif isinstance(layer, MaxPoolLayer):
            if tuple(layer.in_shape) != tuple(shape):
                problems.append(f"layer {layer.name} takes {layer.in_shape}, the stream before it is {shape}")
        elif isinstance(layer, ResidualLayer):
            if tuple(layer.in_shape) != tuple(shape):
                problems.append(f"block {layer.name} takes {layer.in_shape}, the stream before it is {shape}")
            problems += _check_chain(layer.branch, layer.in_shape)
            problems += _check_chain(layer.shortcut, layer.in_shape)
            ends = {
                tuple(path[-1].out_shape) if path else tuple(layer.in_shape) for path in (layer.branch, layer.shortcut)
            }
            if len(ends) != 1:
                problems.append(f"block {layer.name}: its branch and shortcut end in different shapes {sorted(ends)}")
            problems += _check_thresholds(layer.name, layer.thresholds, 1, (1 << layer.out_type.storage_bits) - 1)
        shape = layer.out_shape
    return problems


def _check_thresholds(name: str, thresholds, rows: int, count: int) -> list[str]:
    thresholds = np.asarray(thresholds)
    if thresholds.shape != (rows, count):
        return [f"layer {name}: thresholds of shape {thresholds.shape}, expected {(rows, count)}"]
    if np.any(np.diff(thresholds, axis=1) < 0):
        return [f"layer {name}: thresholds decrease along a channel"]
    return []


# ---------------------------------------------------------------------------------------------------------------
# Running passes


class PassManager:
    """Runs passes in order on one CompileState, keeping a PassRecord per pass (what changed, how long it took)
    and checking `check_state` after each. `run` may be called again with later passes: the log grows."""

    def __init__(self, check=check_state):
        self.check = check
        self.log: list[PassRecord] = []

    def run(self, state: CompileState, passes) -> CompileState:
        for step in passes:
            started = time.perf_counter()
            try:
                state, changes = step.run(state)
            except PASS_THROUGH + tuple(getattr(step, "user_errors", ())):
                raise
            except Exception as error:  # noqa: BLE001 - anything else is hardwire's own failure
                raise _internal(state, step, f"{type(error).__name__}: {_first_line(error)}") from error
            elapsed = time.perf_counter() - started
            state.done.append(step.name)
            problems = self.check(state)
            if problems:
                raise _internal(state, step, "it broke an invariant: " + "; ".join(problems))
            self.log.append(PassRecord(step.name, step.doc, list(changes), elapsed))
        return state

    def to_dict(self) -> list[dict]:
        return [record.to_dict() for record in self.log]


def _first_line(error) -> str:
    return str(error).splitlines()[0] if str(error) else ""


def _internal(state: CompileState, step, what: str) -> InternalError:
    return InternalError(
        f"{state.source}: internal error in hardwire's compile pass {step.name!r} ({what}); this is "
        "a hardwire bug, not a problem with your model: please report it with the model file"
    )


def run_front_end(model, name: str = "network", *, source: str = "the model", clean: bool = True):
    """(state, manager) after the front-end passes on a ModelWrapper as read (`clean`: run qonnx' clean-up)."""
    manager = PassManager()
    state = CompileState(model, name, source)
    state = manager.run(state, FRONT_END if clean else FRONT_END[1:])
    return state, manager


# ---------------------------------------------------------------------------------------------------------------
# Showing the log


def explain(log: list[dict], *, limit: int = 3) -> str:
    """The pass log (PassManager.to_dict()) for people: a table of passes (changes, time), then each pass's
    changes; renames beyond `limit` per pass are counted, not listed."""
    width = max([len(r["pass"]) for r in log] + [4])
    lines = ["compile passes:", f"  {'pass':<{width}}  changes  time ms"]
    lines += [f"  {r['pass']:<{width}}  {len(r['changes']):>7}  {1e3 * r['wall_s']:>7.1f}" for r in log]
    for record in log:
        if not record["changes"]:
            continue
        lines.append(f"{record['pass']}: {record['doc']}")
        renamed = [c for c in record["changes"] if c["kind"] == "renamed"]
        for change in record["changes"]:
            if change["kind"] == "renamed" and renamed.index(change) >= limit:
                continue
            lines.append(f"  {change['kind']:<9} {change['node']}: {change['reason']}")
        if len(renamed) > limit:
            lines.append(f"  renamed   ... and {len(renamed) - limit} more nodes")
    return "\n".join(lines)


def markdown(log: list[dict]) -> list[str]:
    """The pass table and the changes as markdown lines, for report.md. No times: report.md says the same for the
    same design (the times are in report.json's "wall_s" and in --explain)."""
    from hardwire.flows.report import markdown_table

    lines = [
        "## Compile passes",
        "",
        markdown_table(
            ["pass", "changes", "what it does"],
            [[r["pass"], len(r["changes"]), r["doc"]] for r in log],
        ),
        "",
    ]
    for record in log:
        for change in record["changes"]:
            lines.append(f"- `{record['pass']}` {change['kind']} `{change['node']}`: {change['reason']}")
    return lines
