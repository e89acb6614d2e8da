"""Branching dataflow: a stream duplicator (one stream -> two identical ones) and an elementwise add of two
integer streams with scale alignment and thresholds (two streams -> one), the units of a residual block.

Top to bottom per block: the parameters, the golden model, the schedule (exact timing) model, the component.

* ``dup``: one register stage with a valid flag per output. An input beat is taken when both outputs are
  empty or leave in that cycle, so with always-ready sinks it never stalls and each beat leaves on both
  outputs the cycle after it was taken (the network sizes the FIFOs behind it so that they never fill).
* ``addstreams``: one register stage taking a beat from both inputs in the same cycle. Per lane the sum
  ``(a << a_shift) + (b << b_shift)`` puts the two integer streams on one scale (their scales differ by
  powers of two), and with thresholds the output is ``out_base + count(sum >= thresholds)`` (one set for the
  whole tensor: the activation quantizer after a residual add is per tensor), or the raw sum without.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.registry import Block, register

from hardwire.params import bits_for_range, int_range, is_int, require

GENERATOR_VERSION = "1"
MAX_LANES = 256
MAX_SHIFT = 16
MAX_THRESHOLDS = 255


def _check_stream(name: str, width, is_signed) -> None:
    require(is_int(width) and 1 <= width <= 32, f"{name}_width", width, "1..32")
    require(isinstance(is_signed, bool), f"{name}_signed", is_signed, "True or False")


def _check_frame(p) -> None:
    require(is_int(p.lanes) and 1 <= p.lanes <= MAX_LANES, "lanes", p.lanes, f"1..{MAX_LANES}")
    require(
        is_int(p.frame_elements) and 1 <= p.frame_elements <= 1 << 24, "frame_elements", p.frame_elements, "1..16777216"
    )
    require(p.frame_elements % p.lanes == 0, "frame_elements", p.frame_elements, f"a multiple of lanes={p.lanes}")


def _check_values(values: np.ndarray, width: int, is_signed: bool, what: str) -> None:
    lo, hi = int_range(width, is_signed)
    require(
        values.size == 0 or (values.min() >= lo and values.max() <= hi),
        what,
        (int(values.min()), int(values.max())),
        f"{lo}..{hi}",
    )


def _presented(offered: list[int], index: int, accepted: list[int]) -> int:
    return offered[index] if index == 0 else max(offered[index], accepted[index - 1] + 1)


# --------------------------------------------------------------------------------------------------
# Duplicator


@dataclass(frozen=True)
class DupParams:
    """A validated stream duplicator. Raises ParameterError naming the bad parameter."""

    lanes: int = 4
    elem_width: int = 4
    elem_signed: bool = True
    frame_elements: int = 16

    def __post_init__(self):
        _check_stream("elem", self.elem_width, self.elem_signed)
        _check_frame(self)

    @property
    def elem_shape(self):
        return signed(self.elem_width) if self.elem_signed else unsigned(self.elem_width)

    @property
    def beats(self) -> int:
        return self.frame_elements // self.lanes

    @property
    def top_name(self) -> str:
        return f"dup_{self.lanes}x{self.elem_width}{'s' if self.elem_signed else 'u'}"

    def to_dict(self) -> dict:
        return {
            "lanes": self.lanes,
            "elem_width": self.elem_width,
            "elem_signed": self.elem_signed,
            "frame_elements": self.frame_elements,
        }


def dup_golden(p: DupParams, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame (stream order) -> the two output streams' beats [beats, lanes], each the input unchanged."""
    x = np.asarray(frame, dtype=np.int64).reshape(-1)
    require(x.size == p.frame_elements, "frame size", x.size, f"frame_elements={p.frame_elements}")
    _check_values(x, p.elem_width, p.elem_signed, "element values")
    beats = x.reshape(p.beats, p.lanes)
    return beats, beats.copy()


def dup_schedule(p: DupParams, offered: list[int]) -> tuple[list[int], list[int]]:
    """(accepted per input beat, produced per output beat on each output) with always-ready sinks: a register
    stage that never stalls; both outputs carry each beat the cycle after it was taken."""
    accepted: list[int] = []
    for i in range(len(offered)):
        accepted.append(_presented(offered, i, accepted))
    return accepted, [t + 1 for t in accepted]


def dup_cycles(p: DupParams, frames: int = 1) -> dict:
    require(is_int(frames) and frames >= 1, "frames", frames, ">= 1")
    accepted, produced = dup_schedule(p, [0] * (frames * p.beats))
    return {
        "latency_cycles": produced[0] - accepted[0],
        "initiation_interval": p.beats,
        "total_cycles": produced[-1] - accepted[0] + 1,
        "buffer_bits": p.lanes * p.elem_width,
    }


