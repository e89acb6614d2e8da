"""Streaming max pooling (block "maxpool"): non-overlapping k x k windows, stride k, NHWC raster in and out.

Top to bottom: the parameters, the golden model, the schedule (exact timing) model, the component.

The block keeps one row of running maxima (OW * C elements, in a memory of OW * C/simd words of simd
lanes) rather than the image. Every input beat reads its window's running maximum, takes the maximum
with its own lanes (or starts it, on the window's first pixel) and writes it back; on the window's last
pixel the result goes to the output instead. Rows and columns past OH*k, OW*k are consumed and dropped,
like torch's max_pool2d with ceil_mode=False.

Pipeline: cycle t the beat is accepted and its word's address goes to the memory; cycle t+1 the stored
maximum is there (a read port transparent to the write port, so a word written in t+1 by the previous
beat is seen), the new maximum is computed and written back or loaded into the output register; cycle
t+2 the output beat is offered. One enable moves the whole pipeline: it stops only while the output
register holds a beat the sink has not taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.image import ImageStreamParams, counter
from hardwire.gen.registry import Block, register

from hardwire.params import is_int, require

GENERATOR_VERSION = "1"
# frames the summary schedules to find the steady-state initiation interval
STEADY_FRAMES = 8
# input handshake in cycle t -> output handshake in cycle t + LATENCY (always-ready sink)
LATENCY_CYCLES = 2


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class PoolParams(ImageStreamParams):
    """A validated max-pool configuration. Raises ParameterError naming the bad parameter."""

    in_height: int = 6
    in_width: int = 6
    channels: int = 16
    kernel_size: int = 2
    simd: int = 4
    elem_width: int = 8
    elem_signed: bool = True

    def __post_init__(self):
        self.check_image_fields()
        limit = min(self.in_height, self.in_width)
        require(
            is_int(self.kernel_size) and 1 <= self.kernel_size <= limit,
            "kernel_size",
            self.kernel_size,
            f"1..{limit} (at most min(in_height, in_width))",
        )

    @property
    def out_height(self) -> int:
        return self.in_height // self.kernel_size

    @property
    def out_width(self) -> int:
        return self.in_width // self.kernel_size

    @property
    def beats_out(self) -> int:
        return self.out_height * self.out_width * self.channel_beats

    @property
    def buffer_bits(self) -> int:
        """Running maxima of one output row (none when k = 1: every pixel is its own window)."""
        return 0 if self.kernel_size == 1 else self.out_width * self.channels * self.elem_width

    @property
    def top_name(self) -> str:
        sign = "s" if self.elem_signed else "u"
        return (
            f"maxpool_{self.in_height}x{self.in_width}x{self.channels}_k{self.kernel_size}"
            f"_simd{self.simd}_{self.elem_width}{sign}"
        )

    def to_dict(self) -> dict:
        return {
            "in_height": self.in_height,
            "in_width": self.in_width,
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "simd": self.simd,
            "elem_width": self.elem_width,
            "elem_signed": self.elem_signed,
        }


# --------------------------------------------------------------------------------------------------
# Golden model


def pool_golden(p: PoolParams, image: np.ndarray) -> np.ndarray:
    """Max over each k x k window of one HWC image: [OH, OW, C]. Trailing rows/columns that do not fill a
    window are dropped (floor, as torch's max_pool2d with ceil_mode=False)."""
    x = p.checked_image(image)
    k, oh, ow = p.kernel_size, p.out_height, p.out_width
    windows = x[: oh * k, : ow * k].reshape(oh, k, ow, k, p.channels)
    return windows.max(axis=(1, 3))


# --------------------------------------------------------------------------------------------------
# Schedule model (exact; see the stream contract in the project notes)


def _window_ends(p: PoolParams) -> np.ndarray:
    """For each input beat of a frame: does it complete a window (so an output beat follows)?"""
    k = p.kernel_size
    y = np.arange(p.in_height)[:, None, None]
    x = np.arange(p.in_width)[None, :, None]
    ends = (
        (y % k == k - 1)
        & (y < p.out_height * k)
        & (x % k == k - 1)
        & (x < p.out_width * k)
        & np.ones((1, 1, p.channel_beats), dtype=bool)
    )
    return ends.reshape(-1)


def pool_schedule(p: PoolParams, offered: list[int]) -> tuple[list[int], list[int]]:
    """Handshake cycles (accepted per input beat, produced per output beat) with an always-ready sink.
    Input beat i is presented from max(offered[i], accepted[i-1] + 1); with a ready sink the block takes
    every presented beat at once, and a window's last beat leaves LATENCY_CYCLES later. Any number of
    beats and frames."""
    require(all(b >= a for a, b in pairwise(offered)), "offered", "decreasing cycles", "non-decreasing cycles")
    ends = _window_ends(p)
    accepted: list[int] = []
    produced: list[int] = []
    for i, t in enumerate(offered):
        if accepted:
            t = max(t, accepted[-1] + 1)
        accepted.append(t)
        if ends[i % p.beats_in]:
            produced.append(t + LATENCY_CYCLES)
    return accepted, produced


def pool_cycles(p: PoolParams, frames: int = 1) -> dict:
    """Full-rate summary from the schedule: latency (first input to first output handshake), the
    initiation interval between frames in steady state, and the total for `frames` frames."""
    require(is_int(frames) and frames >= 1, "frames", frames, ">= 1")
    # the input side may run ahead of the output for a few frames while the buffer fills: measure the
    # interval on both sides after enough frames and take the larger
    steady = max(frames, STEADY_FRAMES)
    accepted, produced = pool_schedule(p, [0] * (steady * p.beats_in))
    starts = accepted[:: p.beats_in]
    out_starts = produced[:: p.beats_out]
    return {
        "latency_cycles": produced[0] - accepted[0],
        "initiation_interval": max(starts[-1] - starts[-2], out_starts[-1] - out_starts[-2]),
        "total_cycles": produced[frames * p.beats_out - 1] - accepted[0] + 1,
        "beats_in_per_frame": p.beats_in,
        "beats_out_per_frame": p.beats_out,
        "buffer_bits": p.buffer_bits,
    }


# --------------------------------------------------------------------------------------------------
# Component


class MaxPool(wiring.Component):
    """k x k, stride k max pooling of an NHWC raster stream, simd channels per beat."""

    def __init__(self, p: PoolParams):
        self.p = p
        lanes = data.ArrayLayout(p.elem_shape, p.simd)
        super().__init__({"inp": In(stream.Signature(lanes)), "out": Out(stream.Signature(lanes))})

    def elaborate(self, platform):
        m = Module()
        p = self.p
        k, cb_count = p.kernel_size, p.channel_beats
        inp, out = self.inp, self.out

        # -- position of the arriving beat: channel beat, pixel within the window, window column
        cb = counter(cb_count, "channel_beat")
        x = counter(p.in_width, "x")
        y = counter(p.in_height, "y")
        kx = counter(k, "window_x")
        ky = counter(k, "window_y")
        column_word = Signal(range(p.out_width * cb_count + 1), name="column_word")  # ox * C/simd

        out_valid = Signal(name="out_valid")
        out_data = Signal(p.simd * p.elem_width, name="out_data", reset_less=True)
        advance = Signal()
        m.d.comb += [
            advance.eq(~out_valid | out.ready),
            inp.ready.eq(advance),
            out.valid.eq(out_valid),
            out.payload.eq(out_data),
        ]
        accept = inp.valid & inp.ready

        with m.If(accept):
            with m.If(cb != cb_count - 1):
                m.d.sync += cb.eq(cb + 1)
            with m.Else():
                m.d.sync += cb.eq(0)
                with m.If(x != p.in_width - 1):
                    m.d.sync += x.eq(x + 1)
                    with m.If(kx != k - 1):
                        m.d.sync += kx.eq(kx + 1)
                    with m.Else():
                        m.d.sync += [kx.eq(0), column_word.eq(column_word + cb_count)]
                with m.Else():
                    m.d.sync += [x.eq(0), kx.eq(0), column_word.eq(0)]
                    with m.If(y != p.in_height - 1):
                        m.d.sync += [y.eq(y + 1), ky.eq(Mux(ky == k - 1, 0, ky + 1))]
                    with m.Else():
                        m.d.sync += [y.eq(0), ky.eq(0)]

        # -- stage 1: the beat, its window flags and its word address, one cycle later
        valid1 = Signal(name="s1_valid")
        keep1 = Signal(name="s1_keep")
        first1 = Signal(name="s1_first")
        last1 = Signal(name="s1_last")
        data1 = Signal(p.simd * p.elem_width, name="s1_data", reset_less=True)
        word = Signal(range(max(p.out_width * cb_count, 2)), name="word")
        word1 = Signal.like(word, name="s1_word", reset_less=True)
        m.d.comb += word.eq(column_word + cb)
        with m.If(advance):
            m.d.sync += [
                valid1.eq(accept),
                # (comparisons are left out where the signal's range decides them: Verilator flags those)
                keep1.eq(
                    (x < p.out_width * k if p.out_width * k < p.in_width else 1)
                    & (y < p.out_height * k if p.out_height * k < p.in_height else 1)
                ),
                first1.eq((kx == 0) & (ky == 0)),
                last1.eq((kx == k - 1) & (ky == k - 1)),
                data1.eq(inp.payload),
                word1.eq(word),
            ]

        incoming = self._lanes(data1)
        if k == 1:
            result = Cat(*incoming)
        else:
            width = p.elem_width * p.simd
            m.submodules.running_max = row = memory.Memory(
                shape=unsigned(width), depth=max(p.out_width * cb_count, 2), init=[]
            )
            write = row.write_port()
            read = row.read_port(transparent_for=(write,))
            stored = self._lanes(read.data)
            maxima = [Mux(first1 | (a > b), a, b) for a, b in zip(incoming, stored)]
            result = Cat(*maxima)
            m.d.comb += [
                read.addr.eq(word),
                read.en.eq(advance),
                write.addr.eq(word1),
                write.data.eq(result),
                write.en.eq(advance & valid1 & keep1 & ~last1),
            ]
        with m.If(advance):
            m.d.sync += [out_valid.eq(valid1 & keep1 & last1), out_data.eq(result)]
        return m

    def _lanes(self, raw):
        w = self.p.elem_width
        lanes = [raw[i * w : (i + 1) * w] for i in range(self.p.simd)]
        return [lane.as_signed() for lane in lanes] if self.p.elem_signed else lanes


register(
    Block(
        name="maxpool",
        summary="streaming k x k (stride k) max pooling over an NHWC raster stream, one row of running maxima",
        params=PoolParams,
        component=MaxPool,
        golden=pool_golden,
        cycles=pool_cycles,
        testbench="hardwire.sim.tb_dataflow",
        generator_version=GENERATOR_VERSION,
    )
)
