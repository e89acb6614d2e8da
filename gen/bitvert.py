"""BitVert: a bit-serial PE with bi-directional bit sparsity (BBS, Chen et al., MICRO 2024), and arrays of it.

Top to bottom: the parameters, the BBS encoder (bit columns, directions, sign-column merging, the compressed
tensor encoding and its decoder), the two binary-pruning options, the PE records and the golden model of the
PE arithmetic, the GEMV driver, the cycle model, the component.

**BBS.** Weights are signed ``w_width``-bit (n) integers in groups of G = ``group_size`` consecutive weights of
one output row (along K). Bit column b of a group is (w_0[b], ..., w_{G-1}[b]) in two's complement; the sign
column b = n-1 weighs -2^(n-1). With activations a_i of the group,

    S_b = sum_i w_i[b] * a_i = A - sum_i (1 - w_i[b]) * a_i,    A = sum_i a_i (the group's activation sum)

so a column whose ones are the majority (popcount > G/2: direction d_b = 1) is computed from its zero bits,
any other (d_b = 0) from its one bits. The bits that are used are the *effectual* bits; there are
e_b = min(popcount, G - popcount) <= floor(G/2) of them, so at least half of every column is skipped, on any
input. The dot product is

    sum_b s_b 2^b (d_b A + (1 - 2 d_b) sum_{i effectual in b} a_i),    s_b = -1 for the sign column, else +1.

A is computed once per activation group at the array's activation input (an adder tree of G - 1 adders and
one register), shared by all PEs; a PE adds it once per inverted column (on the column's first cycle).

**Sign-column merging** (lossless; step 1 of BBS "rounded averaging"): when the r columns below the sign
column equal it (sign extension), -2^(n-1) c + sum_{b=n-1-r}^{n-2} 2^b c = -2^(n-1-r) c: the r + 1 columns
are processed as one column of weight -2^(n-1-r).

**PE organisation.** A PE consumes *records*, one per processed column of a group: the raw column bits
(G), the column's shift and sign (negative), and a group_last flag. On loading a record it computes the
direction (popcount > G/2) and the effectual mask (bits XOR d). Per cycle it takes up to ``lanes`` effectual
bits (lowest first, priority encoders), selects their activations, sums them, subtracts the sum from A when
inverted, shifts by the column's weight and adds or subtracts into the accumulator. All-zero columns have
no record; a group with no record gets one empty record (1 cycle, adds 0). A record takes
max(1, ceil(e / lanes)) cycles (an all-ones column: e = 0, one cycle to add A).

**Arrays.** ``pes`` PEs share the activation stream, each with its own record stream (one output row per
PE; a GEMV of N rows takes ceil(N / pes) passes). PEs need different cycle counts for the same group, so
they do not wait for each other: accepted activation groups (with A) go into a queue of ``queue_depth``
entries that every PE reads at its own pace (one write pointer, a read pointer and a count per PE); an
entry is free again once every PE has finished it, so a fast PE runs up to queue_depth groups ahead of the
slowest. Each PE captures its own dot product two cycles after its last issue and holds it until every PE
has its part of the pass (a result register per PE); it may run on into the next pass meanwhile, and only
its next dot product's last issue waits for that result to leave. So the array loses cycles only where a
PE runs a whole queue or a whole pass ahead; `array_pass_ends` is the exact model. Results leave
OUTPUT_LATENCY_CYCLES after the pass's last issue cycle.

**Back-pressure.** One result register; when it is full and not taken, the whole PE array holds (a single
enable, ``advance``). With always-valid inputs and an always-ready sink nothing ever waits, and the cycle
model is exact; under input bubbles and back-pressure the results stay exact and only take longer.

**Storage.** `encode_bbs` packs a weight matrix (sign run + per column a constant bit or the G raw bits; see
BbsTensor); `group_records` is what a weight-memory front end expands a group into for a PE. Two pruning
options need no retraining: `prune_rounded_average` (low columns made constant) and `prune_column_budget`
(at most `budget` effectual bits per column, least-error greedy).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from dataclasses import dataclass
from math import ceil

import numpy as np
from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.registry import Block, register

from hardwire.params import bits_for_range, int_range, is_int, product_range, require, wrap

GENERATOR_VERSION = "2"

# Issue cycle t -> column partial registered (end of t) -> accumulator (end of t + 1) -> result register
# (end of t + 2) -> result handshake in t + 3.
OUTPUT_LATENCY_CYCLES = 3


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class BitVertParams:
    """A validated BitVert PE / array configuration. Raises ParameterError naming the bad parameter."""

    group_size: int = 8  # G: weights per bit column
    lanes: int = 2  # effectual bits a PE processes per cycle
    w_width: int = 8  # n: signed weight bits
    a_width: int = 8
    a_signed: bool = True
    pes: int = 1  # PEs sharing the activation stream
    k_max: int = 1024  # longest dot product the accumulator holds without overflow
    queue_depth: int = 4  # activation groups a fast PE may run ahead of the slowest (power of two)

    def __post_init__(self):
        require(is_int(self.group_size) and 2 <= self.group_size <= 32, "group_size", self.group_size, "2..32")
        half = self.group_size // 2
        require(
            is_int(self.lanes) and 1 <= self.lanes <= half,
            "lanes",
            self.lanes,
            f"1..{half} (group_size // 2: no column has more effectual bits)",
        )
        require(is_int(self.w_width) and 2 <= self.w_width <= 16, "w_width", self.w_width, "2..16")
        require(is_int(self.a_width) and 1 <= self.a_width <= 16, "a_width", self.a_width, "1..16")
        require(isinstance(self.a_signed, bool), "a_signed", self.a_signed, "True or False")
        require(is_int(self.pes) and 1 <= self.pes <= 64, "pes", self.pes, "1..64")
        require(
            is_int(self.k_max) and self.group_size <= self.k_max <= 1 << 20,
            "k_max",
            self.k_max,
            f"{self.group_size}..1048576",
        )
        require(
            is_int(self.queue_depth) and 2 <= self.queue_depth <= 64 and self.queue_depth & (self.queue_depth - 1) == 0,
            "queue_depth",
            self.queue_depth,
            "a power of two in 2..64",
        )

    @property
    def a_range(self) -> tuple[int, int]:
        return int_range(self.a_width, self.a_signed)

    @property
    def w_range(self) -> tuple[int, int]:
        return int_range(self.w_width, True)

    @property
    def acc_width(self) -> int:
        """Narrowest signed width holding any k_max-deep dot product of in-range operands."""
        lo, hi = product_range(self.a_range, self.w_range)
        return bits_for_range(lo * self.k_max, hi * self.k_max, True)

    @property
    def shift_width(self) -> int:
        return max(1, (self.w_width - 1).bit_length())

    @property
    def top_name(self) -> str:
        sign = "s" if self.a_signed else "u"
        name = f"bitvert_p{self.pes}_g{self.group_size}_l{self.lanes}_w{self.w_width}_a{self.a_width}{sign}"
        if self.k_max != BitVertParams.__dataclass_fields__["k_max"].default:
            name += f"_k{self.k_max}"
        if self.queue_depth != BitVertParams.__dataclass_fields__["queue_depth"].default:
            name += f"_q{self.queue_depth}"
        return name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"acc_width": self.acc_width, "name": self.top_name}

    @classmethod
    def from_dict(cls, values: dict) -> BitVertParams:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# --------------------------------------------------------------------------------------------------
# BBS encoder: bit columns, directions, effectual bits


def _check_weights(w, width: int) -> np.ndarray:
    w = np.asarray(w)
    require(w.size == 0 or np.issubdtype(w.dtype, np.integer), "weights dtype", str(w.dtype), "integers")
    w = w.astype(np.int64)
    lo, hi = int_range(width, True)
    if w.size and (w.min() < lo or w.max() > hi):
        bad = int(w[(w < lo) | (w > hi)][0])
        require(False, "weights values", bad, f"{lo}..{hi} ({width}-bit signed)")
    return w


def group_weights(w, group_size: int, width: int = 8) -> np.ndarray:
    """(..., K) signed weights -> (..., ceil(K / G), G), padded with zero weights."""
    w = _check_weights(w, width)
    k = w.shape[-1]
    groups = ceil(k / group_size) if k else 0
    padded = np.zeros((*w.shape[:-1], groups * group_size), dtype=np.int64)
    padded[..., :k] = w
    return padded.reshape(*w.shape[:-1], groups, group_size)


def bit_columns(groups: np.ndarray, width: int) -> np.ndarray:
    """(..., G) weights -> (..., n, G) bits in two's complement; column b = bit b (b = n-1 the sign)."""
    unsigned_w = np.asarray(groups, dtype=np.int64) & ((1 << width) - 1)
    return ((unsigned_w[..., None, :] >> np.arange(width)[:, None]) & 1).astype(np.uint8)


