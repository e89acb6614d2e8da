"""Matrix-vector-threshold unit (MVTU): FINN's folded MVAU, y = threshold(W @ x) on a stream.

Top to bottom: the parameters, the content (weights and thresholds: validation, clamping, seeded random
content), the golden model, the schedule model, the component.

Computation, per input vector x of K = ``in_features`` integers: ``acc[n] = sum_k W[n, k] * x[k]`` for
n < N = ``out_features``, exact (``acc_width`` is the narrowest signed width that no operand values can
overflow). Then, with ``out_width > 0``, ``out[n] = out_base + count_t(acc[n] >= thresholds[n, t])`` over the
T = 2**out_width - 1 thresholds of channel n (sorted non-decreasing); with ``out_width == 0`` the raw ``acc[n]``.

Binary mode (``binary=True``, FINN's XNOR-popcount MVU for bipolar networks): inputs and weights are 1-bit codes
of the values -1 (0) and +1 (1); a product is XNOR(x, w), 1 where the two values agree, and the accumulator is
the popcount of the agreements, ``acc[n] = sum_k (x[k] == W[n, k])``: the bipolar dot product is 2 * acc - K.
No multipliers: one XNOR gate per lane and a popcount adder tree.

Folding (FINN): ``pe`` processing elements each compute ``simd`` products per cycle. NF = N / pe neuron folds,
SF = K / simd synapse folds. Channel n belongs to PE n % pe and fold n // pe. A vector enters as SF beats of
``simd`` lanes; they are used at once for fold 0 and written to an input buffer that fold 1..NF-1 replay, so
one vector takes NF * SF cycles and vectors follow each other with no bubble. Each fold ends in one output
beat of ``pe`` lanes (beat f = channels f*pe .. f*pe + pe - 1), NF beats per vector.

Storage: per PE one weight memory (words of simd weights, depth NF * SF, synchronous read) and, with
NF > 1, one threshold memory (words of T thresholds, depth NF); the input buffer is a memory of depth SF. A
memory of depth one is a constant (or a register, for the buffer) instead.

Pipeline, from the cycle t a step (one SF slice of one fold) is issued: weight memory (and input buffer) read
in t, registered again in t + 1 (block-RAM clock-to-out is slow), simd products registered in t + 2, an adder
tree with a register every ADDER_LEVELS_PER_STAGE levels, the accumulator, then (thresholds mode) a register
of T comparisons per PE whose thermometer code is turned into a count by a binary-search multiplexer tree
(valid because the thresholds are sorted) on its way into the result FIFO.

Back-pressure: the pipeline never stalls. The last step of a fold (the one that makes an output) is issued
only while the result FIFO has a free entry reserved for it (credits, as in gen/systolic.py); the other steps
need none. The FIFO is deep enough that an always-ready sink never withholds a credit, so the schedule model
below is exact under any pattern of input bubbles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from math import ceil

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.registry import Block, register

from hardwire.params import bits_for_range, int_range, is_int, product_range, require

GENERATOR_VERSION = "1"

MAX_FEATURES = 4096
# Weight memory read (synchronous port) + its output register.
MEMORY_READ_STAGES = 2
PRODUCT_STAGES = 1
ACCUMULATE_STAGES = 1
# The T comparisons of a PE, registered; their count goes straight into the result FIFO.
THRESHOLD_STAGES = 1
# An adder-tree register after every this many levels (two adders, then a register).
ADDER_LEVELS_PER_STAGE = 2
# Products with an operand this narrow are built from LUTs (shifted partial products), wider ones use a DSP.
LUT_MULTIPLY_MAX_WIDTH = 4
# A SyncFIFOBuffered entry written at the end of cycle t is handed out (handshake) in cycle t + 2.
FIFO_LATENCY_CYCLES = 2


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class MvuParams:
    """A validated MVTU configuration. Raises ParameterError naming the bad parameter.

    ``content_seed`` only seeds the random content used when the block is generated on its own (registry, CLI,
    testbench); a network gives the unit its real weights and thresholds instead.
    """

    in_features: int = 16
    out_features: int = 8
    simd: int = 4
    pe: int = 2
    in_width: int = 4
    in_signed: bool = False
    w_width: int = 4
    w_signed: bool = True
    out_width: int = 4
    out_base: int = 0
    binary: bool = False  # XNOR-popcount: 1-bit unsigned codes of -1/+1 for inputs and weights
    content_seed: int = 0  # not `seed`: the CLI's `sim` command has its own --seed (of the test vectors)

    def __post_init__(self):
        for name in ("in_features", "out_features"):
            value = getattr(self, name)
            require(is_int(value) and 1 <= value <= MAX_FEATURES, name, value, f"1..{MAX_FEATURES}")
        require(
            is_int(self.simd) and self.simd >= 1 and self.in_features % self.simd == 0,
            "simd",
            self.simd,
            f"a divisor of in_features={self.in_features}",
        )
        require(
            is_int(self.pe) and self.pe >= 1 and self.out_features % self.pe == 0,
            "pe",
            self.pe,
            f"a divisor of out_features={self.out_features}",
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
        require(isinstance(self.binary, bool), "binary", self.binary, "True or False")
        if self.binary:
            require(
                (self.in_width, self.in_signed, self.w_width, self.w_signed) == (1, False, 1, False),
                "binary",
                self.binary,
                "False unless in_width=w_width=1 and in_signed=w_signed=False (1-bit codes of -1/+1)",
            )
        if self.out_width == 0:
            require(self.out_base == 0, "out_base", self.out_base, "0 (out_width=0 outputs the raw accumulator)")
        else:
            lo, hi = int_range(self.out_width, self.out_base < 0)
            require(
                lo <= self.out_base and self.out_base + self.threshold_count <= hi,
                "out_base",
                self.out_base,
                f"out_base..out_base+{self.threshold_count} inside the {self.out_width}-bit output "
                f"({lo}..{hi}): 0 (unsigned) or {-(1 << (self.out_width - 1))} (signed)",
            )

    @classmethod
    def from_dict(cls, values: dict) -> MvuParams:
        """The inverse of `to_dict` (derived entries are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    # -- derived -----------------------------------------------------------------------------------

    @property
    def neuron_folds(self) -> int:
        """NF: output beats per vector."""
        return self.out_features // self.pe

    @property
    def synapse_folds(self) -> int:
        """SF: input beats per vector."""
        return self.in_features // self.simd

    @property
    def thresholds_mode(self) -> bool:
        return self.out_width > 0

    @property
    def threshold_count(self) -> int:
        """T thresholds per channel (0 in raw mode)."""
        return (1 << self.out_width) - 1 if self.out_width else 0

    @property
    def product_range(self) -> tuple[int, int]:
        if self.binary:
            return 0, 1  # XNOR of two bits
        return product_range(int_range(self.in_width, self.in_signed), int_range(self.w_width, self.w_signed))

    @property
    def acc_range(self) -> tuple[int, int]:
        """Every value a K-deep dot product of in-range operands can take lies in acc_min..acc_max."""
        lo, hi = self.product_range
        return self.in_features * lo, self.in_features * hi

    @property
    def acc_width(self) -> int:
        """Narrowest signed width holding acc_range: the accumulator never overflows."""
        return bits_for_range(*self.acc_range, True)

    @property
    def threshold_width(self) -> int:
        """Thresholds are clamped into acc_min..acc_max + 1 and stored signed at this width."""
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
    def adder_tree_levels(self) -> int:
        return (self.simd - 1).bit_length()

    @property
    def adder_tree_stages(self) -> int:
        """Registers inside the adder tree (the last levels, fewer than ADDER_LEVELS_PER_STAGE, feed the
        accumulator's adder directly)."""
        return self.adder_tree_levels // ADDER_LEVELS_PER_STAGE

    @property
    def accumulate_delay(self) -> int:
        """Cycles from a step's issue to the cycle its sum is in the accumulator register."""
        return MEMORY_READ_STAGES + PRODUCT_STAGES + self.adder_tree_stages + ACCUMULATE_STAGES

    @property
    def fifo_write_delay(self) -> int:
        """Cycles from the issue of a fold's last step to the cycle its result is written into the FIFO."""
        return self.accumulate_delay + (THRESHOLD_STAGES if self.thresholds_mode else 0)

    @property
    def output_delay(self) -> int:
        """Cycles from the issue of a fold's last step to its output handshake (always-ready sink)."""
        return self.fifo_write_delay + FIFO_LATENCY_CYCLES

    @property
    def fifo_depth(self) -> int:
        """Result FIFO entries. Fold ends are >= SF cycles apart, so at most ceil(output_delay / SF) results
        are in flight with an always-ready sink; + 2 since the registered credit check looks one cycle
        ahead and a full FIFO must still take the result in flight."""
        return ceil(self.output_delay / self.synapse_folds) + 2

    @property
    def top_name(self) -> str:
        sign = lambda s: "s" if s else "u"
        out = f"o{self.out_width}{sign(self.out_base < 0)}" if self.thresholds_mode else "raw"
        name = (
            f"mvu_{self.in_features}x{self.out_features}_simd{self.simd}_pe{self.pe}"
            f"_i{self.in_width}{sign(self.in_signed)}_w{self.w_width}{sign(self.w_signed)}_{out}"
        )
        if self.binary:
            name += "_xnor"
        if self.content_seed != 0:
            # the standalone block's random content changes with the seed, and so does its hardware
            name += f"_seed{self.content_seed}"
        return name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"acc_width": self.acc_width, "name": self.top_name}


