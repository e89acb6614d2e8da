"""Vector-vector-threshold unit (VVTU): FINN's VVAU, the depthwise convolution on a window stream.

Top to bottom: the parameters, the content (weights and thresholds), the golden model, the schedule model,
the component.

Computation, per window of KK = ``kernel_elements`` positions of C = ``channels`` channels: every channel
has its own KK weights and its own dot product, ``acc[c] = sum_kk W[c, kk] * x[kk, c]`` (exact: ``acc_width``
is the narrowest signed width no operand values can overflow). With ``out_width > 0`` the output is
``out_base + count(acc[c] >= thresholds[c, t])`` over the T = 2**out_width - 1 sorted thresholds of channel c,
with ``out_width == 0`` the raw accumulator. A depthwise k x k convolution has KK = k * k and takes its windows
from the sliding-window generator (gen/swg.py); a global average pool is the same unit with unit weights and
KK = H * W taking the image stream itself (one window: the whole image, in raster order).

Stream order: the one gen/swg.py produces, position-major, ((ky, kx), c), so no reordering unit is needed. A
beat carries ``simd`` consecutive window positions of ``pe`` consecutive channels, lane ``s * pe + p`` holding
position ``kf * simd + s`` of channel ``cf * pe + p``: with ``simd == 1`` a beat is ``pe`` channels of one
position (the window generator's own beats); with ``pe == channels`` it is ``simd`` whole pixels (a width
converter in front groups them). Other (simd, pe) pairs would need the channels of one position split over
beats while several positions share one, which that order does not have: they are refused. A window is
KF * CF beats (KF = KK / simd kernel folds, CF = C / pe channel folds), channel folds inner.

Datapath: each beat is one step: per PE lane ``simd`` products and an adder tree, as in gen/mvu.py. The
CF partial sums of a window live in a rotating register file of CF words (a shift register): since channel
folds come round in order, the word at its head is always the one of the step in the accumulate stage, so
no address logic is needed. A step of the first kernel fold starts its word, one of the last kernel fold
finishes it: its sum goes to the threshold stage and then into the result FIFO as one output beat of ``pe``
channels. Output: per window CF beats, channels in order (NHWC with ``pe`` lanes).

Pipeline and back-pressure are gen/mvu.py's: weight memory read and registered, products registered, an adder
tree with a register every ADDER_LEVELS_PER_STAGE levels, the accumulate stage, (thresholds mode) one register
of comparisons, the result FIFO. A step that finishes a window's channel fold is issued only while a FIFO
entry is reserved for it (credits); the FIFO is deep enough that an always-ready sink never withholds one, so
the schedule model is exact under any pattern of input bubbles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from math import ceil

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.mvu import (
    ACCUMULATE_STAGES,
    ADDER_LEVELS_PER_STAGE,
    FIFO_LATENCY_CYCLES,
    MEMORY_READ_STAGES,
    PRODUCT_STAGES,
    THRESHOLD_STAGES,
    _in_range,
    _integers,
    _multiply,
    _pack,
    _thermometer_count,
)
from hardwire.gen.registry import Block, register

from hardwire.params import bits_for_range, int_range, is_int, product_range, require

GENERATOR_VERSION = "1"

MAX_CHANNELS = 1024
MAX_KERNEL_ELEMENTS = 4096
# Random windows whose accumulators become the standalone block's thresholds.
THRESHOLD_PROBES = 32


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class VvuParams:
    """A validated VVTU configuration. Raises ParameterError naming the bad parameter.

    ``content_seed`` only seeds the random content of the block generated on its own (registry, CLI,
    testbench); a network gives the unit its real weights and thresholds."""

    channels: int = 8
    kernel_elements: int = 9
    pe: int = 2
    simd: int = 1
    in_width: int = 4
    in_signed: bool = False
    w_width: int = 4
    w_signed: bool = True
    out_width: int = 4
    out_base: int = 0
    content_seed: int = 0

    def __post_init__(self):
        require(
            is_int(self.channels) and 1 <= self.channels <= MAX_CHANNELS,
            "channels",
            self.channels,
            f"1..{MAX_CHANNELS}",
        )
        require(
            is_int(self.kernel_elements) and 1 <= self.kernel_elements <= MAX_KERNEL_ELEMENTS,
            "kernel_elements",
            self.kernel_elements,
            f"1..{MAX_KERNEL_ELEMENTS}",
        )
        require(
            is_int(self.pe) and self.pe >= 1 and self.channels % self.pe == 0,
            "pe",
            self.pe,
            f"a divisor of channels={self.channels}",
        )
        require(
            is_int(self.simd) and self.simd >= 1 and self.kernel_elements % self.simd == 0,
            "simd",
            self.simd,
            f"a divisor of kernel_elements={self.kernel_elements}",
        )
        require(
            self.simd == 1 or self.pe == self.channels,
            "simd",
            self.simd,
            f"1 unless pe == channels={self.channels} (a beat holds whole pixels or one position's channels)",
        )
        require(is_int(self.in_width) and 1 <= self.in_width <= 16, "in_width", self.in_width, "1..16")
        require(is_int(self.w_width) and 1 <= self.w_width <= 16, "w_width", self.w_width, "1..16")
        require(isinstance(self.in_signed, bool), "in_signed", self.in_signed, "True or False")
        require(isinstance(self.w_signed, bool), "w_signed", self.w_signed, "True or False")
        require(
            is_int(self.out_width) and 0 <= self.out_width <= 8,
            "out_width",
            self.out_width,
            "0 (raw accumulator) or 1..8 (thresholds)",
        )
        require(
            is_int(self.content_seed) and self.content_seed >= 0, "content_seed", self.content_seed, "an integer >= 0"
        )
        require(is_int(self.out_base), "out_base", self.out_base, "an integer")
        if self.out_width == 0:
            require(self.out_base == 0, "out_base", self.out_base, "0 (out_width=0 outputs the raw accumulator)")
        else:
            lo, hi = int_range(self.out_width, self.out_base < 0)
            require(
                lo <= self.out_base and self.out_base + self.threshold_count <= hi,
                "out_base",
                self.out_base,
                f"out_base..out_base+{self.threshold_count} inside the {self.out_width}-bit output ({lo}..{hi})",
            )

    @classmethod
    def from_dict(cls, values: dict) -> VvuParams:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    # -- derived -----------------------------------------------------------------------------------

    @property
    def channel_folds(self) -> int:
        """CF: beats per kernel fold, and output beats per window."""
        return self.channels // self.pe

    @property
    def kernel_folds(self) -> int:
        """KF: kernel folds per window."""
        return self.kernel_elements // self.simd

    @property
    def beats_per_window(self) -> int:
        return self.kernel_folds * self.channel_folds

    @property
    def in_lanes(self) -> int:
        return self.simd * self.pe

    @property
    def thresholds_mode(self) -> bool:
        return self.out_width > 0

    @property
    def threshold_count(self) -> int:
        return (1 << self.out_width) - 1 if self.out_width else 0

    @property
    def product_range(self) -> tuple[int, int]:
        return product_range(int_range(self.in_width, self.in_signed), int_range(self.w_width, self.w_signed))

    @property
    def acc_range(self) -> tuple[int, int]:
        lo, hi = self.product_range
        return self.kernel_elements * lo, self.kernel_elements * hi

    @property
    def acc_width(self) -> int:
        return bits_for_range(*self.acc_range, True)

    @property
    def threshold_width(self) -> int:
        lo, hi = self.acc_range
        return bits_for_range(lo, hi + 1, True)

    @property
    def in_shape(self) -> Shape:
        return signed(self.in_width) if self.in_signed else unsigned(self.in_width)

    @property
    def w_shape(self) -> Shape:
        return signed(self.w_width) if self.w_signed else unsigned(self.w_width)

    @property
    def out_shape(self) -> Shape:
        if not self.thresholds_mode:
            return signed(self.acc_width)
        return signed(self.out_width) if self.out_base < 0 else unsigned(self.out_width)

    @property
    def adder_tree_stages(self) -> int:
        return (self.simd - 1).bit_length() // ADDER_LEVELS_PER_STAGE

    @property
    def accumulate_delay(self) -> int:
        """Cycles from a step's issue to the cycle its result is in the result register."""
        return MEMORY_READ_STAGES + PRODUCT_STAGES + self.adder_tree_stages + ACCUMULATE_STAGES

    @property
    def fifo_write_delay(self) -> int:
        return self.accumulate_delay + (THRESHOLD_STAGES if self.thresholds_mode else 0)

    @property
    def output_delay(self) -> int:
        """Cycles from the issue of a window's last-kernel-fold step to its output handshake."""
        return self.fifo_write_delay + FIFO_LATENCY_CYCLES

    @property
    def fifo_depth(self) -> int:
        """Result FIFO entries: the most finishing steps issued in any output_delay consecutive cycles (runs of
        CF every KF * CF cycles), + 2 for the registered credit check's look-ahead (as gen/mvu.py)."""
        period = self.beats_per_window
        in_flight = min(self.output_delay, self.channel_folds * ceil(self.output_delay / period))
        return in_flight + 2

    @property
    def top_name(self) -> str:
        sign = lambda s: "s" if s else "u"
        out = f"o{self.out_width}{sign(self.out_base < 0)}" if self.thresholds_mode else "raw"
        name = (
            f"vvu_{self.channels}c_{self.kernel_elements}k_pe{self.pe}_simd{self.simd}"
            f"_i{self.in_width}{sign(self.in_signed)}_w{self.w_width}{sign(self.w_signed)}_{out}"
        )
        if self.content_seed:
            name += f"_seed{self.content_seed}"
        return name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"acc_width": self.acc_width, "name": self.top_name}


