"""Systolic GEMM array: R x C multiply-accumulate PEs, weight- or output-stationary.

Top to bottom: the parameters, the golden model, the tiling driver, the cycle model, the component.

Dataflows (Y[M, N] = A[M, K] @ W[K, N]):

* ``weight_stationary`` (TPU-style): PE(r, c) holds W[k0 + r, n0 + c]. Activation rows A[m, k0:k0+R]
  enter from the left, skewed one cycle per row; partial sums run down the columns; the bottom edge
  yields A[m, k0:k0+R] @ W[k0:k0+R, n0:n0+C] per row. An on-chip accumulator (``acc_depth`` rows of C
  sums) adds the K tiles together, so a K-deep dot product is summed in hardware at ``acc_width`` bits.
  Weights are double-buffered: the next tile loads into shadow registers through a tagged chain down each
  column while the current tile computes, and a *flip* bit travelling with the first activation row of a
  tile swaps them in PE by PE, exactly when that row reaches the PE.
* ``output_stationary``: PE(r, c) accumulates Y[m0 + r, n0 + c] over K beats; each beat brings an
  activation column A[m0:m0+R, k] and a weight row W[k, n0:n0+C]. The flip bit on the last beat moves
  each PE's sum into a hold register; the hold registers of a column then shift out through the bottom
  while the next tile accumulates.

Neither dataflow has a global stall or enable: the array runs freely, a valid bit travels with the data
and the input is admitted only when the output FIFO has room reserved for its results (credits). This
keeps broadcast nets out of the array (the only multi-PE enable is the drain window of one OS column).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.dsp import (
    DSP_KINDS,
    PRODUCT_LATENCY,
    Int8Packing,
    dsp48e1_mac,
    dsp48e2_packed_mac,
    mult18x18d,
    sim_models,
)
from hardwire.gen.registry import Block, register

from hardwire.params import bits_for_range, int_range, product_range, require, wrap

GENERATOR_VERSION = "1"
DATAFLOWS = ("weight_stationary", "output_stationary")


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class SystolicParams:
    """A validated systolic-array configuration. Raises ParameterError naming the bad parameter."""

    rows: int = 8
    cols: int = 8
    a_width: int = 8
    w_width: int = 8
    a_signed: bool = True
    w_signed: bool = True
    dataflow: str = "weight_stationary"
    k_max: int = 4096
    acc_width: int | None = None
    acc_depth: int = 256
    pipeline: int = 0
    dsp: str = "inferred"
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        require(isinstance(self.rows, int) and 1 <= self.rows <= 64, "rows", self.rows, "1..64")
        require(isinstance(self.cols, int) and 1 <= self.cols <= 64, "cols", self.cols, "1..64")
        require(isinstance(self.a_width, int) and 2 <= self.a_width <= 16, "a_width", self.a_width, "2..16")
        require(isinstance(self.w_width, int) and 2 <= self.w_width <= 16, "w_width", self.w_width, "2..16")
        require(self.dataflow in DATAFLOWS, "dataflow", self.dataflow, " or ".join(DATAFLOWS))
        require(isinstance(self.k_max, int) and 1 <= self.k_max <= 1 << 20, "k_max", self.k_max, "1..1048576")
        require(self.pipeline in (0, 1), "pipeline", self.pipeline, "0 or 1 (extra product register per PE)")
        require(
            isinstance(self.acc_depth, int) and 1 <= self.acc_depth <= 1 << 16, "acc_depth", self.acc_depth, "1..65536"
        )
        require(self.dsp in DSP_KINDS, "dsp", self.dsp, " or ".join(DSP_KINDS))
        if self.dsp != "inferred":
            require(
                self.weight_stationary,
                "dsp",
                self.dsp,
                "'inferred' with output_stationary (hard DSP PEs are weight-stationary)",
            )
            require(
                self.pipeline == 0,
                "pipeline",
                self.pipeline,
                f"0 with dsp={self.dsp!r} (the DSP's own registers pipeline the product)",
            )
        if self.dsp == "dsp48e2":
            require(
                self.cols % 2 == 0, "cols", self.cols, "an even number with dsp='dsp48e2' (column pairs share a DSP)"
            )
            most = Int8Packing.most_terms(self.a_width, self.a_signed, self.w_width, self.w_signed)
            require(
                self.rows <= most,
                "rows",
                self.rows,
                f"1..{most} with dsp='dsp48e2' (the packed column sums must fit the 27-bit pre-adder)",
            )
        if self.acc_width is not None:
            require(
                isinstance(self.acc_width, int) and self.product_width <= self.acc_width <= 64,
                "acc_width",
                self.acc_width,
                f"{self.product_width}..64 (at least one product wide)",
            )

    @property
    def acc_signed(self) -> bool:
        return self.a_signed or self.w_signed

    @property
    def product_range(self) -> tuple[int, int]:
        return product_range(int_range(self.a_width, self.a_signed), int_range(self.w_width, self.w_signed))

    @property
    def product_width(self) -> int:
        return bits_for_range(*self.product_range, self.acc_signed)

    @property
    def derived_acc_width(self) -> int:
        """Just wide enough that a k_max-deep dot product of extreme operands cannot overflow."""
        lo, hi = self.product_range
        return bits_for_range(lo * self.k_max, hi * self.k_max, self.acc_signed)

    @property
    def acc_bits(self) -> int:
        return self.acc_width if self.acc_width is not None else self.derived_acc_width

    @property
    def weight_stationary(self) -> bool:
        return self.dataflow == "weight_stationary"

    @property
    def product_latency(self) -> int:
        """Registers between a PE's operands and the product its sum register adds: `pipeline` when inferred,
        the primitive's input/pipeline/output registers otherwise (gen.dsp.PRODUCT_LATENCY)."""
        return PRODUCT_LATENCY.get(self.dsp, self.pipeline)

    @property
    def packed(self) -> bool:
        """dsp48e2: two columns per DSP, sharing the row's activation (INT8 packing, gen.dsp.Int8Packing)."""
        return self.dsp == "dsp48e2"

    @property
    def packing(self) -> Int8Packing:
        return Int8Packing(self.a_width, self.a_signed, self.w_width, self.w_signed, terms=self.rows)

    @property
    def array_cols(self) -> int:
        """PE columns the activations pass through: cols, or cols / 2 when two columns share a DSP."""
        return self.cols // 2 if self.packed else self.cols

    @property
    def column_slots(self) -> list[list[int]]:
        """The weight columns of each PE column, left to right."""
        if self.packed:
            return [[2 * s, 2 * s + 1] for s in range(self.array_cols)]
        return [[c] for c in range(self.cols)]

    @property
    def weight_lag(self) -> int:
        """A hard-DSP PE keeps its weight in the DSP's B input register, loaded (by the flip, one cycle late)
        together with the A register: one cycle more before the shadow may take the next tile."""
        return 0 if self.dsp == "inferred" else 1

    @property
    def top_name(self) -> str:
        if self.name:
            return self.name
        sign = lambda s: "s" if s else "u"
        flow = "ws" if self.weight_stationary else "os"
        name = (
            f"systolic_{flow}_{self.rows}x{self.cols}_a{self.a_width}{sign(self.a_signed)}"
            f"_w{self.w_width}{sign(self.w_signed)}"
        )
        # every parameter that changes the hardware and differs from its default shows in the name
        defaults = SystolicParams.__dataclass_fields__
        for field_name, tag in (
            ("pipeline", "p"),
            ("k_max", "k"),
            ("acc_width", "acc"),
            ("acc_depth", "d"),
            ("dsp", ""),
        ):
            if getattr(self, field_name) != defaults[field_name].default:
                name += f"_{tag}{getattr(self, field_name)}"
        return name

    @property
    def latency_cycles(self) -> int:
        """Cycles from the input handshake of a row (WS) or of a tile's last beat (OS) to its first result
        handshake, with an always-ready sink."""
        skew_array_deskew = self.rows + self.array_cols + self.product_latency
        accumulate = ACCUMULATE_STAGES if self.weight_stationary else 0
        return skew_array_deskew + accumulate + FIFO_LATENCY_CYCLES

    @property
    def weight_reload_cycles(self) -> int:
        """WS: fewest cycles between two weight flips. The next tile's weights may enter a column only
        once the flip has passed it (R + max(1, C-1)); and a row must not come back to the accumulator
        before its previous sum is written (ACCUMULATE_STAGES + 1), which matters only for tiny arrays.
        A hard-DSP PE loads its weight register a cycle later (weight_lag)."""
        return max(self.rows + max(1, self.array_cols - 1) + self.weight_lag, ACCUMULATE_STAGES + 1)

    @property
    def fifo_depth(self) -> int:
        """Result FIFO entries: enough credits that an always-ready sink never throttles the input."""
        burst = 1 if self.weight_stationary else self.rows
        # + one burst more than the round trip needs: `room_for_burst` is registered and conservative
        return self.latency_cycles + 2 * burst + 2

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "cols": self.cols,
            "a_width": self.a_width,
            "w_width": self.w_width,
            "a_signed": self.a_signed,
            "w_signed": self.w_signed,
            "dataflow": self.dataflow,
            "k_max": self.k_max,
            "acc_width": self.acc_bits,
            "acc_depth": self.acc_depth,
            "pipeline": self.pipeline,
            "dsp": self.dsp,
            "name": self.top_name,
        }