# --------------------------------------------------------------------------------------------------
# Content: weights and thresholds


def _integers(name: str, values, shape: tuple[int, ...]) -> np.ndarray:
    """`values` as an int64 array of `shape`; integral floats are accepted, anything else is an error."""
    array = np.asarray(values)
    require(array.shape == shape, f"{name} shape", array.shape, f"{shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        require(
            np.issubdtype(array.dtype, np.floating)
            and np.all(np.isfinite(array))
            and np.array_equal(array, np.round(array)),
            f"{name} values",
            array.dtype,
            "integers",
        )
    return array.astype(np.int64)


def _in_range(name: str, values: np.ndarray, width: int, is_signed: bool) -> None:
    lo, hi = int_range(width, is_signed)
    if values.size and (values.min() < lo or values.max() > hi):
        bad = values[(values < lo) | (values > hi)][0]
        require(False, f"{name} values", int(bad), f"{lo}..{hi} ({width}-bit {'signed' if is_signed else 'unsigned'})")


def check_content(p: MvuParams, weights, thresholds) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate weights (N, K) and thresholds (N, T) (None in raw mode); return them as int64."""
    w = _integers("weights", weights, (p.out_features, p.in_features))
    _in_range("weights", w, p.w_width, p.w_signed)
    if not p.thresholds_mode:
        require(thresholds is None, "thresholds", "an array", "None (out_width=0 outputs the raw accumulator)")
        return w, None
    require(thresholds is not None, "thresholds", None, f"an array (N={p.out_features}, T={p.threshold_count})")
    t = _integers("thresholds", thresholds, (p.out_features, p.threshold_count))
    unsorted = np.nonzero(np.any(np.diff(t, axis=1) < 0, axis=1))[0]
    if unsorted.size:
        n = int(unsorted[0])
        require(False, f"thresholds[{n}]", t[n].tolist(), "non-decreasing along each channel (sorted)")
    return w, t


def clamp_thresholds(p: MvuParams, thresholds: np.ndarray) -> np.ndarray:
    """Thresholds clamped into acc_min..acc_max + 1: the same count for every reachable accumulator (a
    threshold <= acc_min is always reached, one > acc_max never), stored in `threshold_width` bits."""
    lo, hi = p.acc_range
    return np.clip(np.asarray(thresholds, dtype=np.int64), lo, hi + 1)


def _random_content_and_probes(p: MvuParams):
    rng = np.random.default_rng([p.content_seed, p.in_features, p.out_features])
    w_lo, w_hi = int_range(p.w_width, p.w_signed)
    x_lo, x_hi = int_range(p.in_width, p.in_signed)
    weights = rng.integers(w_lo, w_hi + 1, size=(p.out_features, p.in_features), dtype=np.int64)
    probes = rng.integers(x_lo, x_hi + 1, size=(THRESHOLD_PROBES, p.in_features), dtype=np.int64)
    if not p.thresholds_mode:
        return weights, None, probes
    count = p.threshold_count
    acc = _dot(p, probes, weights)  # (P, N): accumulator values really reached
    picks = rng.integers(0, THRESHOLD_PROBES, size=(p.out_features, count))
    thresholds = np.take_along_axis(acc.T, picks, axis=1)
    lo, hi = p.acc_range
    # some channels get thresholds outside the reachable range: "always" (<= acc_min), "never" (> acc_max)
    # and the clamp limits themselves, so that the clamping is exercised
    span = max(1, hi - lo)
    for n in range(p.out_features):
        if n % 4 == 1:
            thresholds[n, 0] = lo - int(rng.integers(0, span + 1))
        elif n % 4 == 2:
            thresholds[n, -1] = hi + 1 + int(rng.integers(0, span + 1))
        elif n % 4 == 3 and count >= 2:
            thresholds[n, 0], thresholds[n, -1] = lo, hi + 1
    return weights, np.sort(thresholds, axis=1), probes


# Random probe vectors whose accumulators become the random content's thresholds.
THRESHOLD_PROBES = 32


def mvu_random_content(p: MvuParams) -> tuple[np.ndarray, np.ndarray | None]:
    """Seeded random (weights (N, K), thresholds (N, T) or None) for a standalone block. The thresholds are
    accumulator values of THRESHOLD_PROBES random input vectors (`mvu_threshold_probes`), so random inputs
    spread over every output level and those vectors hit thresholds exactly; a few lie outside the
    reachable range."""
    weights, thresholds, _ = _random_content_and_probes(p)
    return weights, thresholds


def mvu_threshold_probes(p: MvuParams) -> np.ndarray:
    """The (THRESHOLD_PROBES, K) input vectors whose accumulators are `mvu_random_content`'s thresholds: each
    of them makes acc[n] equal to some threshold of channel n exactly (the >= boundary)."""
    return _random_content_and_probes(p)[2]


# --------------------------------------------------------------------------------------------------
# Golden model


def _dot(p: MvuParams, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(V, K) x (N, K) -> (V, N) accumulators: the integer dot product, or in binary mode the XNOR popcount."""
    if p.binary:
        return (x[:, None, :] == w[None, :, :]).sum(axis=2, dtype=np.int64)
    return x @ w.T