# --------------------------------------------------------------------------------------------------
# Content


def check_content(p: VvuParams, weights, thresholds) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate weights (C, KK) and thresholds (C, T) (None in raw mode); return them as int64."""
    w = _integers("weights", weights, (p.channels, p.kernel_elements))
    _in_range("weights", w, p.w_width, p.w_signed)
    if not p.thresholds_mode:
        require(thresholds is None, "thresholds", "an array", "None (out_width=0 outputs the raw accumulator)")
        return w, None
    require(thresholds is not None, "thresholds", None, f"an array (C={p.channels}, T={p.threshold_count})")
    t = _integers("thresholds", thresholds, (p.channels, p.threshold_count))
    unsorted = np.nonzero(np.any(np.diff(t, axis=1) < 0, axis=1))[0]
    if unsorted.size:
        c = int(unsorted[0])
        require(False, f"thresholds[{c}]", t[c].tolist(), "non-decreasing along each channel (sorted)")
    return w, t


def clamp_thresholds(p: VvuParams, thresholds: np.ndarray) -> np.ndarray:
    """Thresholds clamped into acc_min..acc_max + 1 (same count for every reachable accumulator)."""
    lo, hi = p.acc_range
    return np.clip(np.asarray(thresholds, dtype=np.int64), lo, hi + 1)


def _random_content_and_probes(p: VvuParams):
    rng = np.random.default_rng([p.content_seed, p.channels, p.kernel_elements, 7])
    w_lo, w_hi = int_range(p.w_width, p.w_signed)
    x_lo, x_hi = int_range(p.in_width, p.in_signed)
    weights = rng.integers(w_lo, w_hi + 1, size=(p.channels, p.kernel_elements), dtype=np.int64)
    probes = rng.integers(x_lo, x_hi + 1, size=(THRESHOLD_PROBES, p.kernel_elements, p.channels), dtype=np.int64)
    if not p.thresholds_mode:
        return weights, None, probes
    acc = np.einsum("vkc,ck->vc", probes, weights)
    picks = rng.integers(0, THRESHOLD_PROBES, size=(p.channels, p.threshold_count))
    thresholds = np.take_along_axis(acc.T, picks, axis=1)
    lo, hi = p.acc_range
    span = max(1, hi - lo)
    for c in range(p.channels):  # some never / always reached, some at the clamp limits
        if c % 4 == 1:
            thresholds[c, 0] = lo - int(rng.integers(0, span + 1))
        elif c % 4 == 2:
            thresholds[c, -1] = hi + 1 + int(rng.integers(0, span + 1))
        elif c % 4 == 3 and p.threshold_count >= 2:
            thresholds[c, 0], thresholds[c, -1] = lo, hi + 1
    return weights, np.sort(thresholds, axis=1), probes


def vvu_random_content(p: VvuParams) -> tuple[np.ndarray, np.ndarray | None]:
    """Seeded random (weights (C, KK), thresholds (C, T) or None) for the standalone block; the thresholds are
    accumulators of `vvu_threshold_probes`, so those windows hit thresholds exactly."""
    weights, thresholds, _ = _random_content_and_probes(p)
    return weights, thresholds


def vvu_threshold_probes(p: VvuParams) -> np.ndarray:
    """(THRESHOLD_PROBES, KK, C) windows whose accumulators are the random content's thresholds."""
    return _random_content_and_probes(p)[2]