def directions(columns: np.ndarray) -> np.ndarray:
    """(..., G) column bits -> 1 where ones are the strict majority (compute with the complement)."""
    g = columns.shape[-1]
    return (columns.sum(axis=-1) * 2 > g).astype(np.uint8)


def effectual_counts(columns: np.ndarray) -> np.ndarray:
    """Bits BBS must process per column: min(popcount, G - popcount) (ties count the ones)."""
    ones = columns.sum(axis=-1).astype(np.int64)
    return np.where(ones * 2 > columns.shape[-1], columns.shape[-1] - ones, ones)


def sign_run(columns: np.ndarray) -> np.ndarray:
    """(..., n, G) -> how many columns directly below the sign column equal it (0..n-1)."""
    n = columns.shape[-2]
    run = np.zeros(columns.shape[:-2], dtype=np.int64)
    still = np.ones(columns.shape[:-2], dtype=bool)
    for r in range(1, n):
        still &= np.all(columns[..., n - 1 - r, :] == columns[..., n - 1, :], axis=-1)
        run += still
    return run


def column_stats(w, group_size: int, width: int = 8) -> dict:
    """Effectual-bit statistics of a weight tensor (last axis = K): per bit position and overall, for BBS on
    raw columns (the paper's per-column metric), BBS with sign-column merging (what the PE processes) and
    zero skipping only."""
    cols = bit_columns(group_weights(w, group_size, width), width)  # (..., groups, n, G)
    cols = cols.reshape(-1, width, group_size)
    bbs = effectual_counts(cols)
    ones = cols.sum(axis=-1).astype(np.int64)
    total = cols.shape[0] * group_size
    runs = sign_run(cols)
    in_run = (np.arange(width) >= (width - 1 - runs)[:, None]) & (np.arange(width) < width - 1)
    merged = np.where(in_run, 0, bbs)  # sign-extension columns are processed with the sign column
    return {
        "merged_skipped_per_bit": [float(1 - merged[:, b].sum() / total) if total else 1.0 for b in range(width)],
        "merged_skipped": float(1 - merged.sum() / (total * width)) if total else 1.0,
        "columns": int(cols.shape[0] * width),
        "bbs_skipped_per_bit": [float(1 - bbs[:, b].sum() / total) if total else 1.0 for b in range(width)],
        "zero_skipped_per_bit": [float(1 - ones[:, b].sum() / total) if total else 1.0 for b in range(width)],
        "bbs_skipped": float(1 - bbs.sum() / (total * width)) if total else 1.0,
        "zero_skipped": float(1 - ones.sum() / (total * width)) if total else 1.0,
        "min_column_skipped": float(1 - bbs.max() / group_size) if total else 1.0,
    }