# A SyncFIFOBuffered entry written at the end of cycle t is handed out (handshake) in cycle t + 2.
FIFO_LATENCY_CYCLES = 2
# WS accumulator: read address; block-RAM output register; add; write back (and into the result FIFO).
ACCUMULATE_STAGES = 3
# Control bits that travel beside the data hold equal values in every column (or along every anti-diagonal);
# synthesis would merge those registers into one that drives a whole row, the very broadcast net a
# systolic array exists to avoid. `keep` leaves one copy per PE, next to its datapath.
KEEP = {"keep": 1}


# --------------------------------------------------------------------------------------------------
# Golden model


def check_operands(p: SystolicParams, a: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a GEMM's operands against the array's widths; return them as int64."""
    a = np.asarray(a)
    w = np.asarray(w)
    require(
        a.ndim == 2 and w.ndim == 2 and a.shape[1] == w.shape[0], "shapes", (a.shape, w.shape), "A[M, K] and W[K, N]"
    )
    require(a.shape[1] <= p.k_max, "K", a.shape[1], f"1..k_max={p.k_max}")
    for name, x, width, sgn in (("A", a, p.a_width, p.a_signed), ("W", w, p.w_width, p.w_signed)):
        lo, hi = int_range(width, sgn)
        require(
            x.size == 0 or (x.min() >= lo and x.max() <= hi),
            f"{name} values",
            (int(x.min()), int(x.max())) if x.size else (),
            f"{lo}..{hi}",
        )
    return a.astype(np.int64), w.astype(np.int64)


def systolic_golden(p: SystolicParams, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exactly what the array computes: the int64 product A @ W held in an acc_width-bit register."""
    a, w = check_operands(p, a, w)
    return wrap(a @ w, p.acc_bits, p.acc_signed)


# --------------------------------------------------------------------------------------------------
# Tiling driver: any M x K x N GEMM as a sequence of beats on the array's three streams


@dataclass
class GemmPlan:
    """Beats to send on each input stream and where each result beat belongs in Y."""

    weights: list[list[int]]  # per beat: C weight lanes
    activations: list[dict]  # per beat: {"data": R lanes, "last": 0/1, (WS) "accumulate", "emit"}
    results: list[tuple[int, int]]  # per result beat: (row m of Y, first column n0 of its C lanes)
    tile_rows: list[int]  # WS: rows per weight tile; OS: K per tile (for the cycle model)
    shape: tuple[int, int, int]


def plan_gemm(p: SystolicParams, a: np.ndarray, w: np.ndarray) -> GemmPlan:
    """Tile Y = A @ W onto the array. WS: K tiles accumulate on chip per chunk of acc_depth rows."""
    a, w = check_operands(p, a, w)
    m_total, k_total = a.shape
    n_total = w.shape[1]
    rows, cols = p.rows, p.cols

    def padded(block: np.ndarray, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width), dtype=np.int64)
        out[: block.shape[0], : block.shape[1]] = block
        return out

    weights, activations, results, tile_rows = [], [], [], []
    if p.weight_stationary:
        k_tiles = range(0, k_total, rows)
        for m0 in range(0, m_total, p.acc_depth):
            chunk = min(p.acc_depth, m_total - m0)
            for n0 in range(0, n_total, cols):
                for k0 in k_tiles:
                    tile = padded(w[k0 : k0 + rows, n0 : n0 + cols], rows, cols)
                    weights.extend(tile.tolist())
                    acts = padded(a[m0 : m0 + chunk, k0 : k0 + rows], chunk, rows)
                    final_k = k0 + rows >= k_total
                    for i, row in enumerate(acts.tolist()):
                        activations.append(
                            {"data": row, "last": int(i == chunk - 1), "accumulate": int(k0 > 0), "emit": int(final_k)}
                        )
                    tile_rows.append(chunk)
                results.extend((m0 + i, n0) for i in range(chunk))
    else:
        for m0 in range(0, m_total, rows):
            for n0 in range(0, n_total, cols):
                a_block = padded(a[m0 : m0 + rows, :], rows, k_total)
                w_block = padded(w[:, n0 : n0 + cols], k_total, cols)
                for k in range(k_total):
                    activations.append({"data": a_block[:, k].tolist(), "last": int(k == k_total - 1)})
                    weights.append(w_block[k].tolist())
                tile_rows.append(k_total)
                results.extend((m0 + i, n0) for i in range(rows) if m0 + i < m_total)
    return GemmPlan(weights, activations, results, tile_rows, (m_total, k_total, n_total))