# --------------------------------------------------------------------------------------------------
# Golden model


def vvu_golden(p: VvuParams, weights, thresholds, x) -> np.ndarray:
    """(V, KK, C) windows (or (V, KK * C) in stream order) -> (V, C) int64: per channel the exact dot product
    of its window with its weights, then (thresholds mode) out_base + the thresholds it reaches."""
    w, t = check_content(p, weights, thresholds)
    x = np.asarray(x)
    if x.ndim == 2:
        x = x.reshape(len(x), p.kernel_elements, p.channels)
    x = _integers("x", x, (x.shape[0], p.kernel_elements, p.channels))
    _in_range("x", x, p.in_width, p.in_signed)
    acc = np.einsum("vkc,ck->vc", x, w)
    if t is None:
        return acc
    return p.out_base + (acc[:, :, None] >= t[None, :, :]).sum(axis=2, dtype=np.int64)


def window_beats(p: VvuParams, window: np.ndarray) -> list[list[int]]:
    """One (KK, C) window as the unit's input beats (lane s * pe + p = position kf*simd + s, channel cf*pe + p)."""
    w = np.asarray(window).reshape(p.kernel_folds, p.simd, p.channel_folds, p.pe)
    return [w[kf, :, cf, :].reshape(-1).tolist() for kf in range(p.kernel_folds) for cf in range(p.channel_folds)]