# --------------------------------------------------------------------------------------------------
# Compressed tensor encoding


@dataclass(frozen=True)
class BbsTensor:
    """A (rows, K) weight matrix in the BBS-packed format.

    Per group of G weights, in order: r, the sign run (0..n-1), in (n-1).bit_length() bits; then the r + 1 merged sign
    columns as one column, followed by columns n-2-r down to 0. Each column is a flag bit (1 = constant) and
    then either its one value bit (all zeros / all ones) or its G raw bits (weight 0 first). The direction and
    the effectual mask are not stored: they follow from the raw bits (popcount > G/2), in hardware too. So a
    group costs (n-1).bit_length() + sum over its n - r columns of (2 if constant else 1 + G) bits.
    """

    bits: np.ndarray  # uint8, one bit per element
    shape: tuple[int, int]  # (rows, K) before padding
    group_size: int
    width: int

    @property
    def bits_per_weight(self) -> float:
        return len(self.bits) / max(1, self.shape[0] * self.shape[1])

    @property
    def groups(self) -> int:
        return self.shape[0] * ceil(self.shape[1] / self.group_size)


def _run_bits(width: int) -> int:
    return (width - 1).bit_length()


def encode_bbs(w, group_size: int = 8, width: int = 8) -> BbsTensor:
    """Pack a (rows, K) signed weight matrix into the BBS format (see BbsTensor)."""
    w = np.atleast_2d(_check_weights(w, width))
    require(w.ndim == 2, "weights shape", w.shape, "(rows, K)")
    cols = bit_columns(group_weights(w, group_size, width), width).reshape(-1, width, group_size)
    runs = sign_run(cols)
    out: list[int] = []
    rb = _run_bits(width)
    for group, r in zip(cols, runs.tolist()):
        out.extend((r >> i) & 1 for i in range(rb))
        for b in [width - 1, *range(width - 2 - r, -1, -1)]:
            column = group[b]
            if column.min() == column.max():
                out.extend((1, int(column[0])))
            else:
                out.append(0)
                out.extend(column.tolist())
    return BbsTensor(np.array(out, dtype=np.uint8), (int(w.shape[0]), int(w.shape[1])), group_size, width)


def decode_bbs(t: BbsTensor) -> np.ndarray:
    """The exact inverse of `encode_bbs`: the (rows, K) int64 weights."""
    g, n = t.group_size, t.width
    rb = _run_bits(n)
    bits = t.bits.tolist()
    pos = 0
    groups = []
    for _ in range(t.groups):
        r = sum(bits[pos + i] << i for i in range(rb))
        pos += rb
        cols = np.zeros((n, g), dtype=np.int64)
        for b in [n - 1, *range(n - 2 - r, -1, -1)]:
            if bits[pos]:
                cols[b] = bits[pos + 1]
                pos += 2
            else:
                cols[b] = bits[pos + 1 : pos + 1 + g]
                pos += 1 + g
        cols[n - 1 - r : n - 1] = cols[n - 1]
        value = (cols * (1 << np.arange(n))[:, None]).sum(axis=0)
        groups.append(np.where(value >= 1 << (n - 1), value - (1 << n), value))
    if pos != len(bits):
        raise ValueError(f"BBS stream has {len(bits) - pos} trailing bits")
    rows, k = t.shape
    w = np.array(groups, dtype=np.int64).reshape(rows, -1)
    return w[:, :k]


# --------------------------------------------------------------------------------------------------
# Binary pruning without retraining