class StreamDuplicator(wiring.Component):
    """`inp` -> `out_a` and `out_b`, every beat on both; a beat is taken once both outputs can hold it."""

    def __init__(self, p: DupParams):
        self.p = p
        layout = data.ArrayLayout(p.elem_shape, p.lanes)
        super().__init__(
            {
                "inp": In(stream.Signature(layout)),
                "out_a": Out(stream.Signature(layout)),
                "out_b": Out(stream.Signature(layout)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        inp, out_a, out_b = self.inp, self.out_a, self.out_b
        valid_a = Signal(name="valid_a")
        valid_b = Signal(name="valid_b")
        held = Signal(self.p.lanes * self.p.elem_width, name="held", reset_less=True)
        m.d.comb += [
            out_a.valid.eq(valid_a),
            out_b.valid.eq(valid_b),
            out_a.payload.eq(held),
            out_b.payload.eq(held),
            inp.ready.eq((~valid_a | out_a.ready) & (~valid_b | out_b.ready)),
        ]
        with m.If(inp.ready):
            m.d.sync += [valid_a.eq(inp.valid), valid_b.eq(inp.valid), held.eq(inp.payload)]
        with m.Else():
            # one output still waits: the other one empties as soon as its sink takes the beat
            with m.If(out_a.ready):
                m.d.sync += valid_a.eq(0)
            with m.If(out_b.ready):
                m.d.sync += valid_b.eq(0)
        return m


register(
    Block(
        name="dup",
        summary="stream duplicator: every beat of one stream on two output streams (the fork of a residual block)",
        params=DupParams,
        component=StreamDuplicator,
        golden=dup_golden,
        cycles=dup_cycles,
        testbench="hardwire.sim.tb_branch",
        generator_version=GENERATOR_VERSION,
    )
)


# --------------------------------------------------------------------------------------------------
# Elementwise add


@dataclass(frozen=True)
class AddParams:
    """A validated elementwise add of streams a and b: per lane (a << a_shift) + (b << b_shift), then with
    `thresholds` (ascending) out_base + the count of thresholds the sum reaches in `out_width` bits, without
    them the raw sum. Raises ParameterError naming the bad parameter."""

    lanes: int = 4
    a_width: int = 4
    a_signed: bool = False
    b_width: int = 4
    b_signed: bool = True
    a_shift: int = 0
    b_shift: int = 0
    thresholds: tuple[int, ...] = ()
    out_width: int = 0
    out_base: int = 0
    frame_elements: int = 16

    def __post_init__(self):
        _check_stream("a", self.a_width, self.a_signed)
        _check_stream("b", self.b_width, self.b_signed)
        for name in ("a_shift", "b_shift"):
            value = getattr(self, name)
            require(is_int(value) and 0 <= value <= MAX_SHIFT, name, value, f"0..{MAX_SHIFT}")
        _check_frame(self)
        if isinstance(self.thresholds, list):  # from JSON (a config or a report)
            object.__setattr__(self, "thresholds", tuple(self.thresholds))
        t = self.thresholds
        require(
            isinstance(t, tuple) and all(is_int(v) for v in t) and len(t) <= MAX_THRESHOLDS,
            "thresholds",
            t,
            f"a tuple of at most {MAX_THRESHOLDS} integers",
        )
        require(all(a <= b for a, b in zip(t, t[1:])), "thresholds", t, "ascending")
        if not t:
            require(
                self.out_width == 0 and self.out_base == 0,
                "out_width",
                self.out_width,
                "0 (with out_base 0) for a raw sum without thresholds",
            )
            return
        require(is_int(self.out_width) and 1 <= self.out_width <= 16, "out_width", self.out_width, "1..16")
        lo, hi = int_range(self.out_width, self.out_base < 0)
        require(
            is_int(self.out_base) and lo <= self.out_base and self.out_base + len(t) <= hi,
            "out_base",
            self.out_base,
            f"{lo}..{hi - len(t)} (base + {len(t)} thresholds in {self.out_width} bits)",
        )

    @property
    def sum_range(self) -> tuple[int, int]:
        a_lo, a_hi = int_range(self.a_width, self.a_signed)
        b_lo, b_hi = int_range(self.b_width, self.b_signed)
        return (a_lo << self.a_shift) + (b_lo << self.b_shift), (a_hi << self.a_shift) + (b_hi << self.b_shift)

    @property
    def sum_shape(self):
        lo, hi = self.sum_range
        is_signed = lo < 0
        return signed(bits_for_range(lo, hi, True)) if is_signed else unsigned(bits_for_range(lo, hi, False))

    @property
    def out_shape(self):
        if not self.thresholds:
            return self.sum_shape
        return signed(self.out_width) if self.out_base < 0 else unsigned(self.out_width)

    @property
    def beats(self) -> int:
        return self.frame_elements // self.lanes

    @property
    def top_name(self) -> str:
        a = f"{self.a_width}{'s' if self.a_signed else 'u'}{self.a_shift}"
        b = f"{self.b_width}{'s' if self.b_signed else 'u'}{self.b_shift}"
        tail = f"_t{len(self.thresholds)}o{self.out_width}" if self.thresholds else ""
        digest = ""
        if self.thresholds:
            import hashlib

            digest = "_" + hashlib.sha256(repr((self.thresholds, self.out_base)).encode()).hexdigest()[:8]
        return f"addstreams_{self.lanes}x_{a}_{b}{tail}{digest}"

    def to_dict(self) -> dict:
        return {
            "lanes": self.lanes,
            "a_width": self.a_width,
            "a_signed": self.a_signed,
            "b_width": self.b_width,
            "b_signed": self.b_signed,
            "a_shift": self.a_shift,
            "b_shift": self.b_shift,
            "thresholds": list(self.thresholds),
            "out_width": self.out_width,
            "out_base": self.out_base,
            "frame_elements": self.frame_elements,
        }


def add_golden(p: AddParams, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One frame of each input (stream order) -> output beats [beats, lanes]."""
    a = np.asarray(a, dtype=np.int64).reshape(-1)
    b = np.asarray(b, dtype=np.int64).reshape(-1)
    for name, x in (("a", a), ("b", b)):
        require(x.size == p.frame_elements, f"frame size of {name}", x.size, f"frame_elements={p.frame_elements}")
    _check_values(a, p.a_width, p.a_signed, "values of a")
    _check_values(b, p.b_width, p.b_signed, "values of b")
    total = (a << p.a_shift) + (b << p.b_shift)
    if p.thresholds:
        total = p.out_base + (total[:, None] >= np.asarray(p.thresholds, dtype=np.int64)[None, :]).sum(axis=1)
    return total.reshape(p.beats, p.lanes)


def add_schedule(p: AddParams, offered_a: list[int], offered_b: list[int]) -> tuple[list[int], list[int]]:
    """(accepted per beat pair, produced per output beat) with an always-ready sink: beat i of both inputs is
    taken in the first cycle both are presented (each from max(offered, previous taken + 1)); it leaves the
    next cycle."""
    require(len(offered_a) == len(offered_b), "offered", (len(offered_a), len(offered_b)), "as many beats on a and b")
    accepted: list[int] = []
    for i in range(len(offered_a)):
        accepted.append(max(_presented(offered_a, i, accepted), _presented(offered_b, i, accepted)))
    return accepted, [t + 1 for t in accepted]


def add_cycles(p: AddParams, frames: int = 1) -> dict:
    require(is_int(frames) and frames >= 1, "frames", frames, ">= 1")
    offers = [0] * (frames * p.beats)
    accepted, produced = add_schedule(p, offers, offers)
    return {
        "latency_cycles": produced[0] - accepted[0],
        "initiation_interval": p.beats,
        "total_cycles": produced[-1] - accepted[0] + 1,
        "buffer_bits": p.lanes * p.out_shape.width,
    }


def _tree_sum(values: list):
    """The sum of `values` as a balanced adder tree (widths grow by one bit per level, not per term)."""
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i] for i in range(0, len(values), 2)]
    return values[0]


class AddStreams(wiring.Component):
    """`inp_a` + `inp_b` -> `out`, lane by lane, both inputs taken in the same cycle."""

    def __init__(self, p: AddParams):
        self.p = p
        a_shape = signed(p.a_width) if p.a_signed else unsigned(p.a_width)
        b_shape = signed(p.b_width) if p.b_signed else unsigned(p.b_width)
        super().__init__(
            {
                "inp_a": In(stream.Signature(data.ArrayLayout(a_shape, p.lanes))),
                "inp_b": In(stream.Signature(data.ArrayLayout(b_shape, p.lanes))),
                "out": Out(stream.Signature(data.ArrayLayout(p.out_shape, p.lanes))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.p
        a, b, out = self.inp_a, self.inp_b, self.out
        out_valid = Signal(name="out_valid")
        result = Signal(data.ArrayLayout(p.out_shape, p.lanes), name="result")
        held = Signal(data.ArrayLayout(p.out_shape, p.lanes), name="held", reset_less=True)
        take = Signal(name="take")
        m.d.comb += [
            take.eq(~out_valid | out.ready),
            a.ready.eq(take & b.valid),
            b.ready.eq(take & a.valid),
            out.valid.eq(out_valid),
            out.payload.eq(held),
        ]
        for lane in range(p.lanes):
            total = Signal(p.sum_shape, name=f"sum{lane}")
            m.d.comb += total.eq((a.payload[lane] << p.a_shift) + (b.payload[lane] << p.b_shift))
            if p.thresholds:
                reached = [Signal(name=f"reached{lane}_{i}") for i in range(len(p.thresholds))]
                m.d.comb += [r.eq(total >= t) for r, t in zip(reached, p.thresholds)]
                count = _tree_sum(reached)
                m.d.comb += result[lane].eq(p.out_base + count)
            else:
                m.d.comb += result[lane].eq(total)
        with m.If(take):
            m.d.sync += [out_valid.eq(a.valid & b.valid), held.eq(result)]
        return m


register(
    Block(
        name="addstreams",
        summary="elementwise add of two integer streams with power-of-two scale alignment and thresholds "
        "(the join of a residual block)",
        params=AddParams,
        component=AddStreams,
        golden=add_golden,
        cycles=add_cycles,
        testbench="hardwire.sim.tb_branch",
        generator_version=GENERATOR_VERSION,
    )
)