# --------------------------------------------------------------------------------------------------
# Schedule model


def vvu_schedule(p: VvuParams, offered: list[int]) -> tuple[list[int], list[int]]:
    """Exact handshake cycles (accepted input beats, produced output beats) with an always-ready sink.

    Input beat i is presented at max(offered[i], accepted[i-1] + 1) and taken at once (every beat is a step,
    and a finishing step always finds its FIFO entry with a ready sink). The steps of the last kernel fold of a
    window each give one output beat `output_delay` cycles later."""
    period, first_last = p.beats_per_window, (p.kernel_folds - 1) * p.channel_folds
    accepted: list[int] = []
    produced: list[int] = []
    for i, offer in enumerate(offered):
        offer = int(offer)
        if i and offer < offered[i - 1]:
            raise ValueError(
                f"offered[{i}]={offer} is before offered[{i - 1}]={offered[i - 1]}: offer cycles must be non-decreasing"
            )
        cycle = offer if not accepted else max(offer, accepted[-1] + 1)
        accepted.append(cycle)
        if i % period >= first_last:
            produced.append(cycle + p.output_delay)
    return accepted, produced


def vvu_cycles(p: VvuParams, frames: int = 1) -> dict:
    """Full-rate summary (a frame is one window): latency (first input to first output handshake), initiation
    interval (KF * CF) and total cycles (first input to last output, both counted)."""
    require(is_int(frames) and frames >= 1, "frames", frames, ">= 1")
    accepted, produced = vvu_schedule(p, [0] * (p.beats_per_window * max(frames, 2)))
    return {
        "latency_cycles": produced[0] - accepted[0],
        "initiation_interval": p.beats_per_window,
        "total_cycles": produced[p.channel_folds * frames - 1] - accepted[0] + 1,
        "frames": frames,
        "in_beats_per_frame": p.beats_per_window,
        "out_beats_per_frame": p.channel_folds,
    }


# --------------------------------------------------------------------------------------------------
# Component


def _adder_tree(m: Module, nodes: list, lo: int, hi: int, prefix: str):
    """Sum of `nodes` ((signal, term count) pairs), a register after every ADDER_LEVELS_PER_STAGE levels."""
    level = 0
    while len(nodes) > 1:
        level += 1
        registered = level % ADDER_LEVELS_PER_STAGE == 0
        merged = []
        for index in range(0, len(nodes) - 1, 2):
            (a, count_a), (b, count_b) = nodes[index], nodes[index + 1]
            count = count_a + count_b
            node = Signal(
                signed(bits_for_range(count * lo, count * hi, True)),
                name=f"{prefix}_tree{level}_{index // 2}",
                reset_less=True,
            )
            if registered:
                m.d.sync += node.eq(a + b)
            else:
                m.d.comb += node.eq(a + b)
            merged.append((node, count))
        if len(nodes) % 2:
            a, count = nodes[-1]
            if registered:
                node = Signal(a.shape(), name=f"{prefix}_tree{level}_{len(merged)}", reset_less=True)
                m.d.sync += node.eq(a)
                a = node
            merged.append((a, count))
        nodes = merged
    return nodes[0][0]