def prune_rounded_average(w, group_size: int, low_columns: int, width: int = 8) -> np.ndarray:
    """BBS rounded averaging (step 2): in each group, the `low_columns` low bits of every weight are replaced
    by the group's rounded mean of those low bits (round half up), so those columns become constant (all
    zeros or all ones: zero effectual bits). The high bits are untouched, so the result stays in range."""
    w = _check_weights(w, width)
    require(is_int(low_columns) and 0 <= low_columns <= width - 1, "low_columns", low_columns, f"0..{width - 1}")
    k = w.shape[-1]
    groups = group_weights(w, group_size, width)
    mask = (1 << low_columns) - 1
    low = groups & mask
    real = np.zeros(groups.shape, dtype=bool)
    real.reshape(*groups.shape[:-2], -1)[..., :k] = True  # padding does not vote
    count = np.maximum(real.sum(axis=-1, keepdims=True), 1)
    mean = np.floor((np.where(real, low, 0).sum(axis=-1, keepdims=True) * 2 + count) / (2 * count))
    pruned = (groups & ~mask) | mean.astype(np.int64)
    return pruned.reshape(*w.shape[:-1], -1)[..., :k]


def prune_column_budget(w, group_size: int, budget: int, width: int = 8) -> np.ndarray:
    """Effectual-bit budget: every column of every group below the (merged) sign column ends up with at most
    `budget` effectual bits, chosen greedily for least squared error, most significant column first.

    The sign column and the columns merged with it (sign extension) stay; they fix each weight's high part H,
    and r = w - H (0 <= r < 2^(n-1-run)) is what the lower columns must represent. At column b each weight
    has an ideal bit (r >= 2^b); the column takes a majority value m in {0, 1} and at most `budget` weights
    (the exceptions: its effectual bits) take the other value. A weight's cost for a bit is the squared
    distance of its new remainder r - bit * 2^b from [0, 2^b - 1], what the columns below can still
    represent; for each m the exceptions are the `budget` largest savings, and the cheaper m wins (ties: 0).
    With budget = G // 2 every weight keeps its ideal bits: nothing changes. Results stay in the n-bit range."""
    w = _check_weights(w, width)
    require(is_int(budget) and 0 <= budget <= group_size // 2, "budget", budget, f"0..{group_size // 2}")
    k = w.shape[-1]
    original = group_weights(w, group_size, width).reshape(-1, group_size)
    runs = sign_run(bit_columns(original, width))
    sign = (original >> (width - 1)) & 1
    remainder = original + sign * (1 << (width - 1 - runs))[:, None]
    for b in range(width - 2, -1, -1):
        active = (b < width - 1 - runs)[:, None]
        step, top = 1 << b, (1 << b) - 1

        def cost(r, top=top):
            return np.where(r < 0, -r, np.where(r > top, r - top, 0)) ** 2

        best_total, best_bits = None, None
        for m in (0, 1):
            keep, other = cost(remainder - m * step), cost(remainder - (1 - m) * step)
            saving = keep - other
            order = np.argsort(-saving, axis=1, kind="stable")
            rank = np.argsort(order, axis=1, kind="stable")
            exception = (rank < budget) & (saving > 0)
            total = np.where(exception, other, keep).sum(axis=1)
            bits = np.where(exception, 1 - m, m)
            if best_total is None:
                best_total, best_bits = total, bits
            else:
                better = (total < best_total)[:, None]
                best_bits = np.where(better, bits, best_bits)
                best_total = np.minimum(total, best_total)
        ideal = (remainder >= step).astype(np.int64)
        chosen = np.where(active, best_bits, ideal)
        remainder = remainder - chosen * step
    pruned = original - remainder
    return pruned.reshape(*w.shape[:-1], -1)[..., :k]


def group_cycles(w, p: BitVertParams) -> np.ndarray:
    """(..., K) weights -> (..., groups) issue cycles of one PE per group, vectorised: the same numbers as
    summing `record_cycles` over `group_records` (tested), for whole models at once."""
    cols = bit_columns(group_weights(w, p.group_size, p.w_width), p.w_width)  # (..., groups, n, G)
    n = p.w_width
    runs = sign_run(cols)
    e = effectual_counts(cols)
    nonzero = cols.any(axis=-1)
    per_column = np.maximum(1, -(-e // p.lanes)) * nonzero  # all-zero columns: no record
    below = np.arange(n) < (n - 1 - runs)[..., None]  # columns left after merging
    processed = below.copy()
    processed[..., n - 1] = True
    cycles = (per_column * processed).sum(axis=-1)
    return np.maximum(cycles, 1)


def encoded_bits(w, group_size: int, width: int = 8) -> int:
    """Length of `encode_bbs(w)`'s bit stream, vectorised (tested against the encoder)."""
    cols = bit_columns(group_weights(w, group_size, width), width)
    runs = sign_run(cols)
    constant = np.all(cols == cols[..., :1], axis=-1)
    per_column = np.where(constant, 2, 1 + group_size)
    processed = np.arange(width) < (width - 1 - runs)[..., None]
    processed[..., width - 1] = True
    return int((per_column * processed).sum() + runs.size * _run_bits(width))


# --------------------------------------------------------------------------------------------------
# PE records and the golden model of the PE arithmetic


@dataclass(frozen=True)
class Record:
    """One processed column of a group, as a PE's weight stream carries it."""

    bits: int  # raw column bits, weight i at bit i
    shift: int  # the column's significance 2^shift
    negative: bool  # the (merged) sign column: subtract
    group_last: bool

    def payload(self) -> dict:
        return {
            "bits": self.bits,
            "shift": self.shift,
            "negative": int(self.negative),
            "group_last": int(self.group_last),
        }


def group_records(group: np.ndarray, width: int) -> list[Record]:
    """The records of one group of G weights: merged sign column first, then lower columns; all-zero columns
    are left out; an empty group still yields one empty record (the activations must be consumed)."""
    cols = bit_columns(group, width)
    r = int(sign_run(cols))
    out = []
    for b in [width - 1, *range(width - 2 - r, -1, -1)]:
        column = cols[b]
        if column.any():
            bits = int((column.astype(np.int64) << np.arange(len(column))).sum())
            shift = width - 1 - r if b == width - 1 else b
            out.append(Record(bits, shift, b == width - 1, False))
    if not out:
        out.append(Record(0, 0, False, False))
    out[-1] = dataclasses.replace(out[-1], group_last=True)
    return out


def row_records(p: BitVertParams, w_row) -> list[list[Record]]:
    """A (K,) weight row -> per group of G, its records."""
    groups = group_weights(np.asarray(w_row)[None, :], p.group_size, p.w_width)[0]
    return [group_records(g, p.w_width) for g in groups]


def record_cycles(record: Record, p: BitVertParams) -> int:
    """Cycles a PE spends on a record: ceil(effectual bits / lanes), at least one."""
    ones = record.bits.bit_count()
    effectual = p.group_size - ones if ones * 2 > p.group_size else ones
    return max(1, ceil(effectual / p.lanes))


def record_value(record: Record, a_group, p: BitVertParams) -> int:
    """The exact contribution of one record, computed the way the PE does: from the effectual bits only."""
    g = p.group_size
    ones = record.bits.bit_count()
    invert = ones * 2 > g
    a_group = [int(v) for v in a_group]
    effectual = [i for i in range(g) if ((record.bits >> i) & 1) != invert]
    partial = sum(a_group[i] for i in effectual)
    if invert:
        partial = sum(a_group) - partial
    term = partial << record.shift
    return -term if record.negative else term


def bitvert_dot(p: BitVertParams, records: list[list[Record]], a) -> int:
    """One PE's dot product from its records and the (K,) activations, in acc_width bits."""
    groups = _activation_groups(p, a)
    total = sum(record_value(r, groups[gi], p) for gi, recs in enumerate(records) for r in recs)
    return int(wrap(total, p.acc_width, True))


def _activation_groups(p: BitVertParams, a) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64).reshape(-1)
    k = len(a)
    out = np.zeros(ceil(k / p.group_size) * p.group_size, dtype=np.int64)
    out[:k] = a
    return out.reshape(-1, p.group_size)


def check_operands(p: BitVertParams, w, x) -> tuple[np.ndarray, np.ndarray]:
    """W (N, K) and x (V, K) validated against the widths and k_max; int64."""
    w = np.atleast_2d(_check_weights(w, p.w_width))
    x = np.atleast_2d(np.asarray(x))
    require(x.size == 0 or np.issubdtype(x.dtype, np.integer), "x dtype", str(x.dtype), "integers")
    x = x.astype(np.int64)
    require(
        w.ndim == 2 and x.ndim == 2 and w.shape[1] == x.shape[1], "shapes", (w.shape, x.shape), "W (N, K) and x (V, K)"
    )
    require(1 <= w.shape[1] <= p.k_max, "K", w.shape[1], f"1..k_max={p.k_max}")
    lo, hi = p.a_range
    if x.size and (x.min() < lo or x.max() > hi):
        require(False, "x values", int(x[(x < lo) | (x > hi)][0]), f"{lo}..{hi}")
    return w, x


def bitvert_golden(p: BitVertParams, w, x) -> np.ndarray:
    """(V, N) = x @ W.T, computed record by record as the PEs do (exact; acc_width never overflows)."""
    w, x = check_operands(p, w, x)
    rows = [row_records(p, w[n]) for n in range(w.shape[0])]
    return np.array(
        [[bitvert_dot(p, rows[n], x[v]) for n in range(w.shape[0])] for v in range(x.shape[0])], dtype=np.int64
    ).reshape(x.shape[0], w.shape[0])


# --------------------------------------------------------------------------------------------------
# GEMV driver and cycle model


@dataclass
class GemvPlan:
    """Beats for the activation stream and each PE's record stream, and each pass's (vector, first row)."""

    activations: list[dict]  # {"data": G lanes, "last": 0/1}
    records: list[list[Record]]  # per PE
    passes: list[tuple[int, int]]  # (vector v, first row n0) per result beat
    group_cycles: np.ndarray  # (passes, groups, pes): each PE's record cycles per group
    shape: tuple[int, int, int]  # (V, K, N)
    queue_depth: int = 4

    @property
    def pass_ends(self) -> list[int]:
        return array_pass_ends(self.group_cycles, self.queue_depth)

    @property
    def pass_cycles(self) -> list[int]:
        """Cycles from one pass's last issue to the next's (the first from cycle 0)."""
        ends = self.pass_ends
        return [end - before for end, before in zip(ends, [0, *ends[:-1]])]


def plan_gemv(p: BitVertParams, w, x) -> GemvPlan:
    """Y[v] = W @ x[v] on the array: per vector, ceil(N / pes) passes of pes rows (missing rows are zero)."""
    w, x = check_operands(p, w, x)
    n_rows, k = w.shape
    rows = [row_records(p, w[n]) for n in range(n_rows)]
    empty = row_records(p, np.zeros(k, dtype=np.int64))
    groups = ceil(k / p.group_size)
    activations, passes, cycles = [], [], []
    records: list[list[Record]] = [[] for _ in range(p.pes)]
    for v in range(x.shape[0]):
        a_groups = _activation_groups(p, x[v])
        for n0 in range(0, n_rows, p.pes):
            pe_rows = [rows[n0 + j] if n0 + j < n_rows else empty for j in range(p.pes)]
            for gi in range(groups):
                activations.append({"data": a_groups[gi].tolist(), "last": int(gi == groups - 1)})
                for j, row in enumerate(pe_rows):
                    records[j].extend(row[gi])
            cycles.append([[sum(record_cycles(r, p) for r in row[gi]) for row in pe_rows] for gi in range(groups)])
            passes.append((v, n0))
    return GemvPlan(
        activations,
        records,
        passes,
        np.array(cycles, dtype=np.int64).reshape(-1, groups, p.pes),
        (x.shape[0], k, n_rows),
        p.queue_depth,
    )


def assemble_results(p: BitVertParams, plan: GemvPlan, beats: list[list[int]]) -> np.ndarray:
    """Result beats (pes lanes each, one per pass) -> Y (V, N)."""
    v_total, _, n_rows = plan.shape
    if len(beats) != len(plan.passes):
        raise ValueError(f"got {len(beats)} result beats, the plan produces {len(plan.passes)}")
    y = np.zeros((v_total, n_rows), dtype=np.int64)
    for (v, n0), lanes in zip(plan.passes, beats):
        width = min(p.pes, n_rows - n0)
        y[v, n0 : n0 + width] = lanes[:width]
    return y


def array_pass_ends(group_cycles: np.ndarray, queue_depth: int) -> list[int]:
    """The cycle of each pass's last issue (over all PEs; the first issue is cycle 1), with always-valid
    inputs and an always-ready sink, from each PE's cycles per group (passes, groups, pes).

    Group h (counting over all passes) is accepted at a_h = max(a_{h-1} + 1, max_j f_j[h - D] + 1): the
    queue holds D groups, and an entry is free once every PE has finished it. PE j starts group h at
    max(a_h + 1, f_j[h - 1] + 1) and finishes it at f_j[h] = start + cycles - 1, except that the last issue
    of a dot product waits for the previous pass's result to leave: not before X_{p-1} + 1, where
    X_p = (the pass's end) + 2 is the cycle its results are captured into the output register."""
    cycles = np.asarray(group_cycles, dtype=np.int64)
    passes, groups, pes = cycles.shape
    total = passes * groups
    accepted = np.zeros(total, dtype=np.int64)
    finished = np.zeros((total, pes), dtype=np.int64)
    previous = np.zeros(pes, dtype=np.int64)
    ends = []
    h = 0
    for pass_index in range(passes):
        for group in range(groups):
            a = accepted[h - 1] + 1 if h else 0
            if h >= queue_depth:
                a = max(a, int(finished[h - queue_depth].max()) + 1)
            accepted[h] = a
            finish = np.maximum(a + 1, previous + 1) + cycles[pass_index, group] - 1
            if group == groups - 1 and ends:
                finish = np.maximum(finish, ends[-1] + 2 + 1)
            previous = finished[h] = finish
            h += 1
        ends.append(int(previous.max()))
    return ends


def bitvert_schedule(p: BitVertParams, plan: GemvPlan) -> list[int]:
    """Cycle of each result handshake, counted from the first input handshake (cycle 0), with always-valid
    inputs and an always-ready sink: each pass's end (`array_pass_ends`) plus the output latency."""
    return [end + OUTPUT_LATENCY_CYCLES for end in plan.pass_ends]


def bitvert_cycles(p: BitVertParams, w, x) -> int:
    """Cycles from the first input handshake to the last result handshake, both included."""
    return bitvert_schedule(p, plan_gemv(p, w, x))[-1] + 1


def dense_cycles_per_group(p: BitVertParams) -> int:
    """A dense bit-serial PE of the same lanes: every bit of every column, ceil(G / lanes) per column."""
    return p.w_width * ceil(p.group_size / p.lanes)


def zero_skip_cycles(p: BitVertParams, w_row) -> int:
    """A zero-skipping-only PE (Pragmatic-style, no inversion, no merging): per group
    max(1, sum over columns of ceil(ones / lanes))."""
    cols = bit_columns(group_weights(np.asarray(w_row)[None, :], p.group_size, p.w_width)[0], p.w_width)
    per_col = np.ceil(cols.sum(axis=-1) / p.lanes).astype(np.int64)
    return int(np.maximum(per_col.sum(axis=-1), 1).sum())


def bbs_cycles(p: BitVertParams, w_row) -> int:
    """One PE's issue cycles for a (K,) row: the sum of its record cycles."""
    return sum(record_cycles(r, p) for recs in row_records(p, w_row) for r in recs)


# --------------------------------------------------------------------------------------------------
# Component


class BitVertArray(wiring.Component):
    """``pes`` BBS bit-serial PEs sharing one activation stream; one result beat (pes lanes) per pass.

    Streams: ``activations`` (G lanes + last: the last group of a dot product), ``weights[j]`` (records of
    PE j), ``results`` (the pes dot products, acc_width bits each).
    """

    def __init__(self, p: BitVertParams):
        self.p = p
        a_shape = signed(p.a_width) if p.a_signed else unsigned(p.a_width)
        self.act_layout = data.StructLayout({"data": data.ArrayLayout(a_shape, p.group_size), "last": 1})
        self.record_layout = data.StructLayout(
            {"bits": p.group_size, "shift": p.shift_width, "negative": 1, "group_last": 1}
        )
        super().__init__(
            {
                "activations": In(stream.Signature(self.act_layout)),
                "weights": In(stream.Signature(self.record_layout)).array(p.pes),
                "results": Out(stream.Signature(data.ArrayLayout(signed(p.acc_width), p.pes))),
            }
        )

    def elaborate(self, platform):
        p = self.p
        m = Module()
        g = p.group_size
        depth = p.queue_depth
        acc_shape = signed(p.acc_width)
        sum_shape = signed(p.a_width + g.bit_length() + 2)

        out_valid = Signal()
        advance = Signal()
        m.d.comb += [advance.eq(~out_valid | self.results.ready), self.results.valid.eq(out_valid)]

        # The activation queue: `depth` groups with their activation sum A (G - 1 adders, once for all PEs),
        # one write pointer, and per PE a read pointer and a count; a group is accepted when every PE has room
        entry = data.StructLayout({"data": self.act_layout.members["data"], "last": 1, "sum": sum_shape})
        slots = [Signal(entry, name=f"queue{i}", reset_less=True) for i in range(depth)]
        queue = Array(slot.as_value() for slot in slots)
        write_at = Signal(range(depth))
        lanes_in = [self.activations.payload.data[i] for i in range(g)]

        pes = [self._pe(m, j, queue, entry, advance, sum_shape, acc_shape) for j in range(p.pes)]
        room = functools.reduce(operator.and_, [pe["count"] < depth for pe in pes])
        push = Signal()
        m.d.comb += [
            self.activations.ready.eq(advance & room),
            push.eq(self.activations.valid & self.activations.ready),
        ]
        with m.If(push):
            m.d.sync += write_at.eq(write_at + 1)
            for i, slot in enumerate(slots):
                with m.If(write_at == i):
                    m.d.sync += [
                        slot.data.eq(self.activations.payload.data),
                        slot.last.eq(self.activations.payload.last),
                        slot.sum.eq(functools.reduce(operator.add, lanes_in)),
                    ]
        for pe in pes:
            m.d.sync += pe["count"].eq(pe["count"] + push - pe["pop"])

        # End of a dot product, per PE: its accumulator is final two cycles after its last issue (capture);
        # the result beat leaves once every PE has its result captured or held. A PE whose previous result
        # is still on its way (pending) may not finish another dot product.
        result = Signal(self.results.payload.shape(), reset_less=True)
        m.d.comb += self.results.payload.eq(result)
        transfer = Signal()
        m.d.comb += transfer.eq(advance & functools.reduce(operator.and_, [pe["capture"] | pe["held"] for pe in pes]))
        with m.If(transfer):
            m.d.sync += out_valid.eq(1)
        with m.Elif(self.results.ready):
            m.d.sync += out_valid.eq(0)
        for j, pe in enumerate(pes):
            with m.If(advance):
                m.d.sync += [
                    pe["end_d1"].eq(pe["finish_dot"]),
                    pe["capture"].eq(pe["end_d1"]),
                    pe["acc"].eq(Mux(pe["capture"], 0, pe["acc"]) + pe["term"]),
                ]
            with m.If(transfer):
                m.d.sync += [result[j].eq(Mux(pe["capture"], pe["acc"], pe["hold"])), pe["held"].eq(0)]
            with m.Elif(advance & pe["capture"]):
                m.d.sync += [pe["hold"].eq(pe["acc"]), pe["held"].eq(1)]
        return m

    def _pe(self, m, j, queue, entry, advance, sum_shape, acc_shape) -> dict:
        """One PE: its place in the activation queue, its record register, the lane selection, the column
        partial and the accumulator input."""
        p = self.p
        g = p.group_size
        port = self.weights[j]
        name = f"pe{j}"
        read_at = Signal(range(p.queue_depth), name=f"{name}_read_at")
        count = Signal(range(p.queue_depth + 1), name=f"{name}_count")
        end_d1 = Signal(name=f"{name}_end_d1")
        capture = Signal(name=f"{name}_capture")
        held = Signal(name=f"{name}_held")
        hold = Signal(acc_shape, name=f"{name}_hold", reset_less=True)
        act = data.View(entry, queue[read_at])
        rec_valid = Signal(name=f"{name}_rec_valid")
        mask = Signal(g, name=f"{name}_mask", reset_less=True)
        invert = Signal(name=f"{name}_invert", reset_less=True)
        first = Signal(name=f"{name}_first", reset_less=True)
        shift = Signal(p.shift_width, name=f"{name}_shift", reset_less=True)
        negative = Signal(name=f"{name}_negative", reset_less=True)
        group_last = Signal(name=f"{name}_group_last", reset_less=True)

        # up to `lanes` lowest effectual bits, one priority encoder per lane
        remaining = mask
        picks = []
        for lane in range(p.lanes):
            low = Signal(g, name=f"{name}_lane{lane}_onehot")
            m.d.comb += low.eq(remaining & (~remaining + 1))
            rest = Signal(g, name=f"{name}_lane{lane}_rest")
            m.d.comb += rest.eq(remaining & ~low)
            picks.append(functools.reduce(operator.or_, [Mux(low[i], act.data[i], 0) for i in range(g)]))
            remaining = rest
        finishing = Signal(name=f"{name}_finishing")
        m.d.comb += finishing.eq(remaining == 0)
        # the last issue of a dot product waits while the previous result is pending
        ends_dot = finishing & group_last & act.last
        issue = Signal(name=f"{name}_issue")
        m.d.comb += issue.eq(advance & (count != 0) & rec_valid & ~(ends_dot & (end_d1 | capture | held)))
        pop = Signal(name=f"{name}_pop")
        m.d.comb += pop.eq(issue & finishing & group_last)
        finish_dot = Signal(name=f"{name}_finish_dot")
        m.d.comb += finish_dot.eq(pop & act.last)
        with m.If(pop):
            m.d.sync += read_at.eq(read_at + 1)

        # record register: the direction and effectual mask are worked out as the record is loaded
        m.d.comb += port.ready.eq(advance & (~rec_valid | (issue & finishing)))
        bits = port.payload.bits
        ones = functools.reduce(operator.add, [bits[i] for i in range(g)])
        inverted = Signal(name=f"{name}_load_invert")
        m.d.comb += inverted.eq(ones > g // 2)
        with m.If(port.valid & port.ready):
            m.d.sync += [
                rec_valid.eq(1),
                mask.eq(bits ^ inverted.replicate(g)),
                invert.eq(inverted),
                first.eq(1),
                shift.eq(port.payload.shift),
                negative.eq(port.payload.negative),
                group_last.eq(port.payload.group_last),
            ]
        with m.Elif(issue):
            m.d.sync += [mask.eq(remaining), first.eq(0)]
            with m.If(finishing):
                m.d.sync += rec_valid.eq(0)

        # stage 1: the column partial (A minus the selected activations when inverted)
        selected = Signal(sum_shape, name=f"{name}_selected")
        m.d.comb += selected.eq(functools.reduce(operator.add, picks))
        partial = Signal(sum_shape, name=f"{name}_partial", reset_less=True)
        part_shift = Signal(p.shift_width, name=f"{name}_partial_shift", reset_less=True)
        part_negative = Signal(name=f"{name}_partial_negative", reset_less=True)
        part_valid = Signal(name=f"{name}_partial_valid")
        with m.If(advance):
            m.d.sync += [
                part_valid.eq(issue),
                part_shift.eq(shift),
                part_negative.eq(negative),
                partial.eq(Mux(invert, Mux(first, act.sum, 0) - selected, selected)),
            ]
        # stage 2: shifted by the column's significance, into the accumulator
        shifted = Signal(acc_shape, name=f"{name}_shifted")
        m.d.comb += shifted.eq(partial << part_shift)
        term = Signal(acc_shape, name=f"{name}_term")
        m.d.comb += term.eq(Mux(part_valid, Mux(part_negative, -shifted, shifted), 0))
        acc = Signal(acc_shape, name=f"{name}_acc", reset_less=True)
        return {
            "count": count,
            "pop": pop,
            "finish_dot": finish_dot,
            "end_d1": end_d1,
            "capture": capture,
            "held": held,
            "hold": hold,
            "acc": acc,
            "term": term,
        }


register(
    Block(
        name="bitvert",
        summary="BitVert bit-serial PEs with bi-directional bit sparsity (BBS): data-dependent cycles, GEMV",
        params=BitVertParams,
        component=BitVertArray,
        golden=bitvert_golden,
        cycles=bitvert_cycles,
        testbench="hardwire.sim.tb_bitvert",
        generator_version=GENERATOR_VERSION,
    )
)