def mvu_golden(p: MvuParams, weights, thresholds, x) -> np.ndarray:
    """(V, K) input vectors -> (V, N) outputs, int64: the exact matrix product, then (thresholds mode)
    out_base + the number of thresholds each accumulator reaches."""
    w, t = check_content(p, weights, thresholds)
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    x = _integers("x", x, (x.shape[0], p.in_features))
    _in_range("x", x, p.in_width, p.in_signed)
    acc = _dot(p, x, w)
    if t is None:
        return acc
    return p.out_base + (acc[:, :, None] >= t[None, :, :]).sum(axis=2, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# Schedule model


def mvu_schedule(p: MvuParams, offered: list[int]) -> tuple[list[int], list[int]]:
    """Exact handshake cycles (accepted input beats, produced output beats) with an always-ready sink.

    Input beat i is presented at max(offered[i], accepted[i-1] + 1). The unit takes input only during fold 0
    of a vector (one beat per cycle, no other condition); folds 1..NF-1 then run one step per cycle from the
    buffer, and the next vector's first beat is taken the cycle after. Fold f's output is handed out
    `output_delay` cycles after its last step. Any number of vectors; a trailing partial vector is accepted
    but produces nothing yet."""
    sf_count, nf_count, delay = p.synapse_folds, p.neuron_folds, p.output_delay
    accepted: list[int] = []
    produced: list[int] = []
    free = None  # first cycle the unit is back in fold 0 after the previous vector
    for i, offer in enumerate(offered):
        offer = int(offer)
        if i and offer < offered[i - 1]:
            raise ValueError(
                f"offered[{i}]={offer} is before offered[{i - 1}]={offered[i - 1]}: offer cycles must be non-decreasing"
            )
        cycle = offer if not accepted else max(offer, accepted[-1] + 1)
        if free is not None:
            cycle = max(cycle, free)
        accepted.append(cycle)
        if i % sf_count == sf_count - 1:
            produced.extend(cycle + f * sf_count + delay for f in range(nf_count))
            free = cycle + (nf_count - 1) * sf_count + 1
    return accepted, produced


def mvu_cycles(p: MvuParams, frames: int = 1) -> dict:
    """Full-rate summary from the schedule: latency (first input to first output handshake), initiation
    interval (cycles between the first input beats of consecutive vectors; NF * SF) and total cycles (first
    input to last output handshake, both counted, as sim.streams.transfer_span_cycles measures)."""
    require(is_int(frames) and frames >= 1, "frames", frames, ">= 1")
    accepted, produced = mvu_schedule(p, [0] * (p.synapse_folds * max(frames, 2)))
    starts = accepted[:: p.synapse_folds]
    last_out = produced[p.neuron_folds * frames - 1]
    return {
        "latency_cycles": produced[0] - accepted[0],
        "initiation_interval": starts[1] - starts[0],
        "total_cycles": last_out - accepted[0] + 1,
        "frames": frames,
        "in_beats_per_frame": p.synapse_folds,
        "out_beats_per_frame": p.neuron_folds,
    }


# --------------------------------------------------------------------------------------------------
# Component


def _pack(values, width: int) -> int:
    """Integers into one word, element 0 at the LSB (two's complement per element)."""
    word = 0
    for index, value in enumerate(values):
        word |= (int(value) & ((1 << width) - 1)) << (index * width)
    return word


class MatrixVectorUnit(wiring.Component):
    """The folded MVTU with its weights (N, K) and thresholds (N, T), or None in raw mode, built in.

    Ports: ``inp`` (simd lanes of in_width), ``out`` (pe lanes of out_width, or of acc_width in raw mode).
    """

    def __init__(self, p: MvuParams, weights, thresholds):
        self.p = p
        self.weights, thresholds = check_content(p, weights, thresholds)
        self.thresholds = None if thresholds is None else clamp_thresholds(p, thresholds)
        super().__init__(
            {
                "inp": In(stream.Signature(data.ArrayLayout(p.in_shape, p.simd))),
                "out": Out(stream.Signature(data.ArrayLayout(p.out_shape, p.pe))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.p
        sf_count, nf_count = p.synapse_folds, p.neuron_folds
        out_lanes = data.ArrayLayout(p.out_shape, p.pe)

        m.submodules.result_fifo = result_fifo = fifo.SyncFIFOBuffered(
            width=Shape.cast(out_lanes).width, depth=p.fifo_depth
        )
        m.d.comb += [
            self.out.valid.eq(result_fifo.r_rdy),
            self.out.payload.eq(result_fifo.r_data),
            result_fifo.r_en.eq(self.out.ready),
        ]

        # Credits: results promised to issued fold ends but not yet handed out. `room` is registered and
        # assumes the current cycle reserves one as well.
        reserved = Signal(range(p.fifo_depth + 1))
        room = Signal(init=1)
        reserve = Signal()
        release = Signal()
        m.d.comb += release.eq(self.out.valid & self.out.ready)
        m.d.sync += [reserved.eq(reserved + reserve - release), room.eq(reserved + 2 <= p.fifo_depth)]

        # Fold counters; a step is one SF slice of one fold. Fold 0 takes its slice from the input stream.
        sf = Signal(range(max(sf_count, 2)))
        nf = Signal(range(max(nf_count, 2)))
        w_addr = Signal(range(max(sf_count * nf_count, 2)))
        fold_end = Signal()
        live = Signal()
        step = Signal()
        m.d.comb += [
            fold_end.eq(sf == sf_count - 1),
            live.eq(nf == 0),
            self.inp.ready.eq(live & (~fold_end | room)),
            step.eq(Mux(live, self.inp.valid, 1) & (~fold_end | room)),
            reserve.eq(step & fold_end),
        ]
        with m.If(step):
            m.d.sync += [
                sf.eq(Mux(fold_end, 0, sf + 1)),
                w_addr.eq(Mux(w_addr == sf_count * nf_count - 1, 0, w_addr + 1)),
            ]
            with m.If(fold_end):
                m.d.sync += nf.eq(Mux(nf == nf_count - 1, 0, nf + 1))

        # Step metadata in a delay line: stage k reads the copy of the step issued k cycles earlier.
        meta = data.StructLayout({"valid": 1, "first": 1, "last": 1, "live": 1, "nf": nf.shape()})
        meta0 = Signal(meta)
        m.d.comb += [
            meta0.valid.eq(step),
            meta0.first.eq(sf == 0),
            meta0.last.eq(fold_end),
            meta0.live.eq(live),
            meta0.nf.eq(nf),
        ]
        metas = [meta0]
        for stage in range(1, p.fifo_write_delay + 1):
            reg = Signal(meta, name=f"meta_s{stage}")
            m.d.sync += reg.eq(metas[-1])
            metas.append(reg)

        x = self._input_path(m, step, live, sf, metas[1])
        sums = [self._pe_datapath(m, lane, x, w_addr, metas) for lane in range(p.pe)]

        # Accumulators: sums[lane] is ready in cycle accumulate_delay - 1 after the issue.
        acc_shape = signed(p.acc_width)
        acc_stage = metas[p.accumulate_delay - 1]
        accs = []
        for lane in range(p.pe):
            acc = Signal(acc_shape, name=f"pe{lane}_acc", reset_less=True)
            with m.If(acc_stage.valid):
                m.d.sync += acc.eq(Mux(acc_stage.first, sums[lane], acc + sums[lane]))
            accs.append(acc)

        done = metas[p.fifo_write_delay]
        if p.thresholds_mode:
            results = self._thresholds(m, accs, metas)
        else:
            results = accs
        m.d.comb += [
            result_fifo.w_en.eq(done.valid & done.last),
            result_fifo.w_data.eq(Cat(*results)),
        ]
        return m

    def _input_path(self, m, step, live, sf, meta1):
        """The simd input lanes of a step, registered, MEMORY_READ_STAGES cycles after its issue: straight
        from the stream in fold 0 (and written into the input buffer), from the buffer in later folds."""
        p = self.p
        lanes = data.ArrayLayout(p.in_shape, p.simd)
        x_live = Signal(lanes, name="x_live", reset_less=True)
        m.d.sync += x_live.eq(self.inp.payload)
        x = Signal(lanes, name="x", reset_less=True)
        if p.neuron_folds == 1:
            m.d.sync += x.eq(x_live)
            return x
        if p.synapse_folds == 1:
            buffered = Signal(lanes, name="x_buffer", reset_less=True)
            with m.If(step & live):
                m.d.sync += buffered.eq(self.inp.payload)
            buffered_value = buffered.as_value()
        else:
            m.submodules.input_buffer = buffer = memory.Memory(
                shape=unsigned(Shape.cast(lanes).width), depth=p.synapse_folds, init=[]
            )
            write = buffer.write_port()
            read = buffer.read_port()
            m.d.comb += [write.addr.eq(sf), write.data.eq(self.inp.payload), write.en.eq(step & live), read.addr.eq(sf)]
            buffered_value = read.data
        m.d.sync += x.eq(Mux(meta1.live, x_live.as_value(), buffered_value))
        return x

    def _pe_datapath(self, m, lane: int, x, w_addr, metas):
        """PE `lane`: its weight memory, simd registered products and the adder tree; returns the sum of a
        step, valid accumulate_delay - 1 cycles after the issue."""
        p = self.p
        sf_count, nf_count = p.synapse_folds, p.neuron_folds
        w_lanes = data.ArrayLayout(p.w_shape, p.simd)
        words = []
        for nf in range(nf_count):
            row = self.weights[nf * p.pe + lane]
            for sf in range(sf_count):
                words.append(_pack(row[sf * p.simd : (sf + 1) * p.simd], p.w_width))
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
        for j in range(p.simd):
            product = Signal(signed(bits_for_range(lo, hi, True)), name=f"pe{lane}_product{j}", reset_less=True)
            m.d.sync += product.eq(~(x[j] ^ w[j]) if p.binary else _multiply(x[j], w[j]))
            nodes.append((product, 1))
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
                    name=f"pe{lane}_tree{level}_{index // 2}",
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
                    node = Signal(a.shape(), name=f"pe{lane}_tree{level}_{len(merged)}", reset_less=True)
                    m.d.sync += node.eq(a)
                    a = node
                merged.append((a, count))
            nodes = merged
        return nodes[0][0]

    def _thresholds(self, m, accs, metas):
        """Per PE: T comparisons of the accumulator with its fold's thresholds, registered, then counted."""
        p = self.p
        count = p.threshold_count
        t_lanes = data.ArrayLayout(signed(p.threshold_width), count)
        t_bits = Shape.cast(t_lanes).width
        results = []
        for lane, acc in enumerate(accs):
            words = [_pack(self.thresholds[nf * p.pe + lane], p.threshold_width) for nf in range(p.neuron_folds)]
            if len(words) == 1:
                thresholds = data.View(t_lanes, Const(words[0], t_bits))
            else:
                # read in the cycle before the accumulator's, registered in the accumulator's cycle
                mem = memory.Memory(shape=unsigned(t_bits), depth=len(words), init=words)
                m.submodules[f"pe{lane}_thresholds"] = mem
                read = mem.read_port()
                m.d.comb += read.addr.eq(metas[p.accumulate_delay - 2].nf)
                thresholds = Signal(t_lanes, name=f"pe{lane}_thresholds", reset_less=True)
                m.d.sync += thresholds.eq(read.data)
            reached = Signal(count, name=f"pe{lane}_reached", reset_less=True)
            m.d.sync += reached.eq(Cat(*(acc >= thresholds[t] for t in range(count))))
            level = Signal(p.out_shape, name=f"pe{lane}_level")
            m.d.comb += level.eq(p.out_base + _thermometer_count([reached[t] for t in range(count)]))
            results.append(level)
        return results


def _multiply(a, b):
    """a * b. With an operand of at most LUT_MULTIPLY_MAX_WIDTH bits, written as that operand's shifted
    partial products: synthesis then builds a few LUTs and a carry chain instead of spending a whole DSP block
    on it (yosys maps every $mul of 2 x 2 bits or more to a MULT18X18D on ECP5), as FINN does for low-precision
    layers. The most significant bit of a signed operand weighs -2**(n-1)."""
    narrow, wide = (a, b) if len(a) <= len(b) else (b, a)
    if len(narrow) > LUT_MULTIPLY_MAX_WIDTH:
        return a * b
    terms = [Mux(narrow[bit], wide << bit, 0) for bit in range(len(narrow))]
    if narrow.shape().signed:
        top = terms.pop()
        return sum(terms[1:], terms[0]) - top if terms else -top
    return sum(terms[1:], terms[0])


def _thermometer_count(bits: list):
    """The number of ones in a thermometer code (bits[t] = 1 exactly for t < count) of 2**k - 1 bits, as a
    k-bit value: a binary search, one 2:1 multiplexer level per result bit below the MSB."""
    if len(bits) == 1:
        return bits[0]
    middle = len(bits) // 2
    upper = bits[middle]
    low = Mux(upper, _thermometer_count(bits[middle + 1 :]), _thermometer_count(bits[:middle]))
    return Cat(low, upper)


def build_standalone(p: MvuParams) -> MatrixVectorUnit:
    """The unit with `mvu_random_content(p)`: what the registry, CLI and testbench generate."""
    return MatrixVectorUnit(p, *mvu_random_content(p))


register(
    Block(
        name="mvu",
        summary="FINN-style folded matrix-vector-threshold unit (pe x simd), weights and thresholds on chip",
        params=MvuParams,
        component=build_standalone,
        golden=mvu_golden,
        cycles=mvu_cycles,
        testbench="hardwire.sim.tb_mvu",
        generator_version=GENERATOR_VERSION,
    )
)
