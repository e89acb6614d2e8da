"""BitMoD processing elements (mixture of datatypes, HPCA 2025): P PEs sharing one INT8 activation stream.

Top to bottom: the parameters, the unified term representation, the golden model, the GEMV driver, the cycle
model, the component. Datatypes, scale format and the quantizer are in gen/bitmod_quant.py.

Unified representation: every weight of every datatype (its integer grid value, see bitmod_quant) is written
as at most T = 2 signed powers of two (its non-adjacent form: 12 = 16 - 4, 7 = 8 - 1, 10 = 8 + 2; shifts
0..4). A PE has L lanes; in each cycle lane l adds or subtracts activation[l] << shift of one term of its
weight, the L lane results are summed and accumulated into the group's partial sum. A chunk of L weights
therefore takes `terms` cycles, the same for every weight of the chunk: the most terms any PE's datatype
needs (1 for fp3, 2 for every other type). A group of G weights is G / L chunks.

Bit-serial dequantization: at the end of a group the integer partial sum moves to a hand-off register; the
dequantization unit takes it, shifts it left by the group's scale exponent e and then, over S =
scale_bits cycles (one mantissa bit per cycle, LSB first), adds psum << (e + i) into the PE's output
accumulator whenever bit i of the scale mantissa m is set. It runs while the PE already accumulates the next
group. The output is the exact integer sum_g psum_g * m_g * 2**e_g, `out_width` bits, never overflowing for
dot products up to k_max; its real value is that integer * 2**base of the output row (bitmod_quant).

Streams (valid/ready): ``weights`` one beat per chunk: P x L codes (4 bits each), per PE the group's type id,
scale mantissa and exponent, and ``last`` (read on a group's final chunk: the dot product ends with this
group); every beat of a group carries the same type and scale. ``activations``: L signed lanes per chunk.
Both are taken together. ``results``: P output lanes per dot product.

Timing: a chunk is taken in the cycle the previous one issues its last term (no bubble between chunks); its
terms issue in the following cycles. The group-final term waits while the hand-off register is full and not
being emptied. The dequantization unit takes the hand-off when idle or in its last cycle, and for a
dot product's last group only while the result FIFO has a reserved entry (credits, as in gen/systolic.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.bitmod_quant import (
    CODE_BITS,
    DATATYPES,
    TYPE_ID_BITS,
    QuantizedWeights,
    decode,
    max_shift,
    max_terms,
    signed_digits,
)
from hardwire.gen.registry import Block, register

from hardwire.params import bits_for_range, int_range, is_int, require

GENERATOR_VERSION = "1"
# A SyncFIFOBuffered entry written at the end of cycle t is handed out (handshake) in cycle t + 2.
FIFO_LATENCY_CYCLES = 2
RESULT_FIFO_DEPTH = 4
TERMS = max_terms()  # T = 2
SHIFT_MAX = max_shift()  # 4 (16 = 2**4)
TERM_BITS = max(1, (TERMS - 1).bit_length())


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class BitmodParams:
    """A validated BitMoD PE array. Raises ParameterError naming the bad parameter."""

    pes: int = 4  # P PEs (output rows) sharing the activation stream; 1 = a single PE
    lanes: int = 8  # L weights x activations per PE per cycle
    group_size: int = 128  # G weights per scale and datatype
    a_width: int = 8  # signed activations
    scale_bits: int = 8  # S: scale mantissa bits = dequantization cycles
    scale_exp_bits: int = 3  # scale exponent bits (e in 0..2**bits - 1)
    k_max: int = 4096  # longest dot product the output accumulator holds exactly

    def __post_init__(self):
        require(is_int(self.pes) and 1 <= self.pes <= 64, "pes", self.pes, "1..64")
        require(is_int(self.lanes) and 1 <= self.lanes <= 128, "lanes", self.lanes, "1..128")
        require(
            is_int(self.group_size) and 1 <= self.group_size <= 4096 and self.group_size % self.lanes == 0,
            "group_size",
            self.group_size,
            f"1..4096 and a multiple of lanes={self.lanes}",
        )
        require(is_int(self.a_width) and 2 <= self.a_width <= 16, "a_width", self.a_width, "2..16")
        require(is_int(self.scale_bits) and 1 <= self.scale_bits <= 16, "scale_bits", self.scale_bits, "1..16")
        require(
            is_int(self.scale_exp_bits) and 0 <= self.scale_exp_bits <= 4, "scale_exp_bits", self.scale_exp_bits, "0..4"
        )
        require(
            is_int(self.k_max) and self.group_size <= self.k_max <= 1 << 20 and self.k_max % self.group_size == 0,
            "k_max",
            self.k_max,
            f"a multiple of group_size={self.group_size}, at most 1048576",
        )
        require(self.out_width <= 63, "out_width", self.out_width, "<= 63 (lower k_max, scale or widths)")

    @property
    def chunks_per_group(self) -> int:
        return self.group_size // self.lanes

    @property
    def e_max(self) -> int:
        return (1 << self.scale_exp_bits) - 1

    @property
    def a_abs_max(self) -> int:
        return 1 << (self.a_width - 1)

    @property
    def psum_width(self) -> int:
        """The group accumulator: every prefix of a weight's terms is at most 16 = the largest |grid value|."""
        prefix = max(
            abs(sum(d * (1 << s) for d, s in signed_digits(v)[: i + 1]))
            for t in DATATYPES
            for v in t.values
            for i in range(len(signed_digits(v)))
        )
        bound = self.group_size * self.a_abs_max * prefix
        return bits_for_range(-bound, bound, True)

    @property
    def out_width(self) -> int:
        grid_max = max(t.max_abs for t in DATATYPES)
        bound = (
            (self.k_max // self.group_size)
            * self.group_size
            * self.a_abs_max
            * grid_max
            * ((1 << self.scale_bits) - 1)
            * (1 << self.e_max)
        )
        return bits_for_range(-bound, bound, True)

    @property
    def top_name(self) -> str:
        name = f"bitmod_p{self.pes}_l{self.lanes}_g{self.group_size}"
        defaults = BitmodParams.__dataclass_fields__
        for field_name, tag in (("a_width", "a"), ("scale_bits", "s"), ("scale_exp_bits", "e"), ("k_max", "k")):
            if getattr(self, field_name) != defaults[field_name].default:
                name += f"_{tag}{getattr(self, field_name)}"
        return name

    def to_dict(self) -> dict:
        return {
            "pes": self.pes,
            "lanes": self.lanes,
            "group_size": self.group_size,
            "a_width": self.a_width,
            "scale_bits": self.scale_bits,
            "scale_exp_bits": self.scale_exp_bits,
            "k_max": self.k_max,
            "psum_width": self.psum_width,
            "out_width": self.out_width,
            "name": self.top_name,
        }

    @classmethod
    def from_dict(cls, values: dict) -> BitmodParams:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in names})


