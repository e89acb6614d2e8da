"""RTL back end: an integer layer chain + a folding -> one streaming dataflow accelerator built from gen/ blocks.

Each dense layer becomes a matrix-vector-threshold unit (gen/mvu.py); a convolution becomes a sliding-window
generator (gen/swg.py) feeding one; max pooling is gen/pool.py; where one unit's output lanes differ from the
next one's input lanes a width converter (gen/dwc.py) regroups the elements. A residual block is one unit
made of units: a duplicator (gen/branch.py) feeding the branch's units and the shortcut's, joined by an add
(gen/branch.py) that aligns their scales and thresholds the sum. A FIFO sits between every two
units, sized from the composed cycle model so that, with an always-ready sink, no unit ever waits on a full
FIFO: the network's timing is then exactly the composition of the units' own schedule models. Inside a
residual block the same holds per path, so the shortcut's FIFO gets the depth that covers the branch's
latency (not a guess sized by simulation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen import branch, dwc, mvu, pool, swg, vvu
from hardwire.hls.graph import DepthwiseLayer, IntGraph, MatVecLayer, MaxPoolLayer, ResidualLayer, flat_layers

from hardwire.params import require

FIFO_LATENCY_CYCLES = 2  # amaranth.lib.fifo.SyncFIFOBuffered: a beat written in cycle t is readable at t + 2
MIN_FIFO_DEPTH = 3  # SyncFIFOBuffered(depth=2) has a one-entry inner FIFO with a zero-width address


# ---------------------------------------------------------------------------------------------------------------
# Folding: how many output channels (PE) and input elements (SIMD) each matrix-vector unit handles per cycle


@dataclass(frozen=True)
class LayerFold:
    layer: str
    pe: int
    simd: int


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def simd_choices(layer: MatVecLayer) -> list[int]:
    """SIMD must divide the channels of a convolution's input (a window beat stays within one pixel) or the
    whole input vector of a dense layer; for a depthwise layer (gen/vvu.py) it counts window positions."""
    if isinstance(layer, DepthwiseLayer):
        return divisors(layer.in_features)
    return divisors(layer.in_shape[2] if layer.is_conv else layer.in_features)


def fold_allowed(layer: MatVecLayer, pe: int, simd: int) -> bool:
    """A depthwise unit takes several window positions per beat only with every channel in parallel."""
    return not isinstance(layer, DepthwiseLayer) or simd == 1 or pe == layer.out_features


def mvu_cycles_per_inference(layer: MatVecLayer, pe: int, simd: int) -> int:
    """Initiation interval of the layer's unit in cycles per inference: vectors x neuron folds x synapse folds."""
    oh, ow, n = layer.out_shape
    return oh * ow * (n // pe) * (layer.in_features // simd)


def estimated_luts(layer: MatVecLayer, pe: int, simd: int) -> int:
    """A rough pre-synthesis LUT estimate used only to steer the budget solver (reports use yosys' counts):
    one LUT per partial-product bit per lane, an adder tree, and one comparator per threshold per PE."""
    in_bits, w_bits = layer.in_type.storage_bits, layer.w_type.storage_bits
    lo, hi = layer.acc_range
    acc_bits = max(abs(lo), abs(hi)).bit_length() + 1
    thresholds = layer.thresholds.shape[1] if layer.thresholds is not None else 0
    return pe * (simd * (in_bits * w_bits + acc_bits) + thresholds * acc_bits // 2)


@dataclass
class FoldingResult:
    folds: dict[str, LayerFold]
    cycles: dict[str, int]  # per matrix-vector layer: cycles per inference
    target_cycles: int | None  # the initiation interval asked for (fps mode)
    met: bool
    bottleneck: str
    estimated_luts: int
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "folds": {k: {"pe": v.pe, "simd": v.simd} for k, v in self.folds.items()},
            "cycles": self.cycles,
            "target_cycles": self.target_cycles,
            "met": self.met,
            "bottleneck": self.bottleneck,
            "estimated_luts": self.estimated_luts,
            "note": self.note,
        }


def solve_folding(
    graph: IntGraph,
    *,
    fps: float | None = None,
    clock_mhz: float = 100.0,
    lut_budget: int | None = None,
    folds: dict[str, tuple[int, int]] | None = None,
    lut_cost: Callable[[dict[str, LayerFold]], float] | None = None,
) -> FoldingResult:
    """Choose (PE, SIMD) per layer.

    - `fps`: the cheapest folding (fewest lanes, SIMD grown before PE as FINN does) whose initiation interval
      fits clock/fps cycles in every layer, so the layers are balanced against the target;
    - `lut_budget`: start fully folded and repeatedly unfold the bottleneck layer by one step while the
      estimate stays within the budget;
    - `folds`: given explicitly, {layer: (pe, simd)};
    - none of these: fully folded (PE = SIMD = 1), the smallest design.
    `lut_cost(folds)` prices a whole folding for the budget (the learned surrogate, see hls.compile); without it
    the rough per-layer formula `estimated_luts` is summed."""
    layers = [layer for layer in flat_layers(graph.layers) if isinstance(layer, MatVecLayer)]
    require(fps is None or fps > 0, "fps", fps, "> 0")
    require(clock_mhz > 0, "clock_mhz", clock_mhz, "> 0")
    require(lut_budget is None or lut_budget > 0, "lut_budget", lut_budget, "> 0")
    chosen: dict[str, LayerFold] = {}
    target = None
    met, note = True, ""
    if folds is not None:
        unknown = sorted(set(folds) - {layer.name for layer in layers})
        require(
            not unknown,
            "fold",
            ", ".join(unknown),
            "layers of this network: " + ", ".join(layer.name for layer in layers),
        )
        for layer in layers:
            pe, simd = folds.get(layer.name, (1, 1))
            require(pe in divisors(layer.out_features), f"{layer.name}.pe", pe, f"a divisor of {layer.out_features}")
            require(simd in simd_choices(layer), f"{layer.name}.simd", simd, f"one of {simd_choices(layer)}")
            require(
                fold_allowed(layer, pe, simd),
                f"{layer.name}.simd",
                simd,
                f"1 unless pe = {layer.out_features} (a depthwise layer)",
            )
            chosen[layer.name] = LayerFold(layer.name, pe, simd)
    elif fps is not None:
        target = max(1, int(clock_mhz * 1e6 // fps))
        for layer in layers:
            options = sorted(
                (pe * simd, -simd, pe, simd)
                for pe in divisors(layer.out_features)
                for simd in simd_choices(layer)
                if fold_allowed(layer, pe, simd)
            )
            fitting = [o for o in options if mvu_cycles_per_inference(layer, o[2], o[3]) <= target]
            _, _, pe, simd = fitting[0] if fitting else options[-1]
            if not fitting:
                met = False
            chosen[layer.name] = LayerFold(layer.name, pe, simd)
    else:
        chosen = {layer.name: LayerFold(layer.name, 1, 1) for layer in layers}
        if lut_budget is not None:
            by_name = {layer.name: layer for layer in layers}

            def total(folding):
                if lut_cost is not None:
                    return lut_cost(folding)
                return sum(estimated_luts(by_name[n], f.pe, f.simd) for n, f in folding.items())

            if total(chosen) > lut_budget:
                met, note = False, f"even fully folded the estimate ({total(chosen):.0f} LUTs) exceeds the budget"
            while True:
                slowest = max(
                    layers, key=lambda ly: mvu_cycles_per_inference(ly, chosen[ly.name].pe, chosen[ly.name].simd)
                )
                step = _next_step(slowest, chosen[slowest.name])
                if step is None:
                    break
                trial = dict(chosen, **{slowest.name: step})
                if total(trial) > lut_budget:
                    break
                chosen = trial
    cycles = {
        layer.name: mvu_cycles_per_inference(layer, chosen[layer.name].pe, chosen[layer.name].simd) for layer in layers
    }
    bottleneck = max(cycles, key=cycles.get)
    if fps is not None and not met:
        note = (
            f"{fps:g} inferences/s at {clock_mhz:g} MHz needs <= {target} cycles per layer; layer "
            f"{bottleneck} needs {cycles[bottleneck]} even fully unfolded"
        )
    if lut_cost is not None and lut_budget is not None:
        luts = int(round(lut_cost(chosen)))
    else:
        luts = sum(estimated_luts(layer, chosen[layer.name].pe, chosen[layer.name].simd) for layer in layers)
    return FoldingResult(chosen, cycles, target, met, bottleneck, luts, note)


def _next_step(layer: MatVecLayer, fold: LayerFold) -> LayerFold | None:
    """One step less folded: the next larger SIMD, or once SIMD is exhausted, the next larger PE."""
    if isinstance(layer, DepthwiseLayer):  # PE first: a depthwise unit's SIMD needs every channel in parallel
        larger_pe = [p for p in divisors(layer.out_features) if p > fold.pe]
        if larger_pe:
            return LayerFold(fold.layer, larger_pe[0], fold.simd)
        larger_simd = [s for s in simd_choices(layer) if s > fold.simd]
        return LayerFold(fold.layer, fold.pe, larger_simd[0]) if larger_simd else None
    larger_simd = [s for s in simd_choices(layer) if s > fold.simd]
    if larger_simd:
        return LayerFold(fold.layer, fold.pe, larger_simd[0])
    larger_pe = [p for p in divisors(layer.out_features) if p > fold.pe]
    if larger_pe:
        return LayerFold(fold.layer, larger_pe[0], fold.simd)
    return None


# ---------------------------------------------------------------------------------------------------------------
# The plan: the chain of units with their parameters


@dataclass
class Stage:
    kind: str  # "mvu", "swg", "maxpool", "dwc", "residual" (params: a ResidualPlan)
    name: str
    params: object
    schedule: Callable
    build: Callable  # () -> wiring.Component
    layer: str
    fifo_depth: int = 0  # the FIFO in front of this stage (none in front of the first)


@dataclass
class DataflowPlan:
    name: str
    stages: list[Stage]
    in_shape: object  # element shape of the input stream
    in_lanes: int
    out_shape: object
    out_lanes: int
    in_beats: int  # per inference
    out_beats: int
    interval: int = 0  # initiation interval (cycles per inference), set by size_fifos
    notes: list[str] = field(default_factory=list)
    in_bipolar: bool = False  # the input stream carries 1-bit codes of -1/+1 (0 -> -1, 1 -> +1)
    out_bipolar: bool = False  # likewise the output stream
    out_offset: np.ndarray | None = None  # raw popcount-domain output: value = 2 * hardware - offset[channel]

    @property
    def top_name(self) -> str:
        return self.name

    def to_dict(self) -> dict:
        return {
            "top": self.name,
            "initiation_interval": self.interval,
            "in_lanes": self.in_lanes,
            "out_lanes": self.out_lanes,
            "in_width": self.in_shape.width,
            "in_signed": self.in_shape.signed,
            "out_width": self.out_shape.width,
            "out_signed": self.out_shape.signed,
            "in_beats_per_inference": self.in_beats,
            "out_beats_per_inference": self.out_beats,
            "in_bipolar": self.in_bipolar,
            "out_bipolar": self.out_bipolar,
            "out_offset": None if self.out_offset is None else self.out_offset.tolist(),
            "stages": [
                {
                    "kind": s.kind,
                    "name": s.name,
                    "layer": s.layer,
                    "fifo_depth": s.fifo_depth,
                    "params": s.params.to_dict(),
                }
                for s in self.stages
            ],
        }


def _shape(width: int, is_signed: bool):
    return signed(width) if is_signed else unsigned(width)


def _width_for(lo: int, hi: int) -> tuple[int, bool]:
    """Narrowest (width, signed) holding lo..hi."""
    if lo >= 0:
        return max(1, int(hi).bit_length()), False
    width = 1
    while not (-(1 << (width - 1)) <= lo and hi <= (1 << (width - 1)) - 1):
        width += 1
    return width, True


def _stream_type(dtype) -> tuple[int, bool]:
    """(width, signed) of a stream element: a bipolar value travels as one bit (0 for -1, 1 for +1)."""
    return (1, False) if dtype.bipolar else (dtype.storage_bits, dtype.storage_signed)


def _bipolar_input_unit(layer: MatVecLayer):
    """A unit whose input stream carries bits b for the values v = 2b - 1. With bipolar weights it is the
    XNOR-popcount unit (hardware weights are bits too, the popcount p gives acc = 2p - K); with integer weights
    it multiplies the bits (p = sum w * b, acc = 2p - sum w). Returns (hardware weights, w_width, w_signed,
    binary, offset per channel) with acc = 2 * hardware accumulator - offset."""
    weights = layer.weights.astype(np.int64)
    if layer.w_type.bipolar and np.all(np.abs(weights) == 1):
        return (weights + 1) // 2, 1, False, True, np.full(len(weights), layer.in_features, np.int64)
    w_width, w_signed = _width_for(int(weights.min()), int(weights.max()))
    return weights, w_width, w_signed, False, weights.sum(axis=1)


class _Layout:
    """Lays out units for a chain of layers, tracking the stream between them: its element type, lanes and
    image shape. A residual block lays out its branch and shortcut with layouts of their own."""

    def __init__(self, folding: FoldingResult, shape, width: int, is_signed: bool, bipolar: bool, lanes):
        self.folding = folding
        self.stages: list[Stage] = []
        self.h, self.w, self.c = shape
        self.width, self.is_signed, self.bipolar = width, is_signed, bipolar
        self.lanes = lanes  # lanes of the stream so far (None: the input, free to choose)
        self.in_lanes = lanes
        self.out_offset = None

    def fork(self) -> _Layout:
        return _Layout(self.folding, (self.h, self.w, self.c), self.width, self.is_signed, self.bipolar, self.lanes)

    def regroup(self, to_lanes: int, elements: int, layer: str, suffix: str = "dwc"):
        if self.lanes is None:
            self.in_lanes = self.lanes = to_lanes
            return
        if self.lanes != to_lanes:
            p = dwc.DwcParams(
                in_lanes=self.lanes,
                out_lanes=to_lanes,
                elem_width=self.width,
                elem_signed=self.is_signed,
                frame_elements=elements,
            )
            self.stages.append(
                Stage("dwc", f"{layer}_{suffix}", p, dwc.dwc_schedule, _builder(dwc.WidthConverter, p), layer)
            )
            self.lanes = to_lanes

    def add(self, layer) -> None:
        if isinstance(layer, ResidualLayer):
            self._residual(layer)
            return
        h, w, c = self.h, self.w, self.c
        width, is_signed = self.width, self.is_signed
        if isinstance(layer, MaxPoolLayer):
            if self.lanes is None:
                self.regroup(1, h * w * c, layer.name)
            p = pool.PoolParams(
                in_height=h,
                in_width=w,
                channels=c,
                kernel_size=layer.kernel,
                simd=self.lanes,
                elem_width=width,
                elem_signed=is_signed,
            )
            self.stages.append(
                Stage("maxpool", layer.name, p, pool.pool_schedule, _builder(pool.MaxPool, p), layer.name)
            )
            self.h, self.w, self.c = layer.out_shape
            return
        if isinstance(layer, DepthwiseLayer):
            self._depthwise(layer)
            return
        fold = self.folding.folds[layer.name]
        if layer.is_conv:
            self.regroup(fold.simd, h * w * c, layer.name)
            p = swg.SwgParams(
                in_height=h,
                in_width=w,
                channels=c,
                kernel_size=layer.kernel,
                stride=layer.stride,
                padding=layer.padding,
                simd=fold.simd,
                elem_width=width,
                elem_signed=is_signed,
            )
            self.stages.append(
                Stage(
                    "swg", f"{layer.name}_swg", p, swg.swg_schedule, _builder(swg.SlidingWindowGenerator, p), layer.name
                )
            )
        else:
            self.regroup(fold.simd, layer.in_features, layer.name)
        thresholds = layer.thresholds
        weights, binary = layer.weights, False
        w_width, w_signed = _width_for(int(weights.min()), int(weights.max()))
        if self.bipolar:
            weights, w_width, w_signed, binary, offset = _bipolar_input_unit(layer)
            if thresholds is not None:  # acc >= t  <=>  2 * hardware >= t + offset  <=>  hardware >= ceil(...)
                thresholds = -((-(thresholds + offset[:, None])) // 2)
            else:
                self.out_offset = offset
        out_bipolar = thresholds is not None and layer.out_type.bipolar
        if thresholds is None:
            out_width, out_base = 0, 0
        elif out_bipolar:
            out_width, out_base = 1, 0  # the count of the one threshold is the output bit
        else:
            out_width, out_base = layer.out_type.storage_bits, layer.out_base
        p = mvu.MvuParams(
            in_features=layer.in_features,
            out_features=layer.out_features,
            simd=fold.simd,
            pe=fold.pe,
            in_width=width,
            in_signed=is_signed,
            w_width=w_width,
            w_signed=w_signed,
            out_width=out_width,
            out_base=out_base,
            binary=binary,
        )
        self.stages.append(
            Stage(
                "mvu",
                layer.name,
                p,
                mvu.mvu_schedule,
                _builder(mvu.MatrixVectorUnit, p, weights, thresholds),
                layer.name,
            )
        )
        self.lanes = fold.pe
        self.h, self.w, self.c = layer.out_shape
        self.bipolar = out_bipolar
        if thresholds is not None:
            self.width, self.is_signed = out_width, out_base < 0
        else:
            self.width, self.is_signed = p.acc_width, True

    def _depthwise(self, layer: DepthwiseLayer) -> None:
        """A depthwise convolution or average pool: the window generator (none for a global pool: the image is
        its one window), a width converter when SIMD > 1 puts several whole pixels in a beat, the VVU."""
        h, w, c = self.h, self.w, self.c
        fold = self.folding.folds[layer.name]
        pe, simd = fold.pe, fold.simd
        positions = layer.in_features
        if layer.global_pool:
            self.regroup(simd * pe, h * w * c, layer.name)
        else:
            window_lanes = pe if simd == 1 else c
            self.regroup(window_lanes, h * w * c, layer.name)
            p = swg.SwgParams(
                in_height=h,
                in_width=w,
                channels=c,
                kernel_size=layer.kernel,
                stride=layer.stride,
                padding=layer.padding,
                simd=window_lanes,
                elem_width=self.width,
                elem_signed=self.is_signed,
            )
            self.stages.append(
                Stage(
                    "swg", f"{layer.name}_swg", p, swg.swg_schedule, _builder(swg.SlidingWindowGenerator, p), layer.name
                )
            )
            oh, ow, _ = layer.out_shape
            self.regroup(simd * pe, oh * ow * positions * c, layer.name, "window_dwc")
        weights, thresholds = layer.weights, layer.thresholds
        w_width, w_signed = _width_for(int(weights.min()), int(weights.max()))
        if thresholds is None:
            out_width, out_base = 0, 0
        else:
            out_width, out_base = layer.out_type.storage_bits, layer.out_base
        p = vvu.VvuParams(
            channels=c,
            kernel_elements=positions,
            pe=pe,
            simd=simd,
            in_width=self.width,
            in_signed=self.is_signed,
            w_width=w_width,
            w_signed=w_signed,
            out_width=out_width,
            out_base=out_base,
        )
        self.stages.append(
            Stage(
                "vvu",
                layer.name,
                p,
                vvu.vvu_schedule,
                _builder(vvu.VectorVectorUnit, p, weights, thresholds),
                layer.name,
            )
        )
        self.lanes = pe
        self.h, self.w, self.c = layer.out_shape
        if thresholds is not None:
            self.width, self.is_signed = out_width, out_base < 0
        else:
            self.width, self.is_signed = p.acc_width, True

    def _residual(self, layer: ResidualLayer) -> None:
        """duplicator -> (branch units | shortcut units) -> add, at the lanes of the fork (the first branch
        unit's SIMD when the block starts the network); each path regroups back to those lanes at its end."""
        if self.lanes is None:
            first = next((ly for ly in layer.branch if isinstance(ly, MatVecLayer)), None)
            self.regroup(
                self.folding.folds[first.name].simd if first is not None and first.is_conv else 1,
                self.h * self.w * self.c,
                layer.name,
            )
        lanes = self.lanes
        dup = branch.DupParams(
            lanes=lanes, elem_width=self.width, elem_signed=self.is_signed, frame_elements=self.h * self.w * self.c
        )
        paths = []
        for which, layers in (("a", layer.branch), ("b", layer.shortcut)):
            path = self.fork()
            for inner in layers:
                path.add(inner)
            oh, ow, oc = path.h, path.w, path.c
            path.regroup(lanes, oh * ow * oc, layer.name, f"{which}_dwc")
            paths.append(path)
        a, b = paths
        oh, ow, oc = layer.out_shape
        lo, hi = layer.sum_range
        thresholds = tuple(int(t) for t in np.clip(layer.thresholds[0], lo, hi + 1))
        add = branch.AddParams(
            lanes=lanes,
            a_width=a.width,
            a_signed=a.is_signed,
            b_width=b.width,
            b_signed=b.is_signed,
            a_shift=layer.a_shift,
            b_shift=layer.b_shift,
            thresholds=thresholds,
            out_width=layer.out_type.storage_bits,
            out_base=layer.out_base,
            frame_elements=oh * ow * oc,
        )
        plan = ResidualPlan(layer.name, dup, a.stages, b.stages, add)
        self.stages.append(
            Stage("residual", layer.name, plan, residual_schedule, _builder(ResidualUnit, plan), layer.name)
        )
        self.h, self.w, self.c = oh, ow, oc
        self.width, self.is_signed = add.out_shape.width, add.out_shape.signed


def plan_dataflow(graph: IntGraph, folding: FoldingResult, *, name: str | None = None) -> DataflowPlan:
    """Lay out the units for `graph` with `folding`, then size the FIFOs from the composed schedule."""
    first = graph.input
    layout = _Layout(folding, first.shape, *_stream_type(first.dtype), first.dtype.bipolar, None)
    for layer in graph.layers:
        layout.add(layer)
    h, w, c = layout.h, layout.w, layout.c
    plan = DataflowPlan(
        name or graph.name,
        layout.stages,
        _shape(*_stream_type(first.dtype)),
        layout.in_lanes,
        _shape(layout.width, layout.is_signed),
        layout.lanes,
        first.shape[0] * first.shape[1] * first.shape[2] // layout.in_lanes,
        h * w * c // layout.lanes,
        in_bipolar=first.dtype.bipolar,
        out_bipolar=layout.bipolar,
        out_offset=layout.out_offset,
    )
    size_fifos(plan)
    return plan


# ---------------------------------------------------------------------------------------------------------------
# A residual block: duplicator, two paths of units, add


@dataclass
class ResidualPlan:
    """The units of a residual block. Every unit of a path has a FIFO in front of it (the first one's is fed by
    the duplicator); the add has one in front of each input. The shortcut's FIFO in front of the add holds the
    beats that wait there while the branch computes: its depth comes from the composed schedule (size_fifos)."""

    name: str
    dup: branch.DupParams
    branch: list[Stage]
    shortcut: list[Stage]
    add: branch.AddParams
    a_fifo_depth: int = 0
    b_fifo_depth: int = 0

    def fifo_depths(self) -> dict:
        return {
            "branch": [s.fifo_depth for s in self.branch],
            "shortcut": [s.fifo_depth for s in self.shortcut],
            "add_a": self.a_fifo_depth,
            "add_b": self.b_fifo_depth,
        }

    def to_dict(self) -> dict:
        def stages(path):
            return [
                {
                    "kind": s.kind,
                    "name": s.name,
                    "layer": s.layer,
                    "fifo_depth": s.fifo_depth,
                    "params": s.params.to_dict(),
                }
                for s in path
            ]

        return {
            "dup": self.dup.to_dict(),
            "branch": stages(self.branch),
            "shortcut": stages(self.shortcut),
            "add": self.add.to_dict(),
            "add_a_fifo_depth": self.a_fifo_depth,
            "add_b_fifo_depth": self.b_fifo_depth,
        }


def residual_schedule(plan: ResidualPlan, offered: list[int]) -> tuple[list[int], list[int]]:
    accepted, produced, _ = residual_compose(plan, offered)
    return accepted, produced


def residual_compose(plan: ResidualPlan, offered: list[int]):
    """The block's handshakes (accepted input beats, produced output beats) composed from its units' schedule
    models, and what its FIFOs need: ({"branch": [...], "shortcut": [...], "add_a": n, "add_b": n}, inner
    needs of nested blocks). Exact while no FIFO fills, which the sizing guarantees."""
    accepted, dup_out = branch.dup_schedule(plan.dup, offered)
    ends, needs = [], {}
    for which, path in (("branch", plan.branch), ("shortcut", plan.shortcut)):
        _, produced, needed, inner = _compose(path, dup_out, fifo_first=True)
        ends.append(produced)
        needs[which] = (needed, inner)
    a_writes, b_writes = ends
    add_accepted, add_produced = branch.add_schedule(
        plan.add, [t + FIFO_LATENCY_CYCLES for t in a_writes], [t + FIFO_LATENCY_CYCLES for t in b_writes]
    )
    needs["add_a"] = _fifo_depth_needed(a_writes, add_accepted)
    needs["add_b"] = _fifo_depth_needed(b_writes, add_accepted)
    return accepted, add_produced, needs


def _apply_depths(stages: list[Stage], needed: list[int], inner: list, *, fifo_first: bool) -> None:
    # (the network's first unit has no FIFO in front of it; its depth stays at the minimum, unused)
    for stage, depth, nested in zip(stages, needed, inner):
        stage.fifo_depth = max(MIN_FIFO_DEPTH, depth)
        if nested is not None:
            plan = stage.params
            for which, path in (("branch", plan.branch), ("shortcut", plan.shortcut)):
                _apply_depths(path, *nested[which], fifo_first=True)
            plan.a_fifo_depth = max(MIN_FIFO_DEPTH, nested["add_a"])
            plan.b_fifo_depth = max(MIN_FIFO_DEPTH, nested["add_b"])


def _link(m: Module, source, sink, depth: int, name: str) -> None:
    """source stream -> a SyncFIFOBuffered of `depth` beats -> sink stream."""
    queue = fifo.SyncFIFOBuffered(width=len(source.payload.as_value()), depth=depth)
    m.submodules[name] = queue
    m.d.comb += [
        queue.w_data.eq(source.payload.as_value()),
        queue.w_en.eq(source.valid),
        source.ready.eq(queue.w_rdy),
        sink.payload.as_value().eq(queue.r_data),
        sink.valid.eq(queue.r_rdy),
        queue.r_en.eq(sink.ready),
    ]


class ResidualUnit(wiring.Component):
    """A residual block as one streaming unit: `inp` -> duplicator -> branch units and shortcut units (FIFOs in
    front of each) -> FIFOs -> add -> `out`."""

    def __init__(self, plan: ResidualPlan):
        self.plan = plan
        super().__init__(
            {
                "inp": In(stream.Signature(data.ArrayLayout(plan.dup.elem_shape, plan.dup.lanes))),
                "out": Out(stream.Signature(data.ArrayLayout(plan.add.out_shape, plan.add.lanes))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        m.submodules.dup = dup = branch.StreamDuplicator(plan.dup)
        wiring.connect(m, wiring.flipped(self.inp), dup.inp)
        ends = []
        for source, path in ((dup.out_a, plan.branch), (dup.out_b, plan.shortcut)):
            for stage in path:
                unit = stage.build()
                m.submodules[stage.name] = unit
                _link(m, source, unit.inp, stage.fifo_depth, f"{stage.name}_fifo")
                source = unit.out
            ends.append(source)
        m.submodules.add = add = branch.AddStreams(plan.add)
        _link(m, ends[0], add.inp_a, plan.a_fifo_depth, "add_a_fifo")
        _link(m, ends[1], add.inp_b, plan.b_fifo_depth, "add_b_fifo")
        wiring.connect(m, add.out, wiring.flipped(self.out))
        return m


def _builder(cls, *args):
    """`cls(*args)` deferred; a partial, so that what builds a unit can be read back (hls.units keys its
    Verilog cache on it)."""
    import functools

    return functools.partial(cls, *args)


# ---------------------------------------------------------------------------------------------------------------
# The cycle model of the whole network


@dataclass
class NetworkSchedule:
    accepted: list[int]  # input beats' handshake cycles
    produced: list[int]  # output beats' handshake cycles (always-ready sink)
    fifo_needed: list[int]  # per stage: the FIFO depth in front of it that never fills
    inner_needed: list = field(default_factory=list)  # per stage: a residual block's own FIFO needs, or None


def _compose(stages: list[Stage], writes: list[int], *, fifo_first: bool):
    """Compose the units' schedule models through the FIFOs between them. `writes`: the cycles the beats reach
    the chain (into a FIFO in front of the first unit when `fifo_first`, else offered to it directly).
    Returns (accepted at the first unit, produced by the last, FIFO depth needed per unit, nested needs)."""
    previous = list(writes)
    accepted_first = previous
    needed, inner = [0] * len(stages), [None] * len(stages)
    for index, stage in enumerate(stages):
        through_fifo = index > 0 or fifo_first
        times = [t + FIFO_LATENCY_CYCLES for t in previous] if through_fifo else previous
        if stage.kind == "residual":
            accepted, produced, inner[index] = residual_compose(stage.params, times)
        else:
            accepted, produced = stage.schedule(stage.params, times)
        if index == 0:
            accepted_first = accepted
        if through_fifo:
            needed[index] = _fifo_depth_needed(previous, accepted)
        previous = produced
    return accepted_first, previous, needed, inner


def network_schedule(plan: DataflowPlan, offered: list[int]) -> NetworkSchedule:
    """Compose the units' schedule models through the FIFOs: exact when no FIFO fills (see size_fifos)."""
    accepted, produced, needed, inner = _compose(plan.stages, offered, fifo_first=False)
    return NetworkSchedule(accepted, produced, needed, inner)


def _fifo_depth_needed(writes: list[int], reads: list[int]) -> int:
    """SyncFIFOBuffered accepts a write in cycle t while fewer than `depth` beats were written before t and
    not yet read before t: the smallest depth that accepts every write when it comes."""
    reads_sorted = np.asarray(reads)
    writes_arr = np.asarray(writes)
    written_before = np.arange(len(writes_arr))
    read_before = np.searchsorted(reads_sorted, writes_arr, side="left")
    return int((written_before - read_before).max()) + 1 if len(writes_arr) else 0


def paced_offers(plan: DataflowPlan, frames: int, interval: int) -> list[int]:
    """Input offer cycles when inference f becomes available at cycle f * interval (all its beats at once)."""
    return [f * interval for f in range(frames) for _ in range(plan.in_beats)]


def steady_interval(plan: DataflowPlan, frames: int = 4) -> int:
    """The network's initiation interval: the spacing of inferences at the output when the input never waits
    (as if every FIFO were unbounded), i.e. the bottleneck unit's rate."""
    result = network_schedule(plan, [0] * (plan.in_beats * frames))
    first_out = result.produced[:: plan.out_beats]
    return first_out[-1] - first_out[-2]


def size_fifos(plan: DataflowPlan, frames: int = 4) -> None:
    """Give each FIFO the depth that inferences arriving one per initiation interval need so that no unit ever
    waits on a full FIFO. Units upstream of the bottleneck run faster than it, so a source that floods the
    input makes them run ahead without bound: the timing model therefore paces the input at the network's
    rate, and then every FIFO's occupancy repeats from one inference to the next (checked here)."""
    for stage in plan.stages:
        stage.fifo_depth = 1 << 30  # unbounded while measuring
    interval = steady_interval(plan, frames)
    result = network_schedule(plan, paced_offers(plan, frames, interval))
    more = network_schedule(plan, paced_offers(plan, frames + 2, interval))
    if (more.fifo_needed, more.inner_needed) != (result.fifo_needed, result.inner_needed):
        raise RuntimeError(
            f"FIFO occupancy of {plan.name} keeps growing with paced inputs: {result.fifo_needed} -> {more.fifo_needed}"
        )
    _apply_depths(plan.stages, result.fifo_needed, result.inner_needed, fifo_first=False)
    plan.interval = interval


def network_cycles(plan: DataflowPlan, frames: int = 3) -> dict:
    """Latency (first input handshake to the last output handshake of that inference, inclusive), the
    initiation interval, and total cycles for `frames` inferences offered one per interval, sink always ready."""
    interval = steady_interval(plan)
    result = network_schedule(plan, paced_offers(plan, frames, interval))
    return {
        "latency_cycles": result.produced[plan.out_beats - 1] - result.accepted[0] + 1,
        "first_output_cycles": result.produced[0] - result.accepted[0],
        "initiation_interval": interval,
        "total_cycles": result.produced[-1] - result.accepted[0] + 1,
        "frames": frames,
    }


# ---------------------------------------------------------------------------------------------------------------
# The accelerator


class DataflowAccelerator(wiring.Component):
    """The whole network: `inp` takes an inference's input elements in NHWC order, `in_lanes` per beat;
    `out` gives the last layer's outputs, `out_lanes` per beat."""

    def __init__(self, plan: DataflowPlan):
        self.plan = plan
        super().__init__(
            {
                "inp": In(stream.Signature(data.ArrayLayout(plan.in_shape, plan.in_lanes))),
                "out": Out(stream.Signature(data.ArrayLayout(plan.out_shape, plan.out_lanes))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        previous = None
        for stage in self.plan.stages:
            unit = stage.build()
            m.submodules[stage.name] = unit
            if previous is None:
                wiring.connect(m, wiring.flipped(self.inp), unit.inp)
            else:
                _link(m, previous.out, unit.inp, stage.fifo_depth, f"{stage.name}_fifo")
            previous = unit
        wiring.connect(m, previous.out, wiring.flipped(self.out))
        return m


def to_verilog(plan: DataflowPlan) -> str:
    """The whole network as one Verilog text, memory contents inline (see `write_verilog` for files)."""
    from amaranth.back import verilog

    return verilog.convert(DataflowAccelerator(plan), name=plan.top_name, emit_src=False)


def write_verilog(plan: DataflowPlan, folder, min_bits: int | None = None) -> list:
    """Write `<top>.v` into `folder` with every weight and threshold memory of at least `min_bits` bits read
    from a `.hex` file beside it (flows.memfiles: yosys maps those in seconds where word-by-word `initial`
    blocks take it minutes). Returns [the Verilog, *the memory files]."""
    from pathlib import Path

    from hardwire.cache import write_text_atomic
    from hardwire.flows import memfiles

    folder = Path(folder)
    text, files = memfiles.externalize(
        to_verilog(plan), plan.top_name, memfiles.MIN_BITS if min_bits is None else min_bits
    )
    verilog_path = folder / f"{plan.top_name}.v"
    write_text_atomic(verilog_path, text)
    for name, content in files.items():
        write_text_atomic(folder / name, content)
    return [verilog_path, *(folder / name for name in files)]


def pack_inputs(plan: DataflowPlan, x: np.ndarray) -> list[list[int]]:
    """(B, H, W, C) integers -> per inference, the input beats' lane values (bipolar values as bits)."""
    flat = np.asarray(x).reshape(len(x), -1)
    if plan.in_bipolar:
        flat = (flat + 1) // 2
    return [row.reshape(-1, plan.in_lanes).tolist() for row in flat]


def unpack_outputs(plan: DataflowPlan, beats: list[list[int]], count: int) -> np.ndarray:
    """Output beats' lane values -> (count, N) integers."""
    return np.asarray(beats, dtype=np.int64).reshape(count, -1)


def encode_outputs(plan: DataflowPlan, values: np.ndarray) -> np.ndarray:
    """The golden model's last-layer integers (B, ...) -> what the output stream carries: bits for bipolar
    values, the popcount-domain accumulator (acc + offset) / 2 after a unit with a bipolar input."""
    values = np.asarray(values, dtype=np.int64)
    if plan.out_bipolar:
        return (values + 1) // 2
    if plan.out_offset is not None:
        flat = values.reshape(len(values), -1, len(plan.out_offset))
        return ((flat + plan.out_offset) // 2).reshape(values.shape)
    return values


def decode_outputs(plan: DataflowPlan, values: np.ndarray) -> np.ndarray:
    """The inverse of encode_outputs: the output stream's integers -> the network's last-layer integers."""
    values = np.asarray(values, dtype=np.int64)
    if plan.out_bipolar:
        return 2 * values - 1
    if plan.out_offset is not None:
        flat = values.reshape(len(values), -1, len(plan.out_offset))
        return (2 * flat - plan.out_offset).reshape(values.shape)
    return values