def assemble_results(p: SystolicParams, plan: GemmPlan, beats: list[list[int]]) -> np.ndarray:
    """Place result beats (C lanes each, in arrival order) into Y[M, N]. OS tiles of a partial last
    row block emit R beats of which only the real rows are kept."""
    m_total, _, n_total = plan.shape
    y = np.zeros((m_total, n_total), dtype=np.int64)
    expected = expected_result_beats(p, plan)
    if len(beats) != expected:
        raise ValueError(f"got {len(beats)} result beats, the plan produces {expected}")
    placed = iter(plan.results)
    for index, lanes in enumerate(beats):
        if not p.weight_stationary:
            tile, row_in_tile = divmod(index, p.rows)
            m0 = (tile // ceil(n_total / p.cols)) * p.rows
            if m0 + row_in_tile >= m_total:
                continue
        m, n0 = next(placed)
        width = min(p.cols, n_total - n0)
        y[m, n0 : n0 + width] = lanes[:width]
    return y


def expected_result_beats(p: SystolicParams, plan: GemmPlan) -> int:
    return len(plan.results) if p.weight_stationary else len(plan.tile_rows) * p.rows


def expected_last_flags(p: SystolicParams, plan: GemmPlan) -> list[int]:
    """The `last` bit of every result beat: set on the final row of each emitted block."""
    if not p.weight_stationary:
        return [int(i % p.rows == p.rows - 1) for i in range(len(plan.tile_rows) * p.rows)]
    flags = []
    m_total = plan.shape[0]
    for m, _ in plan.results:
        chunk_end = min((m // p.acc_depth + 1) * p.acc_depth, m_total)
        flags.append(int(m == chunk_end - 1))
    return flags


# --------------------------------------------------------------------------------------------------
# Cycle model


def tile_cycles(p: SystolicParams, tile_rows: int) -> int:
    """Cycles one tile occupies the input once the pipeline is streaming (its initiation interval):
    WS: a tile of `tile_rows` activation rows, overlapped with loading the next weight tile;
    OS: a tile of K = `tile_rows` beats, at least R apart so that drains do not collide."""
    if p.weight_stationary:
        return max(tile_rows, p.weight_reload_cycles)
    return max(tile_rows, p.rows)


def gemm_cycles(p: SystolicParams, m: int, k: int, n: int) -> int:
    """Exact cycles from the first input handshake to the last result handshake for an M x K x N GEMM
    driven by `plan_gemm`, with always-valid sources and an always-ready sink."""
    plan_tiles = _tile_sequence(p, m, k, n)
    if p.weight_stationary:
        # First weight tile: R beats, then the first row may flip the weights in.
        start = p.rows
        for rows_in_tile in plan_tiles[:-1]:
            start += tile_cycles(p, rows_in_tile)
        last_input = start + plan_tiles[-1] - 1
        return last_input + p.latency_cycles + 1
    last_beat = plan_tiles[0] - 1
    for tile_k in plan_tiles[1:]:
        last_beat += tile_cycles(p, tile_k)
    return last_beat + p.latency_cycles + p.rows


def _tile_sequence(p: SystolicParams, m: int, k: int, n: int) -> list[int]:
    if p.weight_stationary:
        tiles = []
        for m0 in range(0, m, p.acc_depth):
            chunk = min(p.acc_depth, m - m0)
            tiles += [chunk] * (ceil(n / p.cols) * ceil(k / p.rows))
        return tiles
    return [k] * (ceil(m / p.rows) * ceil(n / p.cols))


def gemm_utilization(p: SystolicParams, m: int, k: int, n: int) -> float:
    """Useful MACs over PE-cycles for the whole GEMM (pipeline fill and drain included)."""
    return (m * k * n) / (p.rows * p.cols * gemm_cycles(p, m, k, n))


# --------------------------------------------------------------------------------------------------
# Component


def activation_layout(p: SystolicParams) -> data.StructLayout:
    fields = {"data": data.ArrayLayout(_shape(p.a_width, p.a_signed), p.rows), "last": 1}
    if p.weight_stationary:
        fields |= {"accumulate": 1, "emit": 1}
    return data.StructLayout(fields)


def weight_layout(p: SystolicParams) -> data.ArrayLayout:
    return data.ArrayLayout(_shape(p.w_width, p.w_signed), p.cols)


def result_layout(p: SystolicParams) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(_shape(p.acc_bits, p.acc_signed), p.cols), "last": 1})


def _shape(width: int, is_signed: bool):
    return signed(width) if is_signed else unsigned(width)


class SystolicArray(wiring.Component):
    """The array with its skew/deskew registers, controller, (WS) accumulator and result FIFO.

    Ports (valid/ready streams): ``weights`` (C lanes per beat), ``activations`` (R lanes + flags),
    ``results`` (C accumulator lanes + ``last``). See the module docstring for the beat protocol.
    """

    def __init__(self, p: SystolicParams):
        self.p = p
        super().__init__(
            {
                "weights": In(stream.Signature(weight_layout(p))),
                "activations": In(stream.Signature(activation_layout(p))),
                "results": Out(stream.Signature(result_layout(p))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.p
        rows, cols = p.rows, p.cols
        acc_shape = _shape(p.acc_bits, p.acc_signed)

        m.submodules.result_fifo = result_fifo = fifo.SyncFIFOBuffered(
            width=Shape.cast(result_layout(p)).width, depth=p.fifo_depth
        )
        m.d.comb += [
            self.results.valid.eq(result_fifo.r_rdy),
            self.results.payload.eq(result_fifo.r_data),
            result_fifo.r_en.eq(self.results.ready),
        ]

        # Credits: results promised to accepted inputs but not yet handed out.
        burst = 1 if p.weight_stationary else rows
        reserved = Signal(range(p.fifo_depth + 1))
        # Registered, so the input handshake does not wait on an adder: computed a cycle early, it
        # assumes that cycle reserves a burst too.
        room_for_burst = Signal(init=1)
        m.d.sync += room_for_burst.eq(reserved + 2 * burst <= p.fifo_depth)
        reserve = Signal()
        release = Signal()
        m.d.comb += release.eq(self.results.valid & self.results.ready)
        m.d.sync += reserved.eq(reserved + Const(burst) * reserve - release)

        if p.weight_stationary:
            row_inputs, flip_inputs, column_inputs, drain_window, vector_valid = self._weight_stationary_control(
                m, reserve, room_for_burst
            )
        else:
            row_inputs, flip_inputs, column_inputs, drain_window, vector_valid = self._output_stationary_control(
                m, reserve, room_for_burst
            )

        # Row skew: row r enters the array r cycles after row 0 (plus the input register). In WS the flip
        # runs one cycle ahead of its row, so a PE swaps its weights the cycle before it multiplies with
        # them and the multiplier reads a plain register (no multiplexer in front of the DSP).
        a_edge = [_delay(m, row_inputs[r], 1 + r, f"a_skew{r}", data_path=True) for r in range(rows)]
        flip_lead = 1 if p.weight_stationary else 0
        flip_edge = [_delay(m, flip_inputs[r], 1 + r - flip_lead, f"flip_skew{r}") for r in range(rows)]

        if p.weight_stationary:
            bottom = self._weight_stationary_array(m, a_edge, flip_edge, column_inputs, acc_shape)
        else:
            w_edge = [_delay(m, column_inputs[c], 1 + c, f"w_skew{c}", data_path=True) for c in range(cols)]
            bottom = self._output_stationary_array(m, a_edge, flip_edge, w_edge, drain_window, acc_shape)

        # Deskew: PE column s leaves the array s cycles after column 0; delay it by S-1-s to line up (S = C,
        # or C / 2 when two weight columns share a packed DSP).
        slot_of = {c: s for s, slot_cols in enumerate(p.column_slots) for c in slot_cols}
        vector = [
            _delay(m, bottom[c], p.array_cols - 1 - slot_of[c], f"deskew{c}", data_path=True) for c in range(cols)
        ]

        if p.weight_stationary:
            self._accumulate(m, vector, vector_valid, result_fifo, acc_shape)
        else:
            valid, last = vector_valid
            m.d.comb += [
                result_fifo.w_en.eq(valid),
                result_fifo.w_data.eq(_pack(vector, last)),
            ]
        return m

    # -- weight stationary -------------------------------------------------------------------------

    def _weight_stationary_control(self, m, reserve, room_for_burst):
        p = self.p
        rows, cols = p.rows, p.cols
        act = self.activations

        shadow_full = Signal()  # a complete weight tile waits in the shadow registers
        load_count = Signal(range(max(rows, 2)))  # 1 bit even for one row: no zero-width wires
        cooldown = Signal(range(p.weight_reload_cycles))
        first_pending = Signal(init=1)  # the next activation row starts a tile (flips the weights)

        # A new weight tile may overwrite the shadows only after the flip has passed every column.
        m.d.comb += self.weights.ready.eq(~shadow_full & (cooldown == 0))
        w_accept = self.weights.valid & self.weights.ready
        with m.If(w_accept):
            with m.If(load_count == rows - 1):
                m.d.sync += [load_count.eq(0), shadow_full.eq(1)]
            with m.Else():
                m.d.sync += load_count.eq(load_count + 1)

        # A row must not reach the accumulator again before its previous sum is written back. At full
        # rate the weight reload interval guarantees that; when the activations stall, a short tile (fewer
        # than ACCUMULATE_STAGES + 1 rows) could return too soon, so its successor's first row waits until
        # (cycles since the tile's last row) + (rows in the tile) > ACCUMULATE_STAGES + 1.
        horizon = ACCUMULATE_STAGES + 1
        since_last_row = Signal(range(horizon + 1), init=horizon)
        rows_in_tile = Signal(range(horizon + 1))
        rows_in_last_tile = Signal(range(horizon + 1), init=horizon)
        accumulator_free = Signal()
        m.d.comb += accumulator_free.eq(since_last_row + rows_in_last_tile > horizon)
        m.d.comb += act.ready.eq(
            (~first_pending | (shadow_full & accumulator_free)) & (~act.payload.emit | room_for_burst)
        )
        accept = act.valid & act.ready
        flip = Signal()
        m.d.comb += [flip.eq(accept & first_pending), reserve.eq(accept & act.payload.emit)]
        with m.If(accept):
            m.d.sync += first_pending.eq(act.payload.last)
        with m.If(accept & act.payload.last):
            m.d.sync += [
                since_last_row.eq(1),
                rows_in_tile.eq(0),
                rows_in_last_tile.eq(Mux(rows_in_tile == horizon, horizon, rows_in_tile + 1)),
            ]
        with m.Else():
            with m.If(since_last_row != horizon):
                m.d.sync += since_last_row.eq(since_last_row + 1)
            with m.If(accept & (rows_in_tile != horizon)):
                m.d.sync += rows_in_tile.eq(rows_in_tile + 1)
        with m.If(flip):
            # weights may enter again weight_reload_cycles - R cycles after the flip
            m.d.sync += [shadow_full.eq(0), cooldown.eq(p.weight_reload_cycles - rows - 1)]
        with m.Elif(cooldown != 0):
            m.d.sync += cooldown.eq(cooldown - 1)

        # Weight beats enter the top of every column with a tag naming their destination row.
        column_inputs = [self.weights.payload[c] for c in range(cols)]
        self._w_tag = (load_count, w_accept)

        # Row metadata for the result side travels a delay line as long as skew + array + deskew.
        meta = data.StructLayout({"valid": 1, "accumulate": 1, "emit": 1, "last": 1})
        meta_in = Signal(meta)
        m.d.comb += [
            meta_in.valid.eq(accept),
            meta_in.accumulate.eq(act.payload.accumulate),
            meta_in.emit.eq(act.payload.emit),
            meta_in.last.eq(act.payload.last),
        ]
        meta_out = _delay(m, meta_in, rows + p.array_cols + p.product_latency, "row_meta")
        row_inputs = [act.payload.data[r] for r in range(rows)]
        flips = [flip] * rows
        return row_inputs, flips, column_inputs, None, meta_out

    def _weight_stationary_array(self, m, a_edge, flip_edge, w_top, acc_shape):
        p = self.p
        rows, cols = p.rows, p.cols
        w_shape = self.weights.payload[0].shape()
        tag, tag_valid = self._w_tag
        # what enters each column's PE of the current row: weight value, its destination tag, tag valid
        w_in, t_in, tv_in = list(w_top), [tag] * cols, [tag_valid] * cols
        psum = [Const(0, acc_shape)] * cols
        pcout = [None] * p.array_cols  # DSP48: the PCOUT of the DSP above, cascaded into the next PCIN
        for r in range(rows):
            a_in, flip_in = a_edge[r], flip_edge[r]
            for slot, slot_cols in enumerate(p.column_slots):
                pe = f"pe_{r}_{slot}"
                # the weight chain passes down unconditionally; a PE keeps the value tagged for its row
                shadows = []
                for c in slot_cols:
                    shadow = Signal(w_shape, name=f"pe_{r}_{c}_shadow", reset_less=True)
                    with m.If(tv_in[c] & (t_in[c] == r)):
                        m.d.sync += shadow.eq(w_in[c])
                    shadows.append(shadow)
                if p.dsp == "inferred":
                    (c,), (shadow,) = slot_cols, shadows
                    weight = Signal(w_shape, name=f"{pe}_weight", reset_less=True)
                    with m.If(flip_in):
                        m.d.sync += weight.eq(shadow)
                    psum_out = Signal(acc_shape, name=f"{pe}_psum", reset_less=True)
                    m.d.sync += psum_out.eq(psum[c] + self._product(m, pe, a_in, weight, acc_shape))
                    psum[c] = psum_out
                else:
                    # The DSP's weight register (B; A and D when packed) loads the shadow when the flip (one
                    # cycle ahead of the row) has been registered once more, in step with the activation's
                    # input register taking the row's first activation.
                    flip_late = Signal(name=f"{pe}_flip_late", attrs=KEEP)
                    m.d.sync += flip_late.eq(flip_in)
                    if p.dsp == "ecp5":
                        (c,), (shadow,) = slot_cols, shadows
                        product = mult18x18d(
                            m,
                            pe,
                            a_in,
                            shadow,
                            a_signed=p.a_signed,
                            b_signed=p.w_signed,
                            ce_b=flip_late,
                            width=p.product_width,
                        )
                        psum_out = Signal(acc_shape, name=f"{pe}_psum", reset_less=True)
                        m.d.sync += psum_out.eq(psum[c] + product)
                        psum[c] = psum_out
                    else:
                        # the column's partial sum runs down the PCOUT -> PCIN cascade, inside the DSPs
                        if p.dsp == "dsp48e1":
                            p48, pcout[slot] = dsp48e1_mac(m, pe, a_in, shadows[0], ce_b=flip_late, pcin=pcout[slot])
                        else:
                            p48, pcout[slot] = dsp48e2_packed_mac(
                                m,
                                pe,
                                a_in,
                                shadows[0],
                                shadows[1],
                                guard_bits=p.packing.guard_bits,
                                ce_w=flip_late,
                                pcin=pcout[slot],
                            )
                        if r == rows - 1:
                            for c, value in zip(slot_cols, self._column_sums(m, pe, p48)):
                                psum[c] = Signal(acc_shape, name=f"pe_{r}_{c}_psum")
                                m.d.comb += psum[c].eq(value)
                for c in slot_cols:
                    if r + 1 < rows:
                        w_down = Signal(w_shape, name=f"pe_{r}_{c}_w_down", reset_less=True)
                        t_down = Signal(tag.shape(), name=f"pe_{r}_{c}_tag_down", reset_less=True, attrs=KEEP)
                        tv_down = Signal(name=f"pe_{r}_{c}_tv_down", attrs=KEEP)
                        m.d.sync += [w_down.eq(w_in[c]), t_down.eq(t_in[c]), tv_down.eq(tv_in[c])]
                        w_in[c], t_in[c], tv_in[c] = w_down, t_down, tv_down
                if slot + 1 < p.array_cols:
                    a_in, flip_in = _pass_right(m, pe, a_in, flip_in)
        return psum

    def _column_sums(self, m, pe, p48) -> list:
        """The column sums at the bottom of a DSP48 cascade: P itself, or the two sums packed in it."""
        p = self.p
        if not p.packed:
            # |column sum| < 2^47: P is exact, sign-extended when the accumulator is wider than 48 bits
            return [p48.as_signed()]
        k = p.packing
        g = k.guard_bits
        low_field = Signal(g, name=f"{pe}_low_field")  # (S_lo - low_min) mod 2^G
        low = Signal(signed(bits_for_range(k.low_min, k.low_min + (1 << g) - 1, True)), name=f"{pe}_low")
        high = Signal(signed(48 - g + 1), name=f"{pe}_high")
        m.d.comb += [
            low_field.eq(p48 - k.low_min),
            low.eq(low_field + k.low_min),
            high.eq((p48.as_signed() - low) >> g),
        ]
        return [low, high]

    def _product(self, m, pe, a, w, acc_shape):
        """a * w, widened to the accumulator; registered once more when pipeline=1 (DSP output register)."""
        product = Signal(acc_shape, name=f"{pe}_product", reset_less=True)
        if self.p.pipeline:
            m.d.sync += product.eq(a * w)
        else:
            m.d.comb += product.eq(a * w)
        return product

    def _accumulate(self, m, vector, meta, result_fifo, acc_shape):
        """Add each K tile's row into the on-chip accumulator; emit the sum on the last K tile."""
        p = self.p
        sums = data.ArrayLayout(acc_shape, p.cols)
        m.submodules.accumulator = acc_mem = memory.Memory(shape=sums, depth=p.acc_depth, init=[])
        read = acc_mem.read_port()
        write = acc_mem.write_port()

        row = Signal(range(p.acc_depth))
        with m.If(meta.valid):
            m.d.sync += row.eq(Mux(meta.last, 0, row + 1))
        m.d.comb += read.addr.eq(row)

        # The vector and its metadata wait beside the read: the stored row arrives one cycle after the
        # address and is registered once more (block-RAM clock-to-out is slow), then added and registered.
        vector_b = _delay(m, _pack(vector), 1, "acc_vector_b", data_path=True)
        vector_c = data.View(sums, _delay(m, vector_b, 1, "acc_vector_c", data_path=True))
        meta_c = _delay(m, meta, 2, "acc_meta")
        row_d = _delay(m, row, 3, "acc_row", data_path=True)
        stored = Signal(sums, name="acc_stored", reset_less=True)
        m.d.sync += stored.eq(read.data)
        total = Signal(sums, name="acc_total", reset_less=True)
        for c in range(p.cols):
            m.d.sync += total[c].eq(vector_c[c] + Mux(meta_c.accumulate, stored[c], 0))
        meta_d = _delay(m, meta_c, 1, "acc_meta_d")
        m.d.comb += [
            write.addr.eq(row_d),
            write.en.eq(meta_d.valid),
            write.data.eq(total),
            result_fifo.w_en.eq(meta_d.valid & meta_d.emit),
            result_fifo.w_data.eq(_pack([total[c] for c in range(p.cols)], meta_d.last)),
        ]

    # -- output stationary -------------------------------------------------------------------------

    def _output_stationary_control(self, m, reserve, room_for_burst):
        p = self.p
        rows, cols = p.rows, p.cols
        act, wts = self.activations, self.weights

        # A tile's last beat must come >= R cycles after the previous one: its drain needs the column.
        since_last = Signal(range(rows + 1), init=rows)
        is_last = act.payload.last
        allowed = ~is_last | ((since_last == rows) & room_for_burst)
        both = act.valid & wts.valid
        m.d.comb += [act.ready.eq(both & allowed), wts.ready.eq(both & allowed)]
        accept = both & allowed
        finish = Signal()
        m.d.comb += [finish.eq(accept & is_last), reserve.eq(finish)]
        with m.If(finish):
            m.d.sync += since_last.eq(1)
        with m.Elif(since_last != rows):
            m.d.sync += since_last.eq(since_last + 1)

        # Lane i of the activations feeds array row R-1-i, so the bottom row (drained first) is lane 0.
        # A PE accumulates every cycle, so cycles without a beat must bring a zero activation.
        row_inputs = [Mux(accept, act.payload.data[rows - 1 - r], 0) for r in range(rows)]
        column_inputs = [wts.payload[c] for c in range(cols)]

        # Drain timing: column 0's hold registers are all loaded 1 + R + pipeline cycles after `finish`.
        drain_start = _delay(m, finish, 1 + rows + p.pipeline, "drain_start")
        drain_left = Signal(range(max(rows, 2)))  # no zero-width wires for one row
        with m.If(drain_start):
            m.d.sync += drain_left.eq(rows - 1)
        with m.Elif(drain_left != 0):
            m.d.sync += drain_left.eq(drain_left - 1)
        drain0 = Signal()
        m.d.comb += drain0.eq(drain_start | (drain_left != 0))
        end0 = Signal()
        m.d.comb += end0.eq(Mux(drain_start, rows == 1, drain_left == 1))
        valid = _delay(m, drain0, cols - 1, "out_valid")
        last = _delay(m, end0, cols - 1, "out_last")
        return row_inputs, [finish] * rows, column_inputs, drain0, (valid, last)

    def _output_stationary_array(self, m, a_edge, flip_edge, w_edge, drain0, acc_shape):
        p = self.p
        rows, cols = p.rows, p.cols
        drain = [drain0]
        for c in range(1, cols):
            d = Signal(name=f"drain{c}")
            m.d.sync += d.eq(drain[-1])
            drain.append(d)
        w_in = list(w_edge)
        hold_above = [None] * cols
        for r in range(rows):
            a_in, flip_in = a_edge[r], flip_edge[r]
            for c in range(cols):
                pe = f"pe_{r}_{c}"
                product = self._product(m, pe, a_in, w_in[c], acc_shape)
                flip = flip_in
                if p.pipeline:
                    flip = Signal(name=f"{pe}_flip_d")
                    m.d.sync += flip.eq(flip_in)
                acc = Signal(acc_shape, name=f"{pe}_acc")
                hold = Signal(acc_shape, name=f"{pe}_hold", reset_less=True)
                total = Signal(acc_shape, name=f"{pe}_total")
                m.d.comb += total.eq(acc + product)
                m.d.sync += acc.eq(Mux(flip, 0, total))
                with m.If(flip):
                    m.d.sync += hold.eq(total)
                with m.Elif(drain[c]):
                    if r > 0:
                        m.d.sync += hold.eq(hold_above[c])
                hold_above[c] = hold
                if c + 1 < cols:
                    a_in, flip_in = _pass_right(m, pe, a_in, flip_in)
                if r + 1 < rows:
                    w_next = Signal(w_in[c].shape(), name=f"{pe}_w_down", reset_less=True)
                    m.d.sync += w_next.eq(w_in[c])
                    w_in[c] = w_next
        return hold_above


def _pass_right(m, pe: str, a, flip):
    """The activation and its flip bit, registered on their way to the PE on the right."""
    a_next = Signal(a.shape(), name=f"{pe}_a_right", reset_less=True)
    flip_next = Signal(name=f"{pe}_flip_right", attrs=KEEP)
    m.d.sync += [a_next.eq(a), flip_next.eq(flip)]
    return a_next, flip_next


def _pack(lanes, last=None):
    """Concatenate lanes (element 0 at the LSB) and an optional trailing `last` bit into a raw value."""
    parts = [Value.cast(lane) for lane in lanes]
    if last is not None:
        parts.append(last)
    return Cat(*parts)


def _delay(m, value, cycles: int, name: str, *, data_path: bool = False):
    """`value` delayed by `cycles` registers (0: the value itself). Data-path delays have no reset: a
    reset net reaching thousands of operand registers costs routing and buys nothing, since a valid
    bit (which is reset) says when the data matter."""
    for i in range(cycles):
        reg = Signal(value.shape(), name=f"{name}_d{i}", reset_less=data_path)
        m.d.sync += reg.eq(value)
        value = reg
    return value


register(
    Block(
        name="systolic",
        summary="R x C systolic GEMM array (weight- or output-stationary), any M x K x N by tiling",
        params=SystolicParams,
        component=SystolicArray,
        golden=systolic_golden,
        cycles=gemm_cycles,
        testbench="hardwire.sim.tb_systolic",
        generator_version=GENERATOR_VERSION,
        sim_models=lambda p: sim_models(p.dsp),
    )
)