# --------------------------------------------------------------------------------------------------
# Unified representation: (type id, code, term index) -> (valid, negative, shift)


def term_table() -> np.ndarray:
    """(16 type ids, 16 codes, T terms, 3) int: valid, negative, shift. Unused ids decode to no terms; a 3-bit
    type ignores the code's bit 3. The hardware's decode ROM is this table."""
    table = np.zeros((1 << TYPE_ID_BITS, 1 << CODE_BITS, TERMS, 3), dtype=np.int64)
    for t in DATATYPES:
        for code in range(1 << CODE_BITS):
            for i, (sign, shift) in enumerate(signed_digits(t.values[code & ((1 << t.bits) - 1)])):
                table[t.id, code, i] = (1, int(sign < 0), shift)
    return table


def terms_of_type(type_ids) -> np.ndarray:
    """Cycles per chunk spent on each type id (its T)."""
    per_id = np.array([d.terms for d in DATATYPES], dtype=np.int64)
    return per_id[np.asarray(type_ids, dtype=np.int64)]


# --------------------------------------------------------------------------------------------------
# Golden model


def check_block(p: BitmodParams, codes, type_ids, scale_m, scale_e, a):
    """Validate one row block (P rows) of a dot product; return int64 arrays."""
    codes = np.asarray(codes, dtype=np.int64)
    type_ids = np.asarray(type_ids, dtype=np.int64)
    scale_m = np.asarray(scale_m, dtype=np.int64)
    scale_e = np.asarray(scale_e, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    rows, k = codes.shape
    groups = k // p.group_size
    require(
        k % p.group_size == 0 and 1 <= groups and k <= p.k_max,
        "K",
        k,
        f"a multiple of group_size={p.group_size}, at most k_max={p.k_max}",
    )
    for name, x in (("type_ids", type_ids), ("scale_m", scale_m), ("scale_e", scale_e)):
        require(x.shape == (rows, groups), f"{name} shape", x.shape, f"{(rows, groups)}")
    require(a.shape == (k,), "activations shape", a.shape, f"({k},)")
    lo, hi = int_range(p.a_width, True)
    require(a.min() >= lo and a.max() <= hi, "activation values", (int(a.min()), int(a.max())), f"{lo}..{hi}")
    require(
        scale_m.min() >= 0 and scale_m.max() < 1 << p.scale_bits,
        "scale_m",
        int(scale_m.max()),
        f"0..{(1 << p.scale_bits) - 1}",
    )
    require(scale_e.min() >= 0 and scale_e.max() <= p.e_max, "scale_e", int(scale_e.max()), f"0..{p.e_max}")
    decode(codes, np.repeat(type_ids, p.group_size, axis=1))  # validates codes and type ids
    return codes, type_ids, scale_m, scale_e, a


def group_psums(p: BitmodParams, codes, type_ids, a) -> np.ndarray:
    """(rows, groups) integer partial sums as the lanes make them: sum over weights and terms of
    +-(a << shift)."""
    table = term_table()
    ids = np.repeat(type_ids, p.group_size, axis=1)
    terms = table[ids, codes]  # (rows, K, T, 3)
    contribution = terms[..., 0] * np.where(terms[..., 1] == 1, -1, 1) * (a[None, :, None] << terms[..., 2])
    per_weight = contribution.sum(axis=2)  # (rows, K)
    return per_weight.reshape(codes.shape[0], -1, p.group_size).sum(axis=2)


def dequantize_serial(p: BitmodParams, psums, scale_m, scale_e) -> np.ndarray:
    """The dequantization unit: for every scale mantissa bit i (LSB first), add (psum << e) << i when set;
    summed over the groups into the output accumulator."""
    out = np.zeros(psums.shape[0], dtype=np.int64)
    shifted = psums << scale_e
    for i in range(p.scale_bits):
        out += np.where((scale_m >> i) & 1, shifted << i, 0).sum(axis=1)
    return out


def bitmod_golden(p: BitmodParams, codes, type_ids, scale_m, scale_e, a) -> np.ndarray:
    """One dot product per row: codes (rows, K), type ids / scale mantissas / exponents (rows, K / G),
    activations (K,) -> (rows,) int64, exactly the integer the PEs output: sum_g psum_g * m_g * 2**e_g."""
    codes, type_ids, scale_m, scale_e, a = check_block(p, codes, type_ids, scale_m, scale_e, a)
    return dequantize_serial(p, group_psums(p, codes, type_ids, a), scale_m, scale_e)


def gemm_golden(p: BitmodParams, q: QuantizedWeights, a) -> np.ndarray:
    """Y_int (M, N) for activations A (M, K) and quantized W (N, K): row n's real output is
    Y_int[:, n] * 2**q.base[n]."""
    a = _padded_activations(p, q, a)
    return np.stack([bitmod_golden(p, q.codes, q.type_ids, q.scale_m, q.scale_e, row) for row in a])


def _padded_activations(p: BitmodParams, q: QuantizedWeights, a) -> np.ndarray:
    a = np.atleast_2d(np.asarray(a, dtype=np.int64))
    require(q.group_size == p.group_size, "quantized group_size", q.group_size, f"{p.group_size}")
    require(a.shape[1] == q.k, "activations K", a.shape[1], f"{q.k} (the weights' K)")
    out = np.zeros((a.shape[0], q.codes.shape[1]), dtype=np.int64)
    out[:, : q.k] = a
    return out


# --------------------------------------------------------------------------------------------------
# GEMV / GEMM driver


@dataclass
class GemmPlan:
    """Beats for the two input streams and the place of every result beat."""

    weights: list[dict]  # per chunk: codes (P*L, PE-major), type_ids, scale_m, scale_e (P each), last
    activations: list[list[int]]  # per chunk: L lanes
    results: list[tuple[int, int]]  # per result beat: (row m of A, first output n0 of its P lanes)
    chunk_terms: list[int]  # cycles each chunk spends (most terms of its PEs' types)
    chunk_last: list[int]  # the dot product ends after this chunk
    shape: tuple[int, int, int]  # M, K (padded), N


def plan_gemm(p: BitmodParams, q: QuantizedWeights, a) -> GemmPlan:
    """Y = A @ W^T on the array: for every activation row and every block of P output rows, the K / L chunks
    of a dot product. Rows past N are padded with zero weights (type 0, scale 0)."""
    a = _padded_activations(p, q, a)
    n, k = q.codes.shape
    require(k <= p.k_max, "K", k, f"at most k_max={p.k_max}")
    groups = k // p.group_size
    weights, activations, results, chunk_terms, chunk_last = [], [], [], [], []
    blocks = range(0, n, p.pes)
    for m, row in enumerate(a):
        for n0 in blocks:
            rows = min(p.pes, n - n0)
            codes = np.zeros((p.pes, k), dtype=np.int64)
            ids = np.zeros((p.pes, groups), dtype=np.int64)
            sm = np.zeros((p.pes, groups), dtype=np.int64)
            se = np.zeros((p.pes, groups), dtype=np.int64)
            codes[:rows], ids[:rows] = q.codes[n0 : n0 + rows], q.type_ids[n0 : n0 + rows]
            sm[:rows], se[:rows] = q.scale_m[n0 : n0 + rows], q.scale_e[n0 : n0 + rows]
            block_beats(p, codes, ids, sm, se, row, weights, activations, chunk_terms, chunk_last)
            results.append((m, n0))
    return GemmPlan(weights, activations, results, chunk_terms, chunk_last, (a.shape[0], k, n))


def block_beats(
    p: BitmodParams, codes, type_ids, scale_m, scale_e, a, weights, activations, chunk_terms, chunk_last
) -> None:
    """Append the beats of one dot product of P rows (codes (P, K)) to the given lists."""
    k = codes.shape[1]
    chunks = k // p.lanes
    for c in range(chunks):
        g = c // p.chunks_per_group
        lanes = slice(c * p.lanes, (c + 1) * p.lanes)
        last = int(c == chunks - 1)
        weights.append(
            {
                "codes": codes[:, lanes].reshape(-1).tolist(),
                "type_ids": type_ids[:, g].tolist(),
                "scale_m": scale_m[:, g].tolist(),
                "scale_e": scale_e[:, g].tolist(),
                "last": last,
            }
        )
        activations.append(a[lanes].tolist())
        chunk_terms.append(int(terms_of_type(type_ids[:, g]).max()))
        chunk_last.append(last)


def assemble(p: BitmodParams, plan: GemmPlan, beats: list[list[int]]) -> np.ndarray:
    """Result beats (P lanes each, in order) -> Y_int (M, N)."""
    m_total, _, n_total = plan.shape
    require(len(beats) == len(plan.results), "result beats", len(beats), f"{len(plan.results)} (the plan's)")
    y = np.zeros((m_total, n_total), dtype=np.int64)
    for (m, n0), lanes in zip(plan.results, beats):
        width = min(p.pes, n_total - n0)
        y[m, n0 : n0 + width] = lanes[:width]
    return y


# --------------------------------------------------------------------------------------------------
# Cycle model


def bitmod_schedule(
    p: BitmodParams, chunk_terms: list[int], chunk_last: list[int], offered: list[int]
) -> tuple[list[int], list[int]]:
    """Exact handshake cycles (accepted chunks, produced results) for chunks presented from cycle offered[i]
    (both streams) and an always-ready sink: the controller's registers stepped cycle by cycle as the module
    docstring specifies them (no data). Chunk i may be accepted from max(offered[i], previous accept + 1)."""
    n = len(chunk_terms)
    require(
        len(chunk_last) == n and len(offered) == n,
        "schedule inputs",
        (n, len(chunk_last), len(offered)),
        "equal lengths",
    )
    s_cycles, chunks_per_group = p.scale_bits, p.chunks_per_group
    accepted: list[int] = []
    produced: list[int] = []
    expected = sum(1 for i in range(n) if chunk_last[i] and (i + 1) % chunks_per_group == 0)
    # register values at the start of the current cycle
    chunk_valid, term, n_terms, group_end, last = False, 0, 1, False, False
    chunk_index = 0
    hf_full, hf_last = False, False
    dq_busy, dq_count, dq_last = False, 0, False
    reserved, room = 0, True
    fifo: list[int] = []  # cycle from which each written result may be handed out
    cycle = 0
    limit = 4 * (sum(chunk_terms) + n + 4 * s_cycles + 16) + (max(offered) if offered else 0)
    while len(produced) < expected or len(accepted) < n:
        if cycle > limit:
            raise RuntimeError("bitmod_schedule did not finish: the chunk list does not end dot products")
        # combinational decisions of this cycle
        is_final = chunk_valid and term == n_terms - 1
        dq_finishing = dq_busy and dq_count == s_cycles - 1
        dq_take = hf_full and (not dq_busy or dq_finishing) and (not hf_last or room)
        issue = chunk_valid and (not (is_final and group_end) or not hf_full or dq_take)
        hand_off = issue and is_final and group_end
        slot_free = not chunk_valid or (issue and is_final)
        i = len(accepted)
        accept = i < n and offered[i] <= cycle and slot_free
        release = bool(fifo) and fifo[0] <= cycle
        if release:
            produced.append(cycle)
            fifo.pop(0)
        if dq_finishing and dq_last:
            fifo.append(cycle + FIFO_LATENCY_CYCLES)
        if accept:
            accepted.append(cycle)
        # next register values
        room = reserved + 2 <= RESULT_FIFO_DEPTH
        reserved += int(dq_take and hf_last) - int(release)
        if dq_take:
            dq_busy, dq_count, dq_last = True, 0, hf_last
        elif dq_busy:
            dq_busy, dq_count = not dq_finishing, dq_count + 1
        if hand_off:
            hf_last = last
        hf_full = (hf_full and not dq_take) or hand_off
        if issue:
            term = 0 if is_final else term + 1
            if is_final:
                chunk_valid = False
        if accept:
            chunk_valid, term, n_terms, last = True, 0, chunk_terms[i], bool(chunk_last[i])
            group_end = chunk_index == chunks_per_group - 1
            chunk_index = (chunk_index + 1) % chunks_per_group
        cycle += 1
    return accepted, produced


def dot_product_cycles(p: BitmodParams, group_terms: list[int]) -> int:
    """Cycles from the first input handshake to the result handshake, both counted, of one dot product whose
    groups spend `group_terms` cycles per chunk, at full rate. When the dequantization unit is never busy as a
    group ends (chunks_per_group * terms >= S for every group after the first) this is
    sum(terms) * G / L + S + 4: the chunk taken in cycle 0 issues from cycle 1, so the last term issues in cycle
    sum; the dequantization unit takes the hand-off in the next cycle, works the S cycles after that, writes the
    result into the FIFO in its last one, and the FIFO hands it out two cycles later."""
    terms = [t for t in group_terms for _ in range(p.chunks_per_group)]
    last = [0] * (len(terms) - 1) + [1]
    accepted, produced = bitmod_schedule(p, terms, last, [0] * len(terms))
    return produced[-1] - accepted[0] + 1


def gemm_cycles(p: BitmodParams, plan: GemmPlan) -> int:
    """Cycles from the first input handshake to the last result handshake for a planned GEMM at full rate."""
    accepted, produced = bitmod_schedule(p, plan.chunk_terms, plan.chunk_last, [0] * len(plan.chunk_terms))
    return produced[-1] - accepted[0] + 1


# --------------------------------------------------------------------------------------------------
# Component


def weight_layout(p: BitmodParams) -> data.StructLayout:
    return data.StructLayout(
        {
            "codes": data.ArrayLayout(unsigned(CODE_BITS), p.pes * p.lanes),  # PE-major: codes[pe * L + lane]
            "type_ids": data.ArrayLayout(unsigned(TYPE_ID_BITS), p.pes),
            "scale_m": data.ArrayLayout(unsigned(p.scale_bits), p.pes),
            "scale_e": data.ArrayLayout(unsigned(max(1, p.scale_exp_bits)), p.pes),
            "last": 1,
        }
    )


def activation_layout(p: BitmodParams) -> data.ArrayLayout:
    return data.ArrayLayout(signed(p.a_width), p.lanes)


def result_layout(p: BitmodParams) -> data.ArrayLayout:
    return data.ArrayLayout(signed(p.out_width), p.pes)


def _rom(entries: list[int], width: int) -> Const:
    """A constant whose `width`-bit word i is entries[i]: indexed with word_select it becomes a small LUT."""
    value = 0
    for index, entry in enumerate(entries):
        value |= int(entry) << (index * width)
    return Const(value, width * len(entries))


class BitmodArray(wiring.Component):
    """P BitMoD PEs of L lanes sharing the activation stream, with the term decoder, group accumulators,
    hand-off registers, bit-serial dequantization units and a result FIFO. See the module docstring."""

    def __init__(self, p: BitmodParams):
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
        pes, lanes, s_cycles = p.pes, p.lanes, p.scale_bits
        psum_shape = signed(p.psum_width)
        out_shape = signed(p.out_width)
        shift_shape = signed(p.psum_width + p.e_max + s_cycles)

        m.submodules.result_fifo = result_fifo = fifo.SyncFIFOBuffered(
            width=Shape.cast(result_layout(p)).width, depth=RESULT_FIFO_DEPTH
        )
        m.d.comb += [
            self.results.valid.eq(result_fifo.r_rdy),
            self.results.payload.eq(result_fifo.r_data),
            result_fifo.r_en.eq(self.results.ready),
        ]
        # Credits: results promised to dequantization jobs of last groups but not yet handed out; `room` is
        # registered and assumes that the current cycle reserves one as well.
        reserved = Signal(range(RESULT_FIFO_DEPTH + 1))
        room = Signal(init=1)
        reserve = Signal()
        release = Signal()
        m.d.comb += release.eq(self.results.valid & self.results.ready)
        m.d.sync += [reserved.eq(reserved + reserve - release), room.eq(reserved + 2 <= RESULT_FIFO_DEPTH)]

        # -- chunk register: the chunk whose terms issue now ------------------------------------------
        chunk_valid = Signal()
        term = Signal(TERM_BITS)
        last_term = Signal(TERM_BITS)  # terms of the chunk - 1
        group_end = Signal()
        chunk_last = Signal()
        chunk_index = Signal(range(max(p.chunks_per_group, 2)))
        codes = Signal(data.ArrayLayout(unsigned(CODE_BITS), pes * lanes), reset_less=True)
        acts = Signal(activation_layout(p), reset_less=True)
        type_ids = Signal(data.ArrayLayout(unsigned(TYPE_ID_BITS), pes), reset_less=True)
        scale_m = Signal(data.ArrayLayout(unsigned(p.scale_bits), pes), reset_less=True)
        scale_e = Signal(data.ArrayLayout(unsigned(max(1, p.scale_exp_bits)), pes), reset_less=True)

        # -- hand-off and dequantization state -------------------------------------------------------
        hf_full = Signal()
        hf_last = Signal()
        hf_first = Signal()
        first_group = Signal(init=1)  # the next group to finish starts a dot product
        hf_psum = [Signal(psum_shape, name=f"pe{i}_handoff_psum", reset_less=True) for i in range(pes)]
        hf_m = [Signal(p.scale_bits, name=f"pe{i}_handoff_m", reset_less=True) for i in range(pes)]
        hf_e = [Signal(max(1, p.scale_exp_bits), name=f"pe{i}_handoff_e", reset_less=True) for i in range(pes)]
        dq_busy = Signal()
        dq_count = Signal(range(max(s_cycles, 2)))
        dq_last = Signal()
        dq_first = Signal()
        dq_shift = [Signal(shift_shape, name=f"pe{i}_dq_shift", reset_less=True) for i in range(pes)]
        dq_m = [Signal(p.scale_bits, name=f"pe{i}_dq_m", reset_less=True) for i in range(pes)]
        out_acc = [Signal(out_shape, name=f"pe{i}_out_acc", reset_less=True) for i in range(pes)]

        is_final = Signal()
        dq_finishing = Signal()
        dq_take = Signal()
        issue = Signal()
        hand_off = Signal()
        slot_free = Signal()
        accept = Signal()
        m.d.comb += [
            is_final.eq(chunk_valid & (term == last_term)),
            dq_finishing.eq(dq_busy & (dq_count == s_cycles - 1)),
            dq_take.eq(hf_full & (~dq_busy | dq_finishing) & (~hf_last | room)),
            issue.eq(chunk_valid & (~(is_final & group_end) | ~hf_full | dq_take)),
            hand_off.eq(issue & is_final & group_end),
            slot_free.eq(~chunk_valid | (issue & is_final)),
            accept.eq(self.weights.valid & self.activations.valid & slot_free),
            self.weights.ready.eq(accept),
            self.activations.ready.eq(accept),
            reserve.eq(dq_take & hf_last),
        ]

        # -- accept a chunk ---------------------------------------------------------------------------
        terms_rom = _rom([t.terms - 1 for t in DATATYPES] + [0] * ((1 << TYPE_ID_BITS) - len(DATATYPES)), TERM_BITS)
        incoming = self.weights.payload
        chunk_terms = Const(0, TERM_BITS)
        for i in range(pes):
            t = terms_rom.word_select(incoming.type_ids[i], TERM_BITS)
            chunk_terms = Mux(t > chunk_terms, t, chunk_terms)
        with m.If(accept):
            m.d.sync += [
                chunk_valid.eq(1),
                term.eq(0),
                last_term.eq(chunk_terms),
                group_end.eq(chunk_index == p.chunks_per_group - 1),
                chunk_last.eq(incoming.last),
                chunk_index.eq(Mux(chunk_index == p.chunks_per_group - 1, 0, chunk_index + 1)),
                codes.eq(incoming.codes),
                acts.eq(self.activations.payload),
                type_ids.eq(incoming.type_ids),
                scale_m.eq(incoming.scale_m),
                scale_e.eq(incoming.scale_e),
            ]
        with m.Elif(issue & is_final):
            m.d.sync += chunk_valid.eq(0)
        with m.If(issue & ~is_final):
            m.d.sync += term.eq(term + 1)

        # -- lanes: one signed power-of-two term per weight per cycle ----------------------------------
        table = term_table()
        entry_bits = 2 + SHIFT_MAX.bit_length()
        entries = []
        for type_id in range(1 << TYPE_ID_BITS):
            for code in range(1 << CODE_BITS):
                for t in range(1 << TERM_BITS):
                    valid, negative, shift = table[type_id, code, t] if t < TERMS else (0, 0, 0)
                    entries.append(valid | negative << 1 | shift << 2)
        decode_rom = _rom(entries, entry_bits)
        psums = []
        for i in range(pes):
            contributions = []
            for lane in range(lanes):
                entry = Signal(entry_bits, name=f"pe{i}_lane{lane}_term")
                m.d.comb += entry.eq(
                    decode_rom.word_select(Cat(term, codes[i * lanes + lane], type_ids[i]), entry_bits)
                )
                shifted = acts[lane] << entry[2:]
                contributions.append(Mux(entry[0], Mux(entry[1], -shifted, shifted), 0))
            lane_sum = Signal(psum_shape, name=f"pe{i}_lane_sum")
            m.d.comb += lane_sum.eq(sum(contributions[1:], contributions[0]))
            psum = Signal(psum_shape, name=f"pe{i}_psum")  # reset: the first group after reset starts at 0
            with m.If(hand_off):
                m.d.sync += [psum.eq(0), hf_psum[i].eq(psum + lane_sum), hf_m[i].eq(scale_m[i]), hf_e[i].eq(scale_e[i])]
            with m.Elif(issue):
                m.d.sync += psum.eq(psum + lane_sum)
            psums.append(psum)

        with m.If(hand_off):
            m.d.sync += [hf_last.eq(chunk_last), hf_first.eq(first_group), first_group.eq(chunk_last)]
        m.d.sync += hf_full.eq((hf_full & ~dq_take) | hand_off)

        # -- bit-serial dequantization: out += (psum << e) << i for every set bit i of m ---------------
        results = []
        for i in range(pes):
            start_fresh = dq_first & (dq_count == 0)
            total = Signal(out_shape, name=f"pe{i}_out_next")
            m.d.comb += total.eq(Mux(start_fresh, 0, out_acc[i]) + Mux(dq_m[i][0], dq_shift[i], 0))
            with m.If(dq_busy):
                m.d.sync += out_acc[i].eq(total)
            with m.If(dq_take):
                m.d.sync += [dq_shift[i].eq(hf_psum[i] << hf_e[i]), dq_m[i].eq(hf_m[i])]
            with m.Elif(dq_busy):
                m.d.sync += [dq_shift[i].eq(dq_shift[i] << 1), dq_m[i].eq(dq_m[i] >> 1)]
            results.append(total)
        with m.If(dq_take):
            m.d.sync += [dq_busy.eq(1), dq_count.eq(0), dq_last.eq(hf_last), dq_first.eq(hf_first)]
        with m.Elif(dq_busy):
            m.d.sync += dq_count.eq(dq_count + 1)
            with m.If(dq_finishing):
                m.d.sync += dq_busy.eq(0)
        m.d.comb += [
            result_fifo.w_en.eq(dq_finishing & dq_last),
            result_fifo.w_data.eq(Cat(*results)),
        ]
        return m


register(
    Block(
        name="bitmod",
        summary="BitMoD bit-serial PEs (INT3/4, FP3/4 with special values per group; bit-serial dequantization)",
        params=BitmodParams,
        component=BitmodArray,
        golden=bitmod_golden,
        cycles=dot_product_cycles,
        testbench="hardwire.sim.tb_bitmod",
        generator_version=GENERATOR_VERSION,
    )
)
