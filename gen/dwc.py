"""Stream width converter: the same element sequence, regrouped from beats of `in_lanes` to `out_lanes`.

Top to bottom: the parameters, the golden model, the schedule (exact timing) model, the component.

Three structures, chosen from the lane counts (identity is one register stage):

* ``down`` (in = n * out): one input beat is held in a shift register and leaves as n output beats,
  one per cycle; the next input beat is taken in the cycle its predecessor's last piece leaves.
* ``up`` (out = n * in): n input beats shift into a register of out lanes; the full register is the
  output beat, and the next input beat is taken in the cycle the full register leaves.
* ``gearbox`` (neither divides the other): a register of in + out - 1 elements with a fill count. An
  output beat leaves whenever at least out elements are held; an input beat is written just above the
  elements that stay, whenever it fits. in + out - 1 elements keep the slower side busy every cycle
  (the tests check that the initiation interval is the slower side's beat count).

No `last` signal: frames (frame_elements) are whole multiples of lcm(in, out), so every frame starts
on a beat boundary of both sides and the converter needs no frame counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from math import gcd

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.registry import Block, register

from hardwire.params import int_range, is_int, require

GENERATOR_VERSION = "1"
# frames the summary schedules to find the steady-state initiation interval
STEADY_FRAMES = 8
MAX_LANES = 256


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class DwcParams:
    """A validated width-converter configuration. Raises ParameterError naming the bad parameter."""

    in_lanes: int = 4
    out_lanes: int = 6
    elem_width: int = 4
    elem_signed: bool = True
    frame_elements: int = 12

    def __post_init__(self):
        for name in ("in_lanes", "out_lanes"):
            value = getattr(self, name)
            require(is_int(value) and 1 <= value <= MAX_LANES, name, value, f"1..{MAX_LANES}")
        require(is_int(self.elem_width) and 1 <= self.elem_width <= 32, "elem_width", self.elem_width, "1..32")
        require(isinstance(self.elem_signed, bool), "elem_signed", self.elem_signed, "True or False")
        require(
            is_int(self.frame_elements) and 1 <= self.frame_elements <= 1 << 24,
            "frame_elements",
            self.frame_elements,
            "1..16777216",
        )
        require(
            self.frame_elements % self.in_lanes == 0,
            "frame_elements",
            self.frame_elements,
            f"a multiple of in_lanes={self.in_lanes}",
        )
        require(
            self.frame_elements % self.out_lanes == 0,
            "frame_elements",
            self.frame_elements,
            f"a multiple of out_lanes={self.out_lanes}",
        )

    @property
    def structure(self) -> str:
        if self.in_lanes == self.out_lanes:
            return "identity"
        if self.in_lanes % self.out_lanes == 0:
            return "down"
        if self.out_lanes % self.in_lanes == 0:
            return "up"
        return "gearbox"

    @property
    def elem_shape(self):
        return signed(self.elem_width) if self.elem_signed else unsigned(self.elem_width)

    @property
    def beats_in(self) -> int:
        """Input beats per frame."""
        return self.frame_elements // self.in_lanes

    @property
    def beats_out(self) -> int:
        """Output beats per frame."""
        return self.frame_elements // self.out_lanes

    @property
    def buffer_elements(self) -> int:
        """Elements the converter holds (its registers, payload only)."""
        return {
            "identity": self.in_lanes,
            "down": self.in_lanes,
            "up": self.out_lanes,
            "gearbox": self.in_lanes + self.out_lanes - 1,
        }[self.structure]

    @property
    def top_name(self) -> str:
        # frame_elements does not change the hardware, so it stays out of the name: converters that differ
        # only in it are the same module.
        sign = "s" if self.elem_signed else "u"
        return f"dwc_{self.in_lanes}to{self.out_lanes}_{self.elem_width}{sign}"

    def to_dict(self) -> dict:
        return {
            "in_lanes": self.in_lanes,
            "out_lanes": self.out_lanes,
            "elem_width": self.elem_width,
            "elem_signed": self.elem_signed,
            "frame_elements": self.frame_elements,
        }


# --------------------------------------------------------------------------------------------------
# Golden model


def dwc_golden(p: DwcParams, frame: np.ndarray) -> np.ndarray:
    """One frame of elements (any shape, stream order = C order) as output beats [beats_out, out_lanes]."""
    x = np.asarray(frame, dtype=np.int64).reshape(-1)
    require(x.size == p.frame_elements, "frame size", x.size, f"frame_elements={p.frame_elements}")
    lo, hi = int_range(p.elem_width, p.elem_signed)
    require(
        x.size == 0 or (x.min() >= lo and x.max() <= hi), "element values", (int(x.min()), int(x.max())), f"{lo}..{hi}"
    )
    return x.reshape(p.beats_out, p.out_lanes)


# --------------------------------------------------------------------------------------------------
# Schedule model (exact; see the stream contract in the project notes)


def _presented(offered: list[int], index: int, accepted: list[int]) -> int:
    return offered[index] if index == 0 else max(offered[index], accepted[index - 1] + 1)


def dwc_schedule(p: DwcParams, offered: list[int]) -> tuple[list[int], list[int]]:
    """Handshake cycles (accepted per input beat, produced per output beat) with an always-ready sink,
    input beat i presented from max(offered[i], accepted[i-1] + 1). Any number of beats (frames need not
    be complete: only the output beats the accepted elements fill are produced)."""
    _check_offered(offered)
    structure = p.structure
    n_in, n_out = p.in_lanes, p.out_lanes
    accepted: list[int] = []
    produced: list[int] = []
    if structure == "identity":
        # a register stage: never stalls with a ready sink, each beat leaves the next cycle
        for i in range(len(offered)):
            accepted.append(_presented(offered, i, accepted))
        return accepted, [t + 1 for t in accepted]
    if structure == "down":
        # a beat is taken in the cycle the previous beat's last piece leaves; its pieces follow it
        pieces = n_in // n_out
        for i in range(len(offered)):
            t = _presented(offered, i, accepted)
            if i:
                t = max(t, accepted[i - 1] + pieces)
            accepted.append(t)
            produced.extend(t + 1 + j for j in range(pieces))
        return accepted, produced
    if structure == "up":
        # never stalls with an always-ready sink; the full register leaves the cycle after its last piece
        pieces = n_out // n_in
        for i in range(len(offered)):
            accepted.append(_presented(offered, i, accepted))
            if i % pieces == pieces - 1:
                produced.append(accepted[-1] + 1)
        return accepted, produced
    return _gearbox_schedule(p, offered)


def _gearbox_schedule(p: DwcParams, offered: list[int]) -> tuple[list[int], list[int]]:
    """Cycle by cycle over the fill count (the gearbox's only control state); idle stretches are skipped."""
    n_in, n_out = p.in_lanes, p.out_lanes
    accepted: list[int] = []
    produced: list[int] = []
    count = 0
    total_out = len(offered) * n_in // n_out
    t = offered[0] if offered else 0
    while len(accepted) < len(offered) or len(produced) < total_out:
        i = len(accepted)
        present = i < len(offered) and _presented(offered, i, accepted) <= t
        if count < n_out and not present:
            # nothing can happen before the next beat is presented
            t = _presented(offered, i, accepted)
            continue
        pop = count >= n_out
        remaining = count - n_out if pop else count
        if pop:
            produced.append(t)
        if present and remaining < n_out:
            accepted.append(t)
            remaining += n_in
        count = remaining
        t += 1
    return accepted, produced


def _check_offered(offered: list[int]) -> None:
    require(all(b >= a for a, b in pairwise(offered)), "offered", "decreasing cycles", "non-decreasing cycles")


def dwc_cycles(p: DwcParams, frames: int = 1) -> dict:
    """Full-rate summary from the schedule: latency (first input to first output handshake), the
    initiation interval between frames in steady state, and the total for `frames` frames."""
    require(is_int(frames) and frames >= 1, "frames", frames, ">= 1")
    # the input side may run ahead of the output for a few frames while the buffer fills: measure the
    # interval on both sides after enough frames and take the larger
    steady = max(frames, STEADY_FRAMES)
    accepted, produced = dwc_schedule(p, [0] * (steady * p.beats_in))
    starts = accepted[:: p.beats_in]
    out_starts = produced[:: p.beats_out]
    last_output = produced[frames * p.beats_out - 1]
    return {
        "latency_cycles": produced[0] - accepted[0],
        "initiation_interval": max(starts[-1] - starts[-2], out_starts[-1] - out_starts[-2]),
        "total_cycles": last_output - accepted[0] + 1,
        "beats_in_per_frame": p.beats_in,
        "beats_out_per_frame": p.beats_out,
        "buffer_bits": p.buffer_elements * p.elem_width,
        "structure": p.structure,
    }


# --------------------------------------------------------------------------------------------------
# Component


class WidthConverter(wiring.Component):
    """Regroups a stream of `in_lanes`-element beats into `out_lanes`-element beats, elements in order."""

    def __init__(self, p: DwcParams):
        self.p = p
        super().__init__(
            {
                "inp": In(stream.Signature(data.ArrayLayout(p.elem_shape, p.in_lanes))),
                "out": Out(stream.Signature(data.ArrayLayout(p.elem_shape, p.out_lanes))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.p
        inp, out = self.inp, self.out
        {"identity": self._identity, "down": self._down, "up": self._up, "gearbox": self._gearbox}[p.structure](
            m, inp, out
        )
        return m

    def _identity(self, m, inp, out):
        # one register stage rather than a wire: the block keeps its clock and reset ports like every other
        # block, and the network gets no combinational valid path through it
        out_valid = Signal(name="out_valid")
        out_data = Signal(self.p.in_lanes * self.p.elem_width, name="out_data", reset_less=True)
        m.d.comb += [out.valid.eq(out_valid), out.payload.eq(out_data), inp.ready.eq(~out_valid | out.ready)]
        with m.If(inp.ready):
            m.d.sync += [out_valid.eq(inp.valid), out_data.eq(inp.payload)]

    def _down(self, m, inp, out):
        p = self.p
        w = p.elem_width
        pieces = p.in_lanes // p.out_lanes
        store = Signal(p.in_lanes * w, name="store", reset_less=True)
        left = Signal(range(pieces + 1), name="pieces_left")
        m.d.comb += [
            out.valid.eq(left != 0),
            out.payload.eq(store[: p.out_lanes * w]),
            inp.ready.eq((left == 0) | ((left == 1) & out.ready)),
        ]
        with m.If(inp.valid & inp.ready):
            m.d.sync += [store.eq(inp.payload), left.eq(pieces)]
        with m.Elif(out.valid & out.ready):
            m.d.sync += [store.eq(store[p.out_lanes * w :]), left.eq(left - 1)]

    def _up(self, m, inp, out):
        p = self.p
        w = p.elem_width
        pieces = p.out_lanes // p.in_lanes
        store = Signal(p.out_lanes * w, name="store", reset_less=True)
        have = Signal(range(pieces + 1), name="pieces_held")
        full = Signal()
        m.d.comb += [
            full.eq(have == pieces),
            out.valid.eq(full),
            out.payload.eq(store),
            inp.ready.eq(~full | out.ready),
        ]
        pop = full & out.ready
        with m.If(inp.valid & inp.ready):
            # the oldest beat ends up in the lowest lanes after `pieces` shifts
            m.d.sync += [store.eq(Cat(store[p.in_lanes * w :], inp.payload)), have.eq(Mux(pop, 1, have + 1))]
        with m.Elif(pop):
            m.d.sync += have.eq(0)

    def _gearbox(self, m, inp, out):
        p = self.p
        w = p.elem_width
        n_in, n_out = p.in_lanes, p.out_lanes
        capacity = n_in + n_out - 1
        store = Signal(capacity * w, name="store", reset_less=True)
        count = Signal(range(capacity + 1), name="count")
        remaining = Signal(range(capacity + 1), name="remaining")
        shifted = Signal(capacity * w, name="shifted")
        pop = Signal()
        m.d.comb += [
            out.valid.eq(count >= n_out),
            out.payload.eq(store[: n_out * w]),
            pop.eq(out.valid & out.ready),
            remaining.eq(Mux(pop, count - n_out, count)),
            shifted.eq(Mux(pop, store[n_out * w :], store)),
            inp.ready.eq(remaining < n_out),
        ]
        accept = inp.valid & inp.ready
        m.d.sync += store.eq(shifted)
        with m.If(accept):
            # the new beat lands just above the elements that stay
            # The fill count only ever holds multiples of gcd(in, out), and remaining < out here: one case
            # per such multiple, the last as the default so that the case is complete.
            step = gcd(n_in, n_out)
            with m.Switch(remaining):
                for held in range(0, n_out, step):
                    with m.Case(held) if held < n_out - step else m.Default():
                        m.d.sync += store[held * w : (held + n_in) * w].eq(inp.payload)
            m.d.sync += count.eq(remaining + n_in)
        with m.Else():
            m.d.sync += count.eq(remaining)


register(
    Block(
        name="dwc",
        summary="stream width converter: beats of in_lanes elements regrouped into beats of out_lanes",
        params=DwcParams,
        component=WidthConverter,
        golden=dwc_golden,
        cycles=dwc_cycles,
        testbench="hardwire.sim.tb_dataflow",
        generator_version=GENERATOR_VERSION,
    )
)