class VectorVectorUnit(wiring.Component):
    """The VVTU with its weights (C, KK) and thresholds (C, T) (None in raw mode) built in.

    Ports: ``inp`` (simd * pe lanes of in_width), ``out`` (pe lanes of out_width, or acc_width in raw mode)."""

    def __init__(self, p: VvuParams, weights, thresholds):
        self.p = p
        self.weights, thresholds = check_content(p, weights, thresholds)
        self.thresholds = None if thresholds is None else clamp_thresholds(p, thresholds)
        super().__init__(
            {
                "inp": In(stream.Signature(data.ArrayLayout(p.in_shape, p.in_lanes))),
                "out": Out(stream.Signature(data.ArrayLayout(p.out_shape, p.pe))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.p
        cf_count, kf_count = p.channel_folds, p.kernel_folds
        steps = p.beats_per_window

        m.submodules.result_fifo = result_fifo = fifo.SyncFIFOBuffered(
            width=Shape.cast(data.ArrayLayout(p.out_shape, p.pe)).width, depth=p.fifo_depth
        )
        m.d.comb += [
            self.out.valid.eq(result_fifo.r_rdy),
            self.out.payload.eq(result_fifo.r_data),
            result_fifo.r_en.eq(self.out.ready),
        ]
        # credits (gen/mvu.py): results promised to issued finishing steps but not yet handed out
        reserved = Signal(range(p.fifo_depth + 1))
        room = Signal(init=1)
        reserve = Signal()
        release = Signal()
        m.d.comb += release.eq(self.out.valid & self.out.ready)
        m.d.sync += [reserved.eq(reserved + reserve - release), room.eq(reserved + 2 <= p.fifo_depth)]

        # step counters: channel fold (inner), kernel fold, and the weight address (the step within a window)
        cf = Signal(range(max(cf_count, 2)))
        kf = Signal(range(max(kf_count, 2)))
        w_addr = Signal(range(max(steps, 2)))
        finishing = Signal()
        step = Signal()
        m.d.comb += [
            finishing.eq(kf == kf_count - 1),
            self.inp.ready.eq(~finishing | room),
            step.eq(self.inp.valid & self.inp.ready),
            reserve.eq(step & finishing),
        ]
        with m.If(step):
            m.d.sync += [cf.eq(Mux(cf == cf_count - 1, 0, cf + 1)), w_addr.eq(Mux(w_addr == steps - 1, 0, w_addr + 1))]
            with m.If(cf == cf_count - 1):
                m.d.sync += kf.eq(Mux(finishing, 0, kf + 1))

        meta = data.StructLayout({"valid": 1, "first": 1, "last": 1, "cf": cf.shape()})
        meta0 = Signal(meta)
        m.d.comb += [meta0.valid.eq(step), meta0.first.eq(kf == 0), meta0.last.eq(finishing), meta0.cf.eq(cf)]
        metas = [meta0]
        for stage in range(1, p.fifo_write_delay + 1):
            reg = Signal(meta, name=f"meta_s{stage}")
            m.d.sync += reg.eq(metas[-1])
            metas.append(reg)

        # the input lanes, registered twice (beside the weight memory's read and its register)
        lanes = data.ArrayLayout(p.in_shape, p.in_lanes)
        x1 = Signal(lanes, name="x_live", reset_less=True)
        x = Signal(lanes, name="x", reset_less=True)
        m.d.sync += [x1.eq(self.inp.payload), x.eq(x1)]

        acc_stage = metas[p.accumulate_delay - 1]
        results = []
        for lane in range(p.pe):
            total = self._lane_sum(m, lane, x, w_addr)
            results.append(self._accumulate(m, lane, total, acc_stage))
        if p.thresholds_mode:
            results = self._thresholds(m, results, metas)
        done = metas[p.fifo_write_delay]
        m.d.comb += [result_fifo.w_en.eq(done.valid & done.last), result_fifo.w_data.eq(Cat(*results))]
        return m

    def _lane_sum(self, m, lane: int, x, w_addr):
        """PE `lane`: its weight memory (one word of simd weights per step), simd registered products and the
        adder tree; the step's sum, valid accumulate_delay - 1 cycles after its issue."""
        p = self.p
        w_lanes = data.ArrayLayout(p.w_shape, p.simd)
        words = []
        for kf in range(p.kernel_folds):
            for cf in range(p.channel_folds):
                row = self.weights[cf * p.pe + lane]
                words.append(_pack(row[kf * p.simd : (kf + 1) * p.simd], p.w_width))
        w_read = Signal(w_lanes, name=f"pe{lane}_w_read", reset_less=True)
        if len(words) == 1:
            m.d.comb += w_read.eq(Const(words[0], Shape.cast(w_lanes).width))
        else:
            mem = memory.Memory(shape=unsigned(Shape.cast(w_lanes).width), depth=len(words), init=words)
            m.submodules[f"pe{lane}_weights"] = mem
            read = mem.read_port()
            m.d.comb += [read.addr.eq(w_addr), w_read.eq(read.data)]
        w = Signal(w_lanes, name=f"pe{lane}_w", reset_less=True)
        m.d.sync += w.eq(w_read)
        lo, hi = p.product_range
        nodes = []
        for s in range(p.simd):
            product = Signal(signed(bits_for_range(lo, hi, True)), name=f"pe{lane}_product{s}", reset_less=True)
            m.d.sync += product.eq(_multiply(x[s * p.pe + lane], w[s]))
            nodes.append((product, 1))
        return _adder_tree(m, nodes, lo, hi, f"pe{lane}")

    def _accumulate(self, m, lane: int, total, stage):
        """The rotating register file of the CF partial sums of this lane; returns the result register, which
        holds a step's new partial (or final) sum the cycle after its accumulate stage."""
        p = self.p
        acc_shape = signed(p.acc_width)
        partials = [Signal(acc_shape, name=f"pe{lane}_partial{i}", reset_less=True) for i in range(p.channel_folds)]
        updated = Signal(acc_shape, name=f"pe{lane}_updated")
        result = Signal(acc_shape, name=f"pe{lane}_acc", reset_less=True)
        m.d.comb += updated.eq(Mux(stage.first, total, partials[0] + total))
        with m.If(stage.valid):
            m.d.sync += [result.eq(updated), partials[-1].eq(updated)]
            m.d.sync += [partials[i].eq(partials[i + 1]) for i in range(p.channel_folds - 1)]
        return result

    def _thresholds(self, m, accs, metas):
        """Per PE: T comparisons of the finished sum with its channel's thresholds, registered, then counted."""
        p = self.p
        count = p.threshold_count
        t_lanes = data.ArrayLayout(signed(p.threshold_width), count)
        t_bits = Shape.cast(t_lanes).width
        levels = []
        for lane, acc in enumerate(accs):
            words = [_pack(self.thresholds[cf * p.pe + lane], p.threshold_width) for cf in range(p.channel_folds)]
            if len(words) == 1:
                thresholds = data.View(t_lanes, Const(words[0], t_bits))
            else:
                mem = memory.Memory(shape=unsigned(t_bits), depth=len(words), init=words)
                m.submodules[f"pe{lane}_thresholds"] = mem
                read = mem.read_port()
                m.d.comb += read.addr.eq(metas[p.accumulate_delay - 2].cf)
                thresholds = Signal(t_lanes, name=f"pe{lane}_thresholds", reset_less=True)
                m.d.sync += thresholds.eq(read.data)
            reached = Signal(count, name=f"pe{lane}_reached", reset_less=True)
            m.d.sync += reached.eq(Cat(*(acc >= thresholds[t] for t in range(count))))
            level = Signal(p.out_shape, name=f"pe{lane}_level")
            m.d.comb += level.eq(p.out_base + _thermometer_count([reached[t] for t in range(count)]))
            levels.append(level)
        return levels


def build_standalone(p: VvuParams) -> VectorVectorUnit:
    """The unit with `vvu_random_content(p)`: what the registry, CLI and testbench generate."""
    return VectorVectorUnit(p, *vvu_random_content(p))


register(
    Block(
        name="vvu",
        summary="FINN-style vector-vector-threshold unit (depthwise convolution, average pooling): pe channels x "
        "simd window positions per cycle",
        params=VvuParams,
        component=build_standalone,
        golden=vvu_golden,
        cycles=vvu_cycles,
        testbench="hardwire.sim.tb_vvu",
        generator_version=GENERATOR_VERSION,
    )
)
