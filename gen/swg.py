"""Sliding-window generator (FINN's ConvolutionInputGenerator): a convolution's input windows as a stream,
so that a matrix-vector unit can compute the convolution as one dot product per output pixel.

Top to bottom: the parameters, the golden model, the schedule (exact timing) model, the component.

Input: one image per frame, NHWC raster, beats of simd channels. Output: for every output pixel (oy, ox)
in raster order, its k x k x C window in the order (ky, kx, c) -- element (ky*k + kx)*C + c -- in beats of
simd channels. Padding elements are integer zeros and are never stored.

Two structures (parameter `line_buffer`); both read a window position per cycle: the word address goes
to the memory in cycle t and the word (or a zero for a padding position) is the output payload in cycle
t+1, held there (read port not enabled) while the sink is not ready. The read walk keeps its address in
incrementing registers (no multipliers): +1 across channel beats and kernel columns, constants between
kernel rows, windows and window rows.

* line buffer (default, what FINN does): a circular buffer of 2k + stride - padding input rows (see
  `buffer_rows`; at most two images' rows). The writer puts each input row a window reads into the next row slot, and may start
  a row only while a slot is free; rows below the last window are taken and dropped. An output row
  starts once every input row its windows read is written, and when it ends the rows above the next
  window row's top are released. Row counts run on across frames, so the next image flows in as the
  current one's last rows are read.
* double buffer (`line_buffer=False`): two whole-image banks, ping-pong. The writer fills one bank with
  the next image while the reader walks the other's windows; bank b is full from its image's last write
  until its windows' last read.

In both, a frame costs max(write beats, read beats) cycles in steady state (the schedule model shows it;
the tests check it over a sweep of shapes). The line buffer needs (2k + stride - padding) / (2H) of the
double buffer's memory and starts its first output after k - padding rows instead of a whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.image import MAX_DIM, ImageStreamParams, counter
from hardwire.gen.registry import Block, register

from hardwire.params import bits_for_range, is_int, require

GENERATOR_VERSION = "1"
# frames the summary schedules to find the steady-state initiation interval
STEADY_FRAMES = 8
# read issued in cycle t -> its output handshake in cycle t + 1 (always-ready sink)
READ_LATENCY_CYCLES = 1


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class SwgParams(ImageStreamParams):
    """A validated sliding-window-generator configuration. Raises ParameterError naming the bad parameter."""

    in_height: int = 8
    in_width: int = 8
    channels: int = 16
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    simd: int = 4
    elem_width: int = 8
    elem_signed: bool = True
    line_buffer: bool = True

    def __post_init__(self):
        self.check_image_fields()
        require(is_int(self.padding) and self.padding >= 0, "padding", self.padding, ">= 0")
        limit = min(self.in_height, self.in_width) + 2 * self.padding
        require(
            is_int(self.kernel_size) and 1 <= self.kernel_size <= limit,
            "kernel_size",
            self.kernel_size,
            f"1..{limit} (min(in_height, in_width) + 2 * padding)",
        )
        require(
            self.padding <= self.kernel_size - 1,
            "padding",
            self.padding,
            f"0..{self.kernel_size - 1} (kernel_size - 1)",
        )
        require(is_int(self.stride) and 1 <= self.stride <= MAX_DIM, "stride", self.stride, f"1..{MAX_DIM}")
        require(isinstance(self.line_buffer, bool), "line_buffer", self.line_buffer, "True or False")

    @property
    def out_height(self) -> int:
        return (self.in_height + 2 * self.padding - self.kernel_size) // self.stride + 1

    @property
    def out_width(self) -> int:
        return (self.in_width + 2 * self.padding - self.kernel_size) // self.stride + 1

    @property
    def window_elements(self) -> int:
        return self.kernel_size * self.kernel_size * self.channels

    @property
    def beats_out(self) -> int:
        """Output beats per frame: every window, padding included."""
        return self.out_height * self.out_width * self.kernel_size * self.kernel_size * self.channel_beats

    @property
    def stored_rows(self) -> int:
        """Input rows some window reads: rows below the last window are taken and dropped."""
        return min(self.in_height, (self.out_height - 1) * self.stride - self.padding + self.kernel_size)

    @property
    def buffer_rows(self) -> int:
        """Rows of image the buffer holds: two whole images (ping-pong), or with `line_buffer` row slots
        for the k rows an output row reads, the stride of rows the next output row adds (written while
        the current one is read) and the k - padding rows the next image's first output row needs
        (written while the current image's last output row is read); at most two images' stored rows.
        Fewer slots stall the writer: k + stride alone costs up to 8 % of throughput on strided layers
        and half of it on one-row images."""
        if not self.line_buffer:
            return 2 * self.in_height
        return min(2 * self.stored_rows, 2 * self.kernel_size + self.stride - self.padding)

    @property
    def buffer_words(self) -> int:
        return self.buffer_rows * self.in_width * self.channel_beats

    @property
    def buffer_bits(self) -> int:
        return self.buffer_words * self.simd * self.elem_width

    @property
    def top_name(self) -> str:
        sign = "s" if self.elem_signed else "u"
        return (
            f"swg_{self.in_height}x{self.in_width}x{self.channels}_k{self.kernel_size}_s{self.stride}"
            f"_p{self.padding}_simd{self.simd}_{self.elem_width}{sign}{'' if self.line_buffer else '_db'}"
        )

    def to_dict(self) -> dict:
        return {
            "in_height": self.in_height,
            "in_width": self.in_width,
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "simd": self.simd,
            "elem_width": self.elem_width,
            "elem_signed": self.elem_signed,
            "line_buffer": self.line_buffer,
        }


# --------------------------------------------------------------------------------------------------
# Golden model


def swg_golden(p: SwgParams, image: np.ndarray) -> np.ndarray:
    """Every window of one zero-padded HWC image: [OH, OW, k*k*C], element (ky*k + kx)*C + c."""
    x = p.checked_image(image)
    pad, k, s = p.padding, p.kernel_size, p.stride
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    windows = np.empty((p.out_height, p.out_width, k, k, p.channels), dtype=np.int64)
    for oy in range(p.out_height):
        for ox in range(p.out_width):
            windows[oy, ox] = padded[oy * s : oy * s + k, ox * s : ox * s + k, :]
    return windows.reshape(p.out_height, p.out_width, p.window_elements)


# --------------------------------------------------------------------------------------------------
# Schedule model (exact; see the stream contract in the project notes)


def swg_schedule(p: SwgParams, offered: list[int]) -> tuple[list[int], list[int]]:
    """Handshake cycles (accepted per input beat, produced per output beat) with an always-ready sink.

    Input beat i is presented from max(offered[i], accepted[i-1] + 1). Frame f writes bank f % 2, which
    is free from the cycle after frame f-2's last read; its reads start the cycle after both its own last
    write and frame f-1's last read, and run one per cycle. Outputs come only for complete frames.
    """
    require(all(b >= a for a, b in pairwise(offered)), "offered", "decreasing cycles", "non-decreasing cycles")
    if p.line_buffer:
        return _line_buffer_schedule(p, offered)
    n_in, n_out = p.beats_in, p.beats_out
    accepted: list[int] = []
    produced: list[int] = []
    read_end: list[int] = []  # cycle of each frame's last read
    for i, t in enumerate(offered):
        frame, beat = divmod(i, n_in)
        if accepted:
            t = max(t, accepted[-1] + 1)
        if beat == 0 and frame >= 2:
            t = max(t, read_end[frame - 2] + 1)
        accepted.append(t)
        if beat == n_in - 1:
            start = t + 1 if frame == 0 else max(t + 1, read_end[frame - 1] + 1)
            read_end.append(start + n_out - 1)
            produced.extend(range(start + READ_LATENCY_CYCLES, start + READ_LATENCY_CYCLES + n_out))
    return accepted, produced


def _line_buffer_schedule(p: SwgParams, offered: list[int]) -> tuple[list[int], list[int]]:
    """The line buffer at row granularity. Stored row g (counted across frames) may start once row
    g - slots has been released: the cycle after the read that ended the output row releasing it. Output
    row oy starts the cycle after both the previous output row's last read and the last write of the
    rows it needs (min(stored, oy*s - p + k)); its reads then run one per cycle. After output row oy the
    rows above (oy+1)*s - p (after the frame's last output row: all its rows) are released."""
    k, s, pad = p.kernel_size, p.stride, p.padding
    rows, slots = p.stored_rows, p.buffer_rows
    row_words = p.in_width * p.channel_beats
    row_reads = p.out_width * k * k * p.channel_beats
    accepted: list[int] = []
    produced: list[int] = []
    written: list[int] = []  # cycle of the last write of each stored row
    released: list[int] = []  # cycle of the read after which each stored row is free
    reader = {"frame": 0, "oy": 0, "end": None}

    def run_reader():
        """Every output row whose rows are all written."""
        while True:
            frame, oy = reader["frame"], reader["oy"]
            base = frame * rows
            need = min(rows, oy * s - pad + k)
            if base + need > len(written):
                return
            start = written[base + need - 1] + 1
            if reader["end"] is not None:
                start = max(start, reader["end"] + 1)
            end = start + row_reads - 1
            produced.extend(range(start + READ_LATENCY_CYCLES, end + 1 + READ_LATENCY_CYCLES))
            top = rows if oy == p.out_height - 1 else min(max((oy + 1) * s - pad, 0), rows)
            released.extend([end] * (base + top - len(released)))
            reader["end"] = end
            reader["oy"], reader["frame"] = (0, frame + 1) if oy == p.out_height - 1 else (oy + 1, frame)

    for i, t in enumerate(offered):
        frame, beat = divmod(i, p.beats_in)
        row, row_beat = divmod(beat, row_words)
        if accepted:
            t = max(t, accepted[-1] + 1)
        if row < rows and row_beat == 0:
            g = frame * rows + row
            if g >= slots:
                run_reader()
                t = max(t, released[g - slots] + 1)
        accepted.append(t)
        if row < rows and row_beat == row_words - 1:
            written.append(t)
    run_reader()
    return accepted, produced


def swg_cycles(p: SwgParams, frames: int = 1) -> dict:
    """Full-rate summary from the schedule: latency (first input to first output handshake), the
    initiation interval between frames in steady state (max of write and read beats), the total for
    `frames` frames, and the image buffer's size."""
    require(is_int(frames) and frames >= 1, "frames", frames, ">= 1")
    # the input side may run ahead of the output for a few frames while the buffer fills: measure the
    # interval on both sides after enough frames and take the larger
    steady = max(frames, STEADY_FRAMES)
    accepted, produced = swg_schedule(p, [0] * (steady * p.beats_in))
    starts = accepted[:: p.beats_in]
    out_starts = produced[:: p.beats_out]
    return {
        "latency_cycles": produced[0] - accepted[0],
        "initiation_interval": max(starts[-1] - starts[-2], out_starts[-1] - out_starts[-2]),
        "total_cycles": produced[frames * p.beats_out - 1] - accepted[0] + 1,
        "beats_in_per_frame": p.beats_in,
        "beats_out_per_frame": p.beats_out,
        "buffer_bits": p.buffer_bits,
        "structure": f"line buffer ({p.buffer_rows} row slots)" if p.line_buffer else "double-buffered image",
    }


# --------------------------------------------------------------------------------------------------
# Component


class SlidingWindowGenerator(wiring.Component):
    """Image in (NHWC raster, simd channels per beat), windows out ((ky, kx, c) order, simd per beat)."""

    def __init__(self, p: SwgParams):
        self.p = p
        lanes = data.ArrayLayout(p.elem_shape, p.simd)
        super().__init__({"inp": In(stream.Signature(lanes)), "out": Out(stream.Signature(lanes))})

    def elaborate(self, platform):
        m = Module()
        p = self.p
        m.submodules.buffer = buffer = memory.Memory(
            shape=unsigned(p.simd * p.elem_width), depth=max(p.buffer_words, 2), init=[]
        )
        write = buffer.write_port()
        read = buffer.read_port()

        # the output stage: the memory's read data, or zero for a padding position, held (read port not
        # enabled) while the sink is not ready
        valid1 = Signal(name="out_valid")
        pad1 = Signal(name="out_padding")
        advance = Signal()
        m.d.comb += [
            advance.eq(~valid1 | self.out.ready),
            self.out.valid.eq(valid1),
            self.out.payload.eq(Mux(pad1, 0, read.data)),
            read.en.eq(advance),
        ]
        can_read = Signal()
        issue = Signal()
        m.d.comb += issue.eq(can_read & advance)
        walk = _WindowWalk(m, p, issue)
        with m.If(advance):
            m.d.sync += [valid1.eq(issue), pad1.eq(walk.padding)]
        m.d.comb += [write.data.eq(self.inp.payload)]
        if p.line_buffer:
            self._line_buffer(m, write, read, walk, can_read)
        else:
            self._double_buffer(m, write, read, walk, can_read)
        return m

    # -- two whole-image banks ---------------------------------------------------------------------

    def _double_buffer(self, m, write, read, walk, can_read):
        p = self.p
        n_in = p.beats_in
        full = [Signal(name="bank0_full"), Signal(name="bank1_full")]
        write_bank = Signal(name="write_bank")
        read_bank = Signal(name="read_bank")

        def bank_address(bank, offset):
            if n_in & (n_in - 1) == 0:  # a power of two: the bank is the top address bit
                return Cat(offset[: (n_in - 1).bit_length()], bank)
            return Mux(bank, n_in, 0) + offset

        # write side: fill the free bank in raster order
        write_beat = counter(n_in, "write_beat")
        m.d.comb += self.inp.ready.eq(Mux(write_bank, ~full[1], ~full[0]))
        accept = self.inp.valid & self.inp.ready
        m.d.comb += [write.addr.eq(bank_address(write_bank, write_beat)), write.en.eq(accept)]
        image_written = Signal()
        with m.If(accept):
            with m.If(write_beat == n_in - 1):
                m.d.comb += image_written.eq(1)
                m.d.sync += [write_beat.eq(0), write_bank.eq(~write_bank)]
            with m.Else():
                m.d.sync += write_beat.eq(write_beat + 1)

        # read side: the word address of the walk's position, kept in incrementing registers: the current
        # position, its kernel row's start, the window's top-left corner and the window row's first window
        # (below zero in padding, where it is not used)
        k, s, pad = p.kernel_size, p.stride, p.padding
        row_words = p.in_width * p.channel_beats
        start = (-pad * p.in_width - pad) * p.channel_beats
        highest = ((p.out_height - 1) * s + k) * row_words + ((p.out_width - 1) * s + k) * p.channel_beats
        shape = signed(bits_for_range(start, highest, True))
        address = Signal(shape, init=start, name="address")
        row_address = Signal(shape, init=start, name="kernel_row_address")
        window_address = Signal(shape, init=start, name="window_address")
        window_row_address = Signal(shape, init=start, name="window_row_address")
        m.d.comb += [can_read.eq(Mux(read_bank, full[1], full[0])), read.addr.eq(bank_address(read_bank, address))]
        next_row = row_address + row_words
        next_window = window_address + s * p.channel_beats
        next_window_row = window_row_address + s * row_words
        with m.If(walk.next_beat | walk.next_column):
            m.d.sync += address.eq(address + 1)
        with m.If(walk.next_row):
            m.d.sync += [row_address.eq(next_row), address.eq(next_row)]
        with m.If(walk.next_window):
            m.d.sync += [window_address.eq(next_window), row_address.eq(next_window), address.eq(next_window)]
        with m.If(walk.next_window_row):
            m.d.sync += [
                window_row_address.eq(next_window_row),
                window_address.eq(next_window_row),
                row_address.eq(next_window_row),
                address.eq(next_window_row),
            ]
        with m.If(walk.frame_done):
            m.d.sync += [
                window_row_address.eq(start),
                window_address.eq(start),
                row_address.eq(start),
                address.eq(start),
            ]

        for bank in (0, 1):
            with m.If(image_written & (write_bank == bank)):
                m.d.sync += full[bank].eq(1)
            with m.Elif(walk.frame_done & (read_bank == bank)):
                m.d.sync += full[bank].eq(0)
        with m.If(walk.frame_done):
            m.d.sync += read_bank.eq(~read_bank)

    # -- a circular buffer of input rows ----------------------------------------------------------

    def _line_buffer(self, m, write, read, walk, can_read):
        p = self.p
        k, s, pad = p.kernel_size, p.stride, p.padding
        rows, slots = p.stored_rows, p.buffer_rows
        row_words = p.in_width * p.channel_beats
        words = slots * row_words
        # Row counts that run on across frames, compared by their difference taken modulo 2**count_bits and
        # read as signed: the writer is at most `slots` rows ahead of the release point, and with a stride
        # above k the reader releases rows it skips before the writer has started them, so the release
        # point can be up to `rows` ahead of the writer. count_bits holds that range.
        count_bits = (2 * (rows + slots) + 2).bit_length()

        def difference(a, b):
            return (a - b)[:count_bits].as_signed()

        def plus_modulo(value, constant):
            """(value + constant) mod words, for a value already below words and 0 <= constant < words."""
            total = value + constant
            return Mux(total >= words, total - words, total)

        # write side: stored rows (those a window reads) go to consecutive row slots; rows past them are
        # taken and dropped. A stored row may start only while a slot is free.
        in_row_beat = counter(row_words, "write_row_beat")
        in_row = counter(p.in_height, "write_row")
        write_address = counter(words, "write_address")
        rows_started = Signal(count_bits, name="rows_started")
        rows_written = Signal(count_bits, name="rows_written")
        frame_first_row = Signal(count_bits, name="frame_first_row")  # reader: row count at its frame's row 0
        released_in_frame = Signal(range(rows + 1), name="released_in_frame")
        released = Signal(count_bits)
        m.d.comb += released.eq(frame_first_row + released_in_frame)
        stored = Signal()
        m.d.comb += [
            stored.eq(in_row < rows if rows < p.in_height else 1),
            self.inp.ready.eq(~stored | (in_row_beat != 0) | (difference(rows_started, released) < slots)),
        ]
        accept = self.inp.valid & self.inp.ready
        m.d.comb += [write.addr.eq(write_address), write.en.eq(accept & stored)]
        with m.If(accept):
            with m.If(stored):
                m.d.sync += write_address.eq(Mux(write_address == words - 1, 0, write_address + 1))
                with m.If(in_row_beat == 0):
                    m.d.sync += rows_started.eq(rows_started + 1)
                with m.If(in_row_beat == row_words - 1):
                    m.d.sync += rows_written.eq(rows_written + 1)
            with m.If(in_row_beat != row_words - 1):
                m.d.sync += in_row_beat.eq(in_row_beat + 1)
            with m.Else():
                m.d.sync += [in_row_beat.eq(0), in_row.eq(Mux(in_row == p.in_height - 1, 0, in_row + 1))]

        # read side: an output row starts once every row its windows read is written
        most_needed = (p.out_height - 1) * s + k - pad
        need_unclipped = Signal(range(max(rows, most_needed) + 1), init=k - pad, name="rows_needed")
        # (comparisons are left out where the signal's range decides them: Verilator flags those)
        need = Mux(need_unclipped > rows, rows, need_unclipped) if most_needed > rows else need_unclipped
        m.d.comb += can_read.eq(~walk.row_start | (difference(rows_written, frame_first_row) >= need))

        # the word address: the kernel row's slot start plus the column offset ix * C/simd + cb
        # (below zero in padding, where it is not used)
        cb_count = p.channel_beats
        col_first = -pad * cb_count
        col_shape = signed(bits_for_range(col_first, ((p.out_width - 1) * s + k) * cb_count, True))
        column = Signal(col_shape, init=col_first, name="column_offset")
        window_column = Signal(col_shape, init=col_first, name="window_column_offset")
        row_base = Signal(range(max(words, 2)), init=(-pad % slots) * row_words, name="kernel_row_base")
        window_row_base = Signal(range(max(words, 2)), init=(-pad % slots) * row_words, name="window_row_base")
        frame_base = Signal(range(max(words, 2)), name="frame_base")
        m.d.comb += read.addr.eq(row_base + column)

        with m.If(walk.next_beat | walk.next_column):
            m.d.sync += column.eq(column + 1)
        with m.If(walk.next_row):
            m.d.sync += [column.eq(window_column), row_base.eq(plus_modulo(row_base, row_words % words))]
        with m.If(walk.next_window):
            m.d.sync += [
                window_column.eq(window_column + s * cb_count),
                column.eq(window_column + s * cb_count),
                row_base.eq(window_row_base),
            ]
        with m.If(walk.next_window_row | walk.frame_done):
            m.d.sync += [window_column.eq(col_first), column.eq(col_first)]
        with m.If(walk.next_window_row):
            next_base = plus_modulo(window_row_base, (s % slots) * row_words)
            m.d.sync += [window_row_base.eq(next_base), row_base.eq(next_base), need_unclipped.eq(need_unclipped + s)]
            # rows above the next window row's top are never read again
            top = walk.window_iy + s
            m.d.sync += released_in_frame.eq(Mux(top < 0, 0, Mux(top > rows, rows, top)))
        with m.If(walk.frame_done):
            next_frame = plus_modulo(frame_base, (rows % slots) * row_words)
            first_window_row = plus_modulo(frame_base, ((rows - pad) % slots) * row_words)
            m.d.sync += [
                frame_base.eq(next_frame),
                window_row_base.eq(first_window_row),
                row_base.eq(first_window_row),
                need_unclipped.eq(k - pad),
                frame_first_row.eq(frame_first_row + rows),
                released_in_frame.eq(0),
            ]


class _WindowWalk:
    """The read walk's loop counters, innermost first: channel beat, kernel column, kernel row, window
    column, window row; the input coordinates of the position (for padding); and one strobe per kind of
    step, so that an addressing scheme can follow the walk."""

    def __init__(self, m, p: SwgParams, issue):
        k, s, pad = p.kernel_size, p.stride, p.padding
        cb_count = p.channel_beats
        cb = counter(cb_count, "channel_beat")
        kx = counter(k, "kernel_x")
        ky = counter(k, "kernel_y")
        ox = counter(p.out_width, "window_x")
        oy = counter(p.out_height, "window_y")
        first = -pad
        ix_shape = signed(bits_for_range(-pad, (p.out_width - 1) * s + k, True))
        iy_shape = signed(bits_for_range(-pad, (p.out_height - 1) * s + k, True))
        ix = Signal(ix_shape, init=first, name="in_x")
        iy = Signal(iy_shape, init=first, name="in_y")
        window_ix = Signal(ix_shape, init=first, name="window_in_x")
        self.window_iy = window_iy = Signal(iy_shape, init=first, name="window_in_y")

        self.padding = Signal(name="padding")
        self.row_start = Signal(name="output_row_start")
        m.d.comb += [
            self.padding.eq((ix < 0) | (ix >= p.in_width) | (iy < 0) | (iy >= p.in_height)),
            self.row_start.eq((cb == 0) & (kx == 0) & (ky == 0) & (ox == 0)),
        ]
        end_beat, end_col, end_row = cb == cb_count - 1, kx == k - 1, ky == k - 1
        end_window, end_window_row = ox == p.out_width - 1, oy == p.out_height - 1
        self.next_beat, self.next_column, self.next_row = Signal(), Signal(), Signal()
        self.next_window, self.next_window_row, self.frame_done = Signal(), Signal(), Signal()
        m.d.comb += [
            self.next_beat.eq(issue & ~end_beat),
            self.next_column.eq(issue & end_beat & ~end_col),
            self.next_row.eq(issue & end_beat & end_col & ~end_row),
            self.next_window.eq(issue & end_beat & end_col & end_row & ~end_window),
            self.next_window_row.eq(issue & end_beat & end_col & end_row & end_window & ~end_window_row),
            self.frame_done.eq(issue & end_beat & end_col & end_row & end_window & end_window_row),
        ]
        with m.If(self.next_beat):
            m.d.sync += cb.eq(cb + 1)
        with m.If(self.next_column):
            m.d.sync += [cb.eq(0), kx.eq(kx + 1), ix.eq(ix + 1)]
        with m.If(self.next_row):
            m.d.sync += [cb.eq(0), kx.eq(0), ky.eq(ky + 1), ix.eq(window_ix), iy.eq(iy + 1)]
        with m.If(self.next_window):
            m.d.sync += [
                cb.eq(0),
                kx.eq(0),
                ky.eq(0),
                ox.eq(ox + 1),
                window_ix.eq(window_ix + s),
                ix.eq(window_ix + s),
                iy.eq(window_iy),
            ]
        with m.If(self.next_window_row):
            m.d.sync += [
                cb.eq(0),
                kx.eq(0),
                ky.eq(0),
                ox.eq(0),
                oy.eq(oy + 1),
                window_ix.eq(first),
                ix.eq(first),
                window_iy.eq(window_iy + s),
                iy.eq(window_iy + s),
            ]
        with m.If(self.frame_done):
            m.d.sync += [
                cb.eq(0),
                kx.eq(0),
                ky.eq(0),
                ox.eq(0),
                oy.eq(0),
                window_ix.eq(first),
                ix.eq(first),
                window_iy.eq(first),
                iy.eq(first),
            ]


register(
    Block(
        name="swg",
        summary="sliding-window generator: conv input windows ((ky, kx, c) order) from an NHWC image stream, "
        "double-buffered image",
        params=SwgParams,
        component=SlidingWindowGenerator,
        golden=swg_golden,
        cycles=swg_cycles,
        testbench="hardwire.sim.tb_dataflow",
        generator_version=GENERATOR_VERSION,
    )
)
