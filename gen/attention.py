"""Attention head unit: softmax(Q K^T / sqrt(d)) V for one head, FlashAttention-tiled with online softmax.

Top to bottom: the parameters, the golden model (exact integers), the float64 reference, the cycle and
schedule models, the component.

Streams: ``q`` (a query: d lanes, the number of keys ``length`` it attends over, 1..seq_max, and with
``causal`` its ``position``), then ``kv`` (that query's ``length`` K/V rows, one row of k and v per beat, in
tiles of ``tile`` rows; the last tile may be short), then ``o`` (d output lanes). Queries follow each other;
the K/V rows of each query are streamed again (FlashAttention with a query block of one), so the on-chip
state is one query, two tiles of scores and V rows and the running (m, l, o[d]): it does not grow with the
sequence length (only the counters do, logarithmically).

Arithmetic, per query (every step is integer; fixmath supplies exp and reciprocal):

* score s_j = sum_i q_i k_ji, exact (or saturated to ``score_width``), fraction bits q_frac + k_frac;
* the 1/sqrt(d) scaling costs nothing: exp is computed by base-2 decomposition, exp(x) = 2**(x log2 e),
  and its one constant multiply uses log2(e)/sqrt(d) instead of log2(e) (`ScaledExpSpec`), so
  exp((s - m) / sqrt(d)) is one fixed-point multiply, a table and a shift;
* per tile: m_new = max(m, unmasked scores); alpha = exp(m - m_new); every exp result becomes a fixed-point
  number of exp_frac fraction bits, floor(mantissa * 2**exponent) (0 below one LSB); l and o[i] are
  rescaled by alpha (|x| * alpha, rounded half up, sign restored: fixmath's scale-and-round), then
  l += p_j and o[i] += p_j v_ji (exact) for the tile's rows, p_j = exp(s_j - m_new) (0 if masked);
* at the end out_i = o_i / l: fixmath's reciprocal of l, y * 2**-(recip_frac + msb), then
  |o_i| * y >> (recip_frac + msb + v_frac - out_frac) rounded half up, sign restored, saturated to the
  signed out_width range.

Accuracy: `error_bound_lsb` bounds |golden - float64 SDPA| by 0.5 LSB (rounding) + max|v| (in output LSBs)
times the weights' relative error (the exp's twice, the reciprocal's, one exp_frac LSB per truncated p and per
rescale). exp_frac, exp_lut_bits, recip_frac and recip_lut_bits left unset are derived (`derive_precision`)
so that the bound is 1 LSB, as far as the 32-bit l and o accumulators allow exp_frac to grow (seq_max <= 64
at 8-bit outputs; at seq_max 4096 the truncation of p dominates and the bound is hundreds of LSBs).

Causal mask: key j is attended by the query at ``position`` iff j <= position + causal_offset (offset >= 0,
so key 0 always is). A tile whose first key is already masked is consumed at one row per cycle and skipped.
Decode (one query against a KV cache of run-time length 1..seq_max) needs no mode of its own: every query
beat carries its key count, so a decode step is one query beat followed by its cache's rows (with
``causal``, position = length - 1 unmasks the whole cache); `decode_golden` and `query_cycles` cover it.

Schedule: a loader, an issuer and a finisher run at once. The loader takes a q beat (once the previous
query's rows are in; at most two queries between q and output handshake) and its K/V rows, one per cycle at
most, each row's score computed as it arrives (K is never stored): a live tile's scores and V rows go into
one of two banks (double-buffered: the next tile loads while the previous one's exps are issued), a dead
tile's rows are consumed unstored. A bank is ready 3 cycles after its tile's last row (its last score has
reached the running max); its rows may be rewritten from the cycle after its alpha's V-read stage on (row j
no earlier than the cycle old row j's V is read: both move one row per cycle). The issuer takes the ready
banks in turn: alpha, then the r rows, one item per cycle into the exp pipeline (`exp_depth` stages to the
accumulator); the next tile's alpha follows the last row at once unless the previous rescale is not done
(`rescale_gap`). That rescale need not wait for the pipeline to drain: the running l and o are kept as
R + D, R the rescaled sums up to the previous tile and D this tile's new terms; when an alpha reaches the
accumulator, R + D (everything before it) is taken as the value to rescale, D restarts at 0 and the
scale-and-round units deliver the new R a few cycles later (integer sums: exactly the golden model's
values; a query's first alpha has nothing to rescale and restarts R and D). After a query's last live tile
the finisher combines R + D once the rows are drained, normalizes (`normalize_cycles`: reciprocal,
scale-and-round, output register) and sends the output beat, while the next query's tiles already load and
issue (its first alpha after the combination, its later ones after the output register is written: they
reuse l_sum/o_acc and the scale-and-round units). `attention_schedule` is exact.

Query groups (``queries`` = Q > 1; Q = 1 is the schedule above, its Verilog unchanged). Up to Q consecutive
q beats form a group (the q beat gains a ``last`` bit: it or the Q-th query closes the group) and share one
K/V stream of the group's first query's ``length`` rows, so K/V traffic per query drops by Q. One d-wide dot
product scores each live row for the group's n queries in a window of n cycles (query 0 from the kv payload
as the row is accepted, the others from a K register); the banks hold V once and scores, masks and the tile's
max per query. The issuer runs row-major, one item (row j, query i) per cycle into the exp pipeline; a second
exp unit beside it computes query i's alpha with its row-0 item, so a tile of r rows costs n * r cycles (no
alpha slot), and a V row is released after its n reads, in load order (the loader refills a bank right behind
the issuer; a tile's last row waits for all of the old tile's reads). Per query: R, D (as above; row 0 of a
tile combines R + D for the rescale, which the scale-and-round units return rescale_gap cycles later, hidden
behind the other queries' items), and F, the finished sums, written once the query's last item and its last
rescale are in; a finisher with its own d scale-and-round units normalizes the F buffers in order, one query
at a time, while the next group loads and issues. Causal: a tile is dead (consumed unstored) when dead for every query
of the group; a query's masked rows give p = 0 and a tile fully masked for it skips its rescale (the golden
model's early exit). Steady state a group of n queries over s keys takes about n * (s + 1) cycles (the q beats
and the rows: the loader's), i.e. s / (s + 1) of the 2d MAC/cycle peak. `attention_schedule` is exact here too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import warnings
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Array, Cat, ClockDomain, ClockSignal, DomainRenamer, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.fixmath import (
    EXP_INTERPOLATIONS,
    RECIPROCAL_METHODS,
    ExpSpec,
    ExpUnit,
    ReciprocalSpec,
    ReciprocalUnit,
    ScaleRoundSpec,
    ScaleRoundUnit,
    exp_golden,
    fill_unset_precisions,
    reciprocal_golden,
    scale_round_golden,
)
from hardwire.gen.registry import Block, register

from hardwire.errors import PrecisionWarning
from hardwire.params import bits_for_range, int_range, is_int, require

GENERATOR_VERSION = "4"
# The bound the derived precisions aim for: |golden - float64 SDPA| <= 1 output LSB.
ERROR_TARGET_LSB = 1.0
PRECISION_FIELDS = ("exp_frac", "exp_lut_bits", "recip_frac", "recip_lut_bits")

MAX_HEAD_DIM = 256
MAX_SEQ = 4096
MAX_QUERIES = 16
# Cycles from an exp item's issue (d registered) to its accumulation: d register, exp pipeline, fixed-point
# conversion register, then fixmath's scale-and-round latency (the alpha rescale; a P*V product travels
# through as many registers) before l and o are written.
ISSUE_STAGES = 1
CONVERT_STAGES = 1
# The output register after the final scale-and-round.
OUTPUT_STAGES = 1
# The finisher's phases (the loader and the issuer run beside it).
PHASES = ("IDLE", "FINAL", "OUT")


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class ScaledExpSpec(ExpSpec):
    """fixmath's exp with the softmax's 1/sqrt(head_dim) folded into its log2(e) constant: exp(d * 2**-in_frac
    / sqrt(head_dim)) in one multiply. Everything else (table, widths, golden, unit) is fixmath's."""

    head_dim: int = 1

    @property
    def log2e(self) -> int:
        """round(log2(e) / sqrt(head_dim) * 2**log2e_bits)."""
        return round(math.log2(math.e) / math.sqrt(self.head_dim) * (1 << self.log2e_bits))


@dataclass(frozen=True)
class AttentionParams:
    """A validated attention-head configuration. Raises ParameterError naming the bad parameter.

    Widths and fraction bits are of signed two's-complement integers (value = integer * 2**-frac).
    score_width 0 keeps the exact dot-product width; a narrower one saturates the scores.
    """

    head_dim: int = 4
    tile: int = 4
    seq_max: int = 16
    q_width: int = 8
    q_frac: int = 6
    k_width: int = 8
    k_frac: int = 6
    v_width: int = 8
    v_frac: int = 6
    score_width: int = 0
    # internal precisions: None derives each from the output format, v's range and seq_max (`derive_precision`)
    exp_frac: int | None = None
    exp_lut_bits: int | None = None
    exp_interp: str = "linear"
    recip_frac: int | None = None
    recip_method: str = "newton"
    recip_lut_bits: int | None = None
    out_width: int = 8
    out_frac: int = 6
    causal: bool = False
    causal_offset: int = 0
    # queries per group: one K/V stream shared by up to this many queries (1: the single-query schedule)
    queries: int = 1

    def __post_init__(self):
        require(is_int(self.queries) and 1 <= self.queries <= MAX_QUERIES, "queries", self.queries, f"1..{MAX_QUERIES}")
        require(
            is_int(self.head_dim) and 1 <= self.head_dim <= MAX_HEAD_DIM,
            "head_dim",
            self.head_dim,
            f"1..{MAX_HEAD_DIM}",
        )
        require(is_int(self.seq_max) and 1 <= self.seq_max <= MAX_SEQ, "seq_max", self.seq_max, f"1..{MAX_SEQ}")
        require(is_int(self.tile) and 1 <= self.tile <= self.seq_max, "tile", self.tile, f"1..seq_max={self.seq_max}")
        for name in ("q", "k", "v", "out"):
            width, frac = getattr(self, f"{name}_width"), getattr(self, f"{name}_frac")
            require(is_int(width) and 2 <= width <= 16, f"{name}_width", width, "2..16")
            require(is_int(frac) and 0 <= frac <= 15, f"{name}_frac", frac, "0..15")
        require(
            is_int(self.score_width) and (self.score_width == 0 or 2 <= self.score_width <= self.exact_score_width),
            "score_width",
            self.score_width,
            f"0 (exact: {self.exact_score_width}) or 2..{self.exact_score_width}",
        )
        require(self.score_bits + 1 <= 32, "score width + 1", self.score_bits + 1, "<= 32 (fixmath exp input)")
        require(self.q_frac + self.k_frac <= 31, "q_frac + k_frac", self.q_frac + self.k_frac, "0..31")
        require(
            is_int(self.causal_offset) and 0 <= self.causal_offset <= MAX_SEQ,
            "causal_offset",
            self.causal_offset,
            f"0..{MAX_SEQ} (key 0 is always attended)",
        )
        require(isinstance(self.causal, bool), "causal", self.causal, "True or False")
        require(self.causal or self.causal_offset == 0, "causal_offset", self.causal_offset, "0 when causal=False")
        require(self.exp_interp in EXP_INTERPOLATIONS, "exp_interp", self.exp_interp, " or ".join(EXP_INTERPOLATIONS))
        require(
            self.recip_method in RECIPROCAL_METHODS, "recip_method", self.recip_method, " or ".join(RECIPROCAL_METHODS)
        )
        fill_unset_precisions(self, PRECISION_FIELDS, derive_precision)
        # fixmath validates its own parameters (naming them): build the specs once to surface errors here
        _ = self.exp_spec, self.recip_spec
        require(
            self.recip_frac + self.exp_frac + self.v_frac - self.out_frac >= 1,
            "out_frac",
            self.out_frac,
            f"<= recip_frac + exp_frac + v_frac - 1 = {self.recip_frac + self.exp_frac + self.v_frac - 1}",
        )
        require(
            self.o_magnitude_width <= 32,
            "o accumulator width",
            self.o_magnitude_width,
            "<= 32 (fixmath scale-and-round): lower exp_frac, v_width or seq_max",
        )
        require(self.l_width <= 32, "l accumulator width", self.l_width, "<= 32: lower exp_frac or seq_max")
        require(self.final_shift_max < 256, "final shift", self.final_shift_max, "< 256")
        if self._given:
            bound = error_bound_lsb(self)
            target = max(
                ERROR_TARGET_LSB,
                error_bound_lsb(dataclasses.replace(self, **{name: None for name in PRECISION_FIELDS})),
            )
            if bound > target * (1 + 1e-9):
                given = ", ".join(f"{name}={getattr(self, name)}" for name in self._given)
                warnings.warn(
                    PrecisionWarning(
                        f"attention {given}: the error bound is {bound:.3g} output LSB (derived precisions meet "
                        f"{target:.3g}; leave them unset for the derived values)"
                    ),
                    stacklevel=3,
                )

    @classmethod
    def from_dict(cls, values: dict) -> AttentionParams:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    # -- derived -----------------------------------------------------------------------------------

    @property
    def score_frac(self) -> int:
        return self.q_frac + self.k_frac

    @property
    def exact_score_range(self) -> tuple[int, int]:
        q_lo, q_hi = int_range(self.q_width, True)
        k_lo, k_hi = int_range(self.k_width, True)
        corners = [a * b for a in (q_lo, q_hi) for b in (k_lo, k_hi)]
        return self.head_dim * min(corners), self.head_dim * max(corners)

    @property
    def exact_score_width(self) -> int:
        return bits_for_range(*self.exact_score_range, True)

    @property
    def score_bits(self) -> int:
        return self.score_width or self.exact_score_width

    @property
    def score_range(self) -> tuple[int, int]:
        return int_range(self.score_bits, True)

    @property
    def exp_spec(self) -> ScaledExpSpec:
        """exp(d / sqrt(head_dim)) of d = s - m (score units), d in -(2**score_bits - 1)..0."""
        return ScaledExpSpec(
            in_width=self.score_bits + 1,
            in_frac=self.score_frac,
            mant_frac=self.exp_frac,
            lut_bits=self.exp_lut_bits,
            interp=self.exp_interp,
            head_dim=self.head_dim,
        )

    @property
    def exp_one(self) -> int:
        """The largest fixed-point exp value (exp(0), table[0]: 2**exp_frac with linear interpolation)."""
        return self.exp_spec.table[0]

    @property
    def p_width(self) -> int:
        """Unsigned width of a fixed-point exp value p (and of alpha)."""
        return self.exp_one.bit_length()

    @property
    def tiles_max(self) -> int:
        return -(-self.seq_max // self.tile)

    def _running_bound(self, row_max: int) -> int:
        return _running_bound(self.tiles_max, self.tile, self.exp_one, self.exp_frac, row_max)

    @property
    def l_width(self) -> int:
        """Unsigned width of the running sum l."""
        return self._running_bound(self.exp_one).bit_length()

    @property
    def o_magnitude_width(self) -> int:
        """Unsigned width of |o[i]|; o[i] itself is signed, one bit wider."""
        v_lo, _ = int_range(self.v_width, True)
        return self._running_bound(self.exp_one * -v_lo).bit_length()

    @property
    def recip_spec(self) -> ReciprocalSpec:
        return ReciprocalSpec(
            in_width=max(self.l_width, 1), frac=self.recip_frac, method=self.recip_method, lut_bits=self.recip_lut_bits
        )

    @property
    def final_shift_max(self) -> int:
        return self.recip_frac + (self.l_width - 1) + self.v_frac - self.out_frac

    @property
    def scale_spec(self) -> ScaleRoundSpec:
        """The per-lane scale-and-round: |o| * alpha >> exp_frac (rescale) or |o| * y >> final shift."""
        shift_max = max(self.exp_frac, self.final_shift_max)
        return ScaleRoundSpec(
            a_width=self.o_magnitude_width,
            b_width=max(self.p_width, self.recip_frac + 1),
            shift_width=shift_max.bit_length(),
            out_width=self.o_magnitude_width,
        )

    @property
    def l_scale_spec(self) -> ScaleRoundSpec:
        return ScaleRoundSpec(
            a_width=self.l_width, b_width=self.p_width, shift_width=self.exp_frac.bit_length(), out_width=self.l_width
        )

    @property
    def exp_depth(self) -> int:
        """EXP_DEPTH: cycles from an exp item's issue cycle to the cycle it is accumulated in."""
        return ISSUE_STAGES + self.exp_spec.latency + CONVERT_STAGES + self.scale_spec.latency

    @property
    def v_read_delay(self) -> int:
        """Cycles from an exp item's issue to the cycle its V row is read from the tile bank."""
        return ISSUE_STAGES + self.exp_spec.latency + CONVERT_STAGES

    @property
    def rescale_gap(self) -> int:
        """The fewest cycles between two tiles' alpha items: the running sums are combined (R + D) as an alpha
        reaches the accumulator, |o| registered, then rescaled by fixmath's scale-and-round into R, which
        the next alpha's combination reads."""
        return 2 + self.scale_spec.latency + 1

    @property
    def normalize_cycles(self) -> int:
        """Cycles of the final normalization: reciprocal, scale-and-round, output register."""
        return self.recip_spec.latency + self.scale_spec.latency + OUTPUT_STAGES

    @property
    def length_width(self) -> int:
        return self.seq_max.bit_length()

    @property
    def position_width(self) -> int:
        return max(1, (self.seq_max - 1).bit_length())

    @property
    def buffer_bits(self) -> dict:
        """On-chip storage in bits: the query, two banks of one tile of scores (+ mask bits) and V rows, and the
        per-query state (m twice: running and new, and l and o[d] three times: R, D and their combination).
        Independent of seq_max (counters aside)."""
        d, group = self.head_dim, self.queries
        sums = self.l_width + d * (self.o_magnitude_width + 1)
        # a group (queries > 1) adds per bank and query the tile's max, and the finisher's copy of one query
        extra = 2 * group * self.score_bits + sums if group > 1 else 0
        return {
            "query": group * d * self.q_width,
            "scores": 2 * self.tile * group * (self.score_bits + 1),
            "v_tile": 2 * self.tile * d * self.v_width,
            "state": group * (2 * self.score_bits + 3 * sums) + extra,
            "output": d * self.out_width,
        }

    @property
    def top_name(self) -> str:
        name = (
            f"attention_d{self.head_dim}_t{self.tile}_s{self.seq_max}"
            f"_q{self.q_width}f{self.q_frac}_k{self.k_width}f{self.k_frac}_v{self.v_width}f{self.v_frac}"
            f"_o{self.out_width}f{self.out_frac}"
        )
        defaults = {f.name: f.default for f in dataclasses.fields(AttentionParams)}
        tags = (
            ("score_width", "sw"),
            ("exp_frac", "e"),
            ("exp_lut_bits", "el"),
            ("exp_interp", "ei"),
            ("recip_frac", "r"),
            ("recip_method", "rm"),
            ("recip_lut_bits", "rl"),
            ("causal_offset", "off"),
            ("queries", "g"),
        )
        for field_name, tag in tags:
            if getattr(self, field_name) != defaults[field_name]:
                name += f"_{tag}{getattr(self, field_name)}"
        if self.causal:
            name += "_causal"
        return name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {
            "score_bits": self.score_bits,
            "l_width": self.l_width,
            "o_width": self.o_magnitude_width + 1,
            "exp_depth": self.exp_depth,
            "buffer_bits": sum(self.buffer_bits.values()),
            "name": self.top_name,
        }


def _running_bound(tiles: int, tile: int, exp_one: int, exp_frac: int, row_max: int) -> int:
    """The largest value a running sum can reach: per tile rescaled by alpha <= exp_one (rounded up), then
    tile rows of at most row_max added."""
    bound = 0
    for _ in range(tiles):
        bound = ((bound * exp_one) >> exp_frac) + 1 + tile * row_max
    return bound


def derive_precision(p: AttentionParams) -> dict:
    """exp_frac, exp_lut_bits, recip_frac, recip_lut_bits for p's output format, v range and seq_max: the
    cheapest (fewest table and datapath bits) whose `error_bound_lsb` terms stay within their shares of the
    1-LSB target (the softmax weights' relative error <= 0.5 / max|v| in output LSBs: three quarters to the
    exp and the truncation of p, a quarter to the reciprocal), within the accumulators' 32-bit limit. A
    precision p already sets is kept; where nothing meets a share, the most accurate choice is taken and
    `error_bound_lsb` states the bound it meets."""
    given = tuple((name, getattr(p, name)) for name in PRECISION_FIELDS if getattr(p, name) is not None)
    shape = tuple(
        (name, getattr(p, name))
        for name in (
            "score_bits",
            "score_frac",
            "exp_interp",
            "head_dim",
            "seq_max",
            "tile",
            "v_width",
            "v_frac",
            "out_frac",
            "recip_method",
        )
    )
    return dict(_derive(shape, given))


@functools.lru_cache(maxsize=1024)
def _derive(shape: tuple, given_items: tuple) -> dict:
    p = types.SimpleNamespace(**dict(shape))
    given = dict(given_items)
    budget = 0.5 / _v_max_lsb(p)
    tiles = -(-p.seq_max // p.tile)
    v_hi_neg = -int_range(p.v_width, True)[0]

    def exp_spec(exp_frac, lut_bits):
        return ScaledExpSpec(
            in_width=p.score_bits + 1,
            in_frac=p.score_frac,
            mant_frac=exp_frac,
            lut_bits=lut_bits,
            interp=p.exp_interp,
            head_dim=p.head_dim,
        )

    best = None
    for exp_frac in [given["exp_frac"]] if "exp_frac" in given else range(8, 31):
        top = min(12, exp_frac - (1 if p.exp_interp == "linear" else 0)) if is_int(exp_frac) else 0
        for lut_bits in [given["exp_lut_bits"]] if "exp_lut_bits" in given else range(1, top + 1):
            if not (is_int(exp_frac) and 4 <= exp_frac <= 30 and is_int(lut_bits) and 1 <= lut_bits <= top):
                continue
            spec = exp_spec(exp_frac, lut_bits)
            one = spec.table[0]
            widths = (
                _running_bound(tiles, p.tile, one, exp_frac, one).bit_length(),
                _running_bound(tiles, p.tile, one, exp_frac, one * v_hi_neg).bit_length(),
            )
            if max(widths) > 32 and "exp_frac" not in given:
                continue
            error = 2 * _exp_error(p, spec) + (2 * p.seq_max + 2 * tiles) * 2.0**-exp_frac
            cost = (1 << lut_bits) * (exp_frac + 1) * (2 if p.exp_interp == "linear" else 1) + 64 * exp_frac
            share = 0.75 * budget
            key = (error > share, cost if error <= share else float(f"{error:.2g}"), cost, exp_frac, lut_bits)
            best = min(best or key, key)
    exp_frac, exp_lut_bits = (best[3], best[4]) if best else (given.get("exp_frac", 14), given.get("exp_lut_bits", 6))
    # the reciprocal's share: a quarter, or what the exp leaves when more
    recip_budget = budget / 4
    if best:
        exp_part = 2 * _exp_error(p, exp_spec(exp_frac, exp_lut_bits)) + (2 * p.seq_max + 2 * tiles) * 2.0**-exp_frac
        recip_budget = max(recip_budget, budget - exp_part)

    best = None
    for recip_frac in [given["recip_frac"]] if "recip_frac" in given else range(8, 31):
        default_luts = range(1, min(12, recip_frac) + 1) if p.recip_method == "newton" and is_int(recip_frac) else [8]
        for lut_bits in [given["recip_lut_bits"]] if "recip_lut_bits" in given else default_luts:
            if not (
                is_int(recip_frac)
                and 4 <= recip_frac <= 30
                and is_int(lut_bits)
                and 1 <= lut_bits <= min(12, recip_frac)
            ):
                continue
            error = ReciprocalSpec(24, recip_frac, p.recip_method, lut_bits).max_relative_error()
            cost = ((1 << lut_bits) * (recip_frac + 1) if p.recip_method == "newton" else 0) + 64 * recip_frac
            share = recip_budget
            key = (error > share, cost if error <= share else float(f"{error:.2g}"), cost, recip_frac, lut_bits)
            best = min(best or key, key)
    recip_frac, recip_lut_bits = (
        (best[3], best[4]) if best else (given.get("recip_frac", 16), given.get("recip_lut_bits", 8))
    )
    return {
        "exp_frac": exp_frac,
        "exp_lut_bits": exp_lut_bits,
        "recip_frac": recip_frac,
        "recip_lut_bits": recip_lut_bits,
    }


# --------------------------------------------------------------------------------------------------
# Golden model


def _check(p: AttentionParams, name: str, values: np.ndarray, width: int) -> np.ndarray:
    array = np.asarray(values)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        require(
            np.issubdtype(array.dtype, np.floating) and np.array_equal(array, np.round(array)),
            f"{name} values",
            array.dtype,
            "integers",
        )
    array = array.astype(np.int64)
    lo, hi = int_range(width, True)
    if array.size and (array.min() < lo or array.max() > hi):
        require(
            False,
            f"{name} values",
            int(array[(array < lo) | (array > hi)].ravel()[0]),
            f"{lo}..{hi} (signed {width}-bit)",
        )
    return array


def exp_fixed(p: AttentionParams, diff) -> np.ndarray:
    """exp(diff / sqrt(d)) for score differences diff <= 0 as a fixed-point number with exp_frac fraction
    bits: fixmath's (mantissa, exponent <= 0) pair, mantissa >> -exponent (0 once the shift empties it)."""
    mantissa, exponent = exp_golden(p.exp_spec, np.asarray(diff, dtype=np.int64))
    return mantissa >> np.minimum(-exponent, p.exp_frac + 1)


def _scale_signed(p: AttentionParams, x: np.ndarray, b, shift, out_width: int | None = None) -> np.ndarray:
    """sign(x) * scale_round(|x|, b, shift): fixmath's unsigned scale-and-round on the magnitude (round half
    away from zero), the sign restored; with out_width, saturated to that signed range."""
    magnitude = scale_round_golden(np.abs(x), b, shift, p.scale_spec.out_width)
    if out_width is None:
        return np.where(x < 0, -magnitude, magnitude)
    lo, hi = int_range(out_width, True)
    return np.where(x < 0, -np.minimum(magnitude, -lo), np.minimum(magnitude, hi))


def attend_golden(p: AttentionParams, q, k, v, position: int | None = None) -> np.ndarray:
    """One query q (d,) over keys k (n, d) and values v (n, d), n = 1..seq_max: the d output integers, exactly
    as the hardware computes them (tile by tile, online softmax). `position` is the query's (causal only)."""
    d = p.head_dim
    q = _check(p, "q", q, p.q_width).reshape(d)
    k = _check(p, "k", k, p.k_width)
    v = _check(p, "v", v, p.v_width)
    n = k.shape[0]
    require(k.shape == (n, d) and v.shape == (n, d), "k, v shapes", (k.shape, v.shape), f"(n, {d}) each")
    require(1 <= n <= p.seq_max, "length", n, f"1..seq_max={p.seq_max}")
    if p.causal:
        require(
            position is not None and 0 <= position < p.seq_max, "position", position, f"0..{p.seq_max - 1} (causal)"
        )
        limit = position + p.causal_offset
    else:
        limit = n
    s_lo, s_hi = p.score_range
    m_run = s_lo
    l_sum = np.int64(0)
    o = np.zeros(d, dtype=np.int64)
    for base in range(0, n, p.tile):
        if base > limit:
            break  # a dead tile: consumed, skipped
        rows = np.arange(base, min(n, base + p.tile))
        scores = np.clip(k[rows] @ q, s_lo, s_hi)
        live = rows <= limit
        m_new = max(m_run, int(scores[live].max()))
        alpha = exp_fixed(p, m_run - m_new)
        l_sum = scale_round_golden(l_sum, alpha, p.exp_frac, p.l_scale_spec.out_width)
        o = _scale_signed(p, o, alpha, p.exp_frac)
        probs = np.where(live, exp_fixed(p, np.where(live, scores - m_new, 0)), 0)
        l_sum = l_sum + probs.sum()
        o = o + probs @ v[rows]
        m_run = m_new
    y, msb = reciprocal_golden(p.recip_spec, l_sum)
    shift = p.recip_frac + int(msb) + p.v_frac - p.out_frac
    return _scale_signed(p, o, int(y), shift, p.out_width)


def attention_golden(p: AttentionParams, q, k, v) -> np.ndarray:
    """A whole head: queries q (S, d) over keys k and values v (S, d) (S = 1..seq_max); query i has position i
    (causal)."""
    q = np.asarray(q)
    return np.stack([attend_golden(p, q[i], k, v, i if p.causal else None) for i in range(q.shape[0])])


def decode_golden(p: AttentionParams, q, k_cache, v_cache) -> np.ndarray:
    """Decode: one new query q (d,) against a KV cache of length n = 1..seq_max (causal: at position n - 1)."""
    n = np.asarray(k_cache).shape[0]
    return attend_golden(p, q, k_cache, v_cache, n - 1 if p.causal else None)


def reference_float(p: AttentionParams, q, k, v, positions=None) -> np.ndarray:
    """float64 torch.nn.functional.scaled_dot_product_attention on the dequantized inputs, in output LSBs
    (real output * 2**out_frac). q (nq, d), k and v (nq, n, d) (each query its own keys) or (n, d)."""
    import torch

    q = torch.as_tensor(np.asarray(q, dtype=np.float64) / (1 << p.q_frac))
    k = torch.as_tensor(np.asarray(k, dtype=np.float64) / (1 << p.k_frac))
    v = torch.as_tensor(np.asarray(v, dtype=np.float64) / (1 << p.v_frac))
    nq = q.shape[0]
    if k.dim() == 2:
        k, v = k.expand(nq, *k.shape), v.expand(nq, *v.shape)
    mask = None
    if p.causal:
        j = torch.arange(k.shape[1])
        mask = j[None, :] <= torch.as_tensor(np.asarray(positions))[:, None] + p.causal_offset
        mask = mask[:, None, :]  # (nq, 1, n)
    out = torch.nn.functional.scaled_dot_product_attention(q[:, None, :], k, v, attn_mask=mask)
    return out[:, 0, :].numpy() * (1 << p.out_frac)


def error_bound_lsb(p: AttentionParams) -> float:
    """A bound on |golden - float64 SDPA| in output LSBs: the output's rounding (0.5) plus max|v| (in output
    LSBs) times the relative error of the softmax weights: twice the exp's (a ratio of sums), the
    reciprocal's, and one exp_frac LSB per truncated p, per rescale of l and of o (l >= 1 always, since the
    running max contributes exp(0) = 1). The exp's error is taken where p is not flushed to 0
    (|t| <= exp_frac + 1, i.e. |x| <= (exp_frac + 1) sqrt(d) ln 2 in real units). It holds for exact scores
    (score_width 0); saturated scores compute softmax of the clipped scores, which can be far off."""
    ulp = 2.0**-p.exp_frac
    exp_error = _exp_error(p, p.exp_spec)
    weights_error = 2 * exp_error + p.recip_spec.max_relative_error() + (2 * p.seq_max + 2 * p.tiles_max) * ulp
    return 0.5 + _v_max_lsb(p) * weights_error


def _exp_error(p: AttentionParams, spec: ExpSpec) -> float:
    """The exp's relative error where p is not flushed to 0 (see `error_bound_lsb`)."""
    return spec.max_relative_error((spec.mant_frac + 1) * math.sqrt(p.head_dim) * math.log(2))


def _v_max_lsb(p: AttentionParams) -> float:
    """max |v| in output LSBs."""
    return 2.0 ** (p.v_width - 1) * 2.0 ** (p.out_frac - p.v_frac)


# --------------------------------------------------------------------------------------------------
# Cycle and schedule models


def _tiles(p: AttentionParams, length: int, position: int | None) -> list[tuple[int, bool]]:
    """(rows, live) of each tile a query with `length` keys streams."""
    require(
        not p.causal or (is_int(position) and 0 <= position < p.seq_max),
        "position",
        position,
        f"0..{p.seq_max - 1} (causal)",
    )
    limit = position + p.causal_offset if p.causal else length
    return [(min(p.tile, length - base), base <= limit) for base in range(0, length, p.tile)]


def query_cycles(p: AttentionParams, length: int, position: int | None = None) -> dict:
    """One query at full rate: from its q handshake to its output handshake (`latency_cycles`) and to the
    next query's q handshake (`interval_cycles`)."""
    _, _, out = attention_schedule(p, [(length, position)], [0], [0] * length)
    return {
        "tiles": _tiles(p, length, position),
        "normalize": p.normalize_cycles,
        "latency_cycles": out[0],
        "interval_cycles": out[0] + 1,
    }


def attention_cycles(p: AttentionParams, seq: int | None = None) -> dict:
    """A whole head of `seq` queries over `seq` keys (default seq_max) at full rate, back to back: cycles from
    the first q handshake to the last output handshake, both included, and between consecutive outputs;
    `macs`: the useful multiply-accumulates (QK^T and PV over the attended keys)."""
    seq = p.seq_max if seq is None else seq
    require(is_int(seq) and 1 <= seq <= p.seq_max, "seq", seq, f"1..seq_max={p.seq_max}")
    queries = [(seq, i if p.causal else None) for i in range(seq)]
    q_acc, _, out = attention_schedule(p, queries, [0] * seq, [0] * (seq * len(query_groups(p, queries))))
    attended = sum(min(seq, i + p.causal_offset + 1) if p.causal else seq for i in range(seq))
    return {
        "total_cycles": out[-1] - q_acc[0] + 1,
        "latency_cycles": out[0] - q_acc[0],
        "per_query_cycles": [b - a for a, b in zip([q_acc[0] - 1, *out[:-1]], out)],
        "macs": 2 * attended * p.head_dim,
    }


def steady_state_utilization(p: AttentionParams, seq: int | None = None, groups: int = 8) -> dict:
    """Full groups of `queries` queries over `seq` keys (default seq_max, no mask) back to back at full rate:
    the cycles per group in steady state (between the last groups' last outputs, from the exact schedule) and
    the MAC utilization, useful MACs (2 d seq per query) over the 2d-per-cycle peak; K/V beats per query."""
    seq = p.seq_max if seq is None else seq
    require(is_int(seq) and 1 <= seq <= p.seq_max, "seq", seq, f"1..seq_max={p.seq_max}")
    require(is_int(groups) and groups >= 3, "groups", groups, ">= 3")
    group = p.queries
    queries = [(seq, 0 if p.causal else None)] * (group * groups)
    if p.causal:  # every key attended: positions at the end of the sequence
        queries = [(seq, p.seq_max - 1)] * (group * groups)
    _, _, out = attention_schedule(p, queries, [0] * len(queries), [0] * (seq * groups))
    last = min(4, groups - 2)
    period = (out[-1] - out[-1 - last * group]) / last
    return {"cycles_per_group": period, "utilization": group * seq / period, "kv_beats_per_query": seq / group}


def attention_schedule(
    p: AttentionParams, queries: list[tuple[int, int | None]], q_offered: list[int], kv_offered: list[int]
) -> tuple[list[int], list[int], list[int]]:
    """Exact handshake cycles (q accepted, kv accepted, o produced) for `queries` [(length, position)], given
    the cycle each beat was first offered, with an always-ready sink. queries > 1: a query may carry a third
    item, its last flag, and the groups follow `_group_schedule`; what follows is the single-query schedule.

    The loader takes a query's q beat once it has accepted the previous query's rows (and 3 cycles after a
    live last tile, whose max is still being taken), with at most two queries between q and output handshake;
    then its rows, one per cycle at most, a live tile's into a score/V bank that must be free (banks
    alternate; dead tiles' rows are consumed unstored). A live tile whose last row is accepted at L can issue
    from L + 3; the issuer takes the tiles in order: alpha at I = max(L + 3, the previous tile's last issue +
    1, the previous alpha + rescale_gap, for a query's first tile the cycle from which the previous query's
    combination is sure to come before it reaches the accumulator (a query of one live tile: the
    combination + 1), for its later tiles the same for the previous output register's write), its r rows at I + 1 .. I + r; the bank is
    free again from I + v_read_delay + 1 (row j is rewritten no earlier than the cycle its old V row is read). After a query's last live tile (alpha at I, r rows) its running
    sums combine at max(I + exp_depth + max(r + 1, rescale_gap), its last row's accept + 1, the previous
    output + 1), the output register is written normalize_cycles later and the output handshake follows."""
    if p.queries > 1:
        return _group_schedule(p, queries, q_offered, kv_offered)
    queries = [query[:2] for query in queries]
    gap, vread, depth, normalize = p.rescale_gap, p.v_read_delay, p.exp_depth, p.normalize_cycles
    q_acc, kv_acc, out = [], [], []
    loader_free = 0
    row = 0
    bank_free = [0, 0]
    bank = 0
    issue_free = 0
    alpha = None
    combined = None  # the previous query's combination cycle
    combine_sure = None  # from when that combination was sure to come within exp_depth - 1 cycles
    written = None  # the previous query's output register write
    for index, (length, position) in enumerate(queries):
        start = max(loader_free, q_offered[index], out[index - 2] + 1 if index >= 2 else 0)
        q_acc.append(start)
        cursor = start + 1
        last_live = None
        rows_last = 0
        first = True
        tiles = _tiles(p, length, position)
        live_tiles = sum(live for _, live in tiles)
        for rows, live in tiles:
            for _ in range(rows):
                accepted = max(cursor, kv_offered[row], bank_free[bank] if live else 0)
                kv_acc.append(accepted)
                cursor = accepted + 1
                row += 1
            if live:
                issue = max(cursor - 1 + 3, issue_free, alpha + gap if alpha is not None else 0)
                if first and combined is not None:
                    issue = max(issue, combine_sure if live_tiles > 1 else combined + 1)
                if not first and written is not None:
                    issue = max(issue, written - depth + 1, combined + 1)
                alpha, rows_last, first = issue, rows, False
                issue_free = issue + rows + 1
                bank_free[bank] = issue + vread + 1
                bank ^= 1
                last_live = cursor - 1
        loader_free = max(cursor, last_live + 3)
        drained = alpha + depth + max(rows_last + 1, gap)
        combined = max(drained, cursor, out[-1] + 1 if out else 0)
        # from this cycle on the combination is sure to come within exp_depth - 1 cycles
        combine_sure = max(drained - depth + 1, cursor, out[-1] + 1 if out else 0)
        written = combined + normalize
        out.append(written + 1)
    return q_acc, kv_acc, out


def query_groups(p: AttentionParams, queries: list[tuple]) -> list[list[int]]:
    """The indices of `queries` [(length, position[, last])] by group: a group ends at a query marked last or
    at `queries` queries (queries = 1: each query is its own group)."""
    groups, current = [], []
    for index, query in enumerate(queries):
        current.append(index)
        if len(current) == p.queries or (len(query) > 2 and query[2]):
            groups.append(current)
            current = []
    return groups + ([current] if current else [])


def _group_schedule(
    p: AttentionParams, queries: list[tuple], q_offered: list[int], kv_offered: list[int]
) -> tuple[list[int], list[int], list[int]]:
    """`attention_schedule` for queries > 1 (see the module docstring, "Query groups"). A group's keys are its
    first query's `length`; its K/V rows are streamed once. Loader: the group's q beats one per cycle, then each
    live row in one cycle of a window of n cycles (n queries in the group: one score per cycle), a dead row in
    one cycle; row j of a live tile goes into a bank once the bank's previous tile's row j has had its last V
    read (its last row: once all of them have). The tile can issue n + 1 cycles after its last row. Issuer:
    items (row j, query i) row-major, one per cycle; (j = 0, i) no earlier than rescale_gap after query i's
    previous row-0 item; a group's last item of query i only once query i's previous finish buffer was taken
    by the finisher. Item (j, i) accumulates exp_depth + 1 cycles after its issue (row 0 of a tile after the
    first, unless the tile is fully masked for the query, starts a rescale done rescale_gap later); query i's
    sums go into its finish buffer the cycle after its last item's accumulation or its last rescale, whichever
    is later; the finisher takes the buffers in order (one query at a time: normalize_cycles, then the output
    handshake)."""
    gap, vread, normalize = p.rescale_gap, p.v_read_delay, p.normalize_cycles
    depth = vread + 1
    q_acc, kv_acc, out = [], [], []
    cursor = 0
    row = 0
    bank = 0
    old_reads = [None, None]  # per bank: the V-read cycles of the previous tile's rows
    issue_next = 0
    gap_set = [None] * p.queries  # per query slot: its last row-0 item's issue
    rescaled = [0] * p.queries  # per query slot: from when its last rescale's R is written
    slot_free = [0] * p.queries  # per query slot: from when its finish buffer is free
    for members in query_groups(p, queries):
        n = len(members)
        length = queries[members[0]][0]
        for index in members:
            take = max(cursor, q_offered[index])
            q_acc.append(take)
            cursor = take + 1
        if p.causal:
            positions = [queries[index][1] for index in members]
            for position in positions:
                _tiles(p, length, position)  # validates the position
            limit = max(positions) + p.causal_offset
        else:
            limit = length
        bases = range(0, length, p.tile)
        live_tiles = [base for base in bases if base <= limit]
        last_live = live_tiles[-1]
        for base in bases:
            rows = min(p.tile, length - base)
            masked = [p.causal and base > queries[index][1] + p.causal_offset for index in members]
            if base > limit:
                for _ in range(rows):
                    accepted = max(cursor, kv_offered[row])
                    kv_acc.append(accepted)
                    cursor = accepted + 1
                    row += 1
                continue
            reads = old_reads[bank]
            for j in range(rows):
                need = 0
                if reads is not None:
                    need = reads[-1] if j == rows - 1 or j >= len(reads) - 1 else reads[j]
                accepted = max(cursor, kv_offered[row], need)
                kv_acc.append(accepted)
                cursor = accepted + n
                row += 1
            ready = accepted + n + 1
            final = base == last_live
            issues = []
            for j in range(rows):
                for i in range(n):
                    cycle = max(issue_next, ready if not issues else 0)
                    if j == 0 and gap_set[i] is not None:
                        cycle = max(cycle, gap_set[i] + gap)
                    if final and j == rows - 1:
                        cycle = max(cycle, slot_free[i])
                    if j == 0:
                        gap_set[i] = cycle
                        if base > 0 and not masked[i]:  # a combination: R + D rescaled
                            rescaled[i] = cycle + depth + gap
                    issues.append(cycle)
                    issue_next = cycle + 1
            old_reads[bank] = [issues[j * n + n - 1] + vread for j in range(rows)]
            bank ^= 1
            if final:
                for i in range(n):
                    combined = max(issues[(rows - 1) * n + i] + depth + 1, rescaled[i])
                    take = max(combined + 1, out[-1] + 1 if out else 0)
                    slot_free[i] = take + 1
                    out.append(take + normalize + 1)
    return q_acc, kv_acc, out


# --------------------------------------------------------------------------------------------------
# Component


def q_layout(p: AttentionParams) -> data.StructLayout:
    fields = {"q": data.ArrayLayout(signed(p.q_width), p.head_dim), "length": unsigned(p.length_width)}
    if p.causal:
        fields["position"] = unsigned(p.position_width)
    if p.queries > 1:
        fields["last"] = unsigned(1)  # the group's last query (a group also ends at `queries`)
    return data.StructLayout(fields)


def kv_layout(p: AttentionParams) -> data.StructLayout:
    return data.StructLayout(
        {"k": data.ArrayLayout(signed(p.k_width), p.head_dim), "v": data.ArrayLayout(signed(p.v_width), p.head_dim)}
    )


def o_layout(p: AttentionParams) -> data.ArrayLayout:
    return data.ArrayLayout(signed(p.out_width), p.head_dim)


class AttentionHead(wiring.Component):
    """One attention head (see the module docstring). Ports: ``q`` (In), ``kv`` (In), ``o`` (Out) streams.

    Scores come from a dedicated d-wide dot-product array (d multipliers and an adder tree, one score per
    cycle): a query is one vector against streamed K rows that are each used once, a matrix-vector product
    for which a systolic array's weight loading and skew would cost more cycles than the products.
    """

    def __init__(self, p: AttentionParams):
        self.p = p
        super().__init__(
            {
                "q": In(stream.Signature(q_layout(p))),
                "kv": In(stream.Signature(kv_layout(p))),
                "o": Out(stream.Signature(o_layout(p))),
            }
        )

    def elaborate(self, platform):
        if self.p.queries > 1:
            return self._elaborate_groups()
        m = Module()
        p = self.p
        d, tile = p.head_dim, p.tile
        sw = p.score_bits
        s_lo, s_hi = p.score_range
        gap = p.rescale_gap
        # fixmath's units keep no state that needs a reset (their outputs are used at counted cycles only):
        # they run in a reset-less copy of the clock, so their modules have no unused rst port
        m.domains.arith = ClockDomain("arith", reset_less=True, local=True)
        m.d.comb += ClockSignal("arith").eq(ClockSignal("sync"))
        arith = DomainRenamer("arith")
        m.submodules.exp = exp_unit = arith(ExpUnit(p.exp_spec))
        m.submodules.reciprocal = recip = arith(ReciprocalUnit(p.recip_spec))
        lanes = [arith(ScaleRoundUnit(p.scale_spec)) for _ in range(d)]
        for i, unit in enumerate(lanes):
            m.submodules[f"scale{i}"] = unit
        m.submodules.l_scale = l_unit = arith(ScaleRoundUnit(p.l_scale_spec))

        # query registers and per-query state: the running sums as R (rescaled) + D (this tile's terms), and
        # l_sum / o_acc, their combination as an alpha reaches the accumulator (the rescale's input) and at
        # the end (the normalization's input)
        o_shape = signed(p.o_magnitude_width + 1)
        q_reg = Signal(data.ArrayLayout(signed(p.q_width), d), reset_less=True)
        length = Signal(unsigned(p.length_width), reset_less=True)
        position = Signal(unsigned(p.position_width), reset_less=True)
        m_run = Signal(signed(sw), reset_less=True)
        m_new = Signal(signed(sw), reset_less=True)
        l_sum = Signal(unsigned(p.l_width), reset_less=True)
        l_rescaled = Signal(unsigned(p.l_width), reset_less=True)
        l_tile = Signal(unsigned(p.l_width), reset_less=True)
        o_acc = [Signal(o_shape, name=f"o{i}", reset_less=True) for i in range(d)]
        o_rescaled = [Signal(o_shape, name=f"o{i}_rescaled", reset_less=True) for i in range(d)]
        o_tile = [Signal(o_shape, name=f"o{i}_tile", reset_less=True) for i in range(d)]
        out_reg = Signal(o_layout(p), reset_less=True)
        # two banks of one tile each: scores (with mask bits) and V rows; per bank its rows, its running max,
        # whether it is the query's last live tile
        v_rows = data.ArrayLayout(signed(p.v_width), d)
        s_regs = [[Signal(signed(sw), name=f"s{b}_{j}", reset_less=True) for j in range(tile)] for b in range(2)]
        mask_regs = [[Signal(name=f"mask{b}_{j}", reset_less=True) for j in range(tile)] for b in range(2)]
        v_regs = [
            [Signal(unsigned(v_rows.size), name=f"v{b}_{j}", reset_less=True) for j in range(tile)] for b in range(2)
        ]
        s_buf, mask_buf, v_buf = (_banked(regs) for regs in (s_regs, mask_regs, v_regs))
        tile_m = [Signal(signed(sw), name=f"tile_m{b}", reset_less=True) for b in range(2)]
        tile_n = [Signal(range(tile + 1), name=f"tile_rows{b}", reset_less=True) for b in range(2)]
        tile_final = [Signal(name=f"tile_final{b}", reset_less=True) for b in range(2)]
        tile_first = [Signal(name=f"tile_first{b}", reset_less=True) for b in range(2)]
        busy = Signal(2)  # loading or loaded, until its alpha's V read (its rows are then re-written
        #                         no earlier than their old V rows are read)
        ready = Signal(2)  # loaded and its max known, until its alpha is issued

        in_flight = Signal(range(3))  # queries between q and output handshake: at most two
        loading = Signal()  # rows of the loader's query remain to be accepted
        rows_done = Signal(range(3))  # queries whose rows are all in and whose sums are not yet combined
        # loader: q handshake, rows into alternating banks, dead tiles consumed unstored
        load_bank = Signal()
        base = Signal(range(p.seq_max + tile + 1), reset_less=True)
        row = Signal(range(max(tile, 2)), reset_less=True)
        rows_left = Signal(range(p.seq_max + 1))
        tile_rows = Signal(range(tile + 1))
        m.d.comb += [rows_left.eq(length - base), tile_rows.eq(Mux(rows_left < tile, rows_left, tile))]
        live = Signal()
        limit = position + p.causal_offset
        m.d.comb += live.eq(base <= limit if p.causal else 1)
        last_tile = Signal()
        # one tile holds every key when tile >= seq_max (a comparison there would be constant)
        m.d.comb += last_tile.eq(rows_left <= tile if tile < p.seq_max else 1)
        final_live = last_tile | (base + tile > limit) if p.causal else last_tile
        last_row = row == tile_rows - 1

        # score pipeline: dot product of the accepted K row, saturated, registered; then into the tile bank
        k_row = self.kv.payload.k
        products = [q_reg[i] * k_row[i] for i in range(d)]
        dot = _sum_tree(products)
        score = Mux(dot > s_hi, s_hi, Mux(dot < s_lo, s_lo, dot)) if p.score_width else dot
        sc_valid = Signal()
        sc_value = Signal(signed(sw), reset_less=True)
        sc_index = Signal(range(max(tile, 2)), reset_less=True)
        sc_bank = Signal(reset_less=True)
        sc_mask = Signal(reset_less=True)
        m.d.sync += sc_valid.eq(0)
        with m.If(sc_valid):
            for b in range(2):
                for j in range(tile):
                    with m.If((sc_bank == b) & (sc_index == j)):
                        m.d.sync += [s_regs[b][j].eq(sc_value), mask_regs[b][j].eq(sc_mask)]
            with m.If(~sc_mask & (sc_value > m_new)):
                m.d.sync += m_new.eq(sc_value)
        # a live tile's last row accepted in L: its last score reaches m_new in L + 1; in L + 2 the bank's max
        # is taken and the bank is ready for the issuer from L + 3
        ended = Signal()
        ended_bank = Signal(reset_less=True)
        ended_d1 = Signal()
        ended_bank_d1 = Signal(reset_less=True)
        m.d.sync += [ended.eq(0), ended_d1.eq(ended), ended_bank_d1.eq(ended_bank)]
        with m.If(ended_d1):
            for b in range(2):
                with m.If(ended_bank_d1 == b):
                    m.d.sync += [tile_m[b].eq(m_new), ready[b].eq(1)]

        q_take = Signal()
        m.d.comb += [
            self.q.ready.eq(~loading & ~ended & ~ended_d1 & (in_flight < 2)),
            q_take.eq(self.q.valid & self.q.ready),
        ]
        with m.If(q_take):
            m.d.sync += [
                q_reg.eq(self.q.payload.q),
                length.eq(self.q.payload.length),
                loading.eq(1),
                m_new.eq(s_lo),
                base.eq(0),
                row.eq(0),
            ]
            if p.causal:
                m.d.sync += position.eq(self.q.payload.position)
        query_rows_in = Signal()
        with m.If(loading):
            # a live tile's first row waits for its bank
            m.d.comb += self.kv.ready.eq(~live | (row != 0) | ~busy.bit_select(load_bank, 1))
            with m.If(self.kv.valid & self.kv.ready):
                m.d.sync += [
                    sc_valid.eq(live),
                    sc_value.eq(score),
                    sc_index.eq(row),
                    sc_bank.eq(load_bank),
                    sc_mask.eq((base + row > limit) if p.causal else 0),
                    row.eq(row + 1),
                ]
                with m.If(live):
                    for b in range(2):
                        for j in range(tile):
                            with m.If((load_bank == b) & (row == j)):
                                m.d.sync += v_regs[b][j].eq(self.kv.payload.v)
                with m.If(row == 0):
                    with m.If(live):
                        m.d.sync += busy.bit_select(load_bank, 1).eq(1)
                with m.If(last_row):
                    m.d.sync += [row.eq(0), base.eq(base + tile)]
                    with m.If(live):
                        m.d.sync += [load_bank.eq(~load_bank), ended.eq(1), ended_bank.eq(load_bank)]
                        for b in range(2):
                            with m.If(load_bank == b):
                                m.d.sync += [
                                    tile_n[b].eq(tile_rows),
                                    tile_final[b].eq(final_live),
                                    tile_first[b].eq(base == 0),
                                ]
                    with m.If(last_tile):
                        m.d.sync += loading.eq(0)
                        m.d.comb += query_rows_in.eq(1)

        # exp pipeline: issue (d register), ExpUnit, fixed-point conversion, accumulate
        tag_layout = data.StructLayout(
            {"valid": 1, "alpha": 1, "first": 1, "mask": 1, "release": 1, "bank": 1, "index": range(max(tile, 2))}
        )
        issue = Signal(tag_layout)
        diff = Signal(signed(sw + 1), reset_less=True)
        tags = [Signal(tag_layout, name="tag_issue")]
        m.d.sync += tags[0].eq(issue)
        m.d.comb += [exp_unit.en.eq(1), exp_unit.d.eq(diff)]
        for stage in range(p.exp_spec.latency):
            tag = Signal(tag_layout, name=f"tag_exp{stage}")
            m.d.sync += tag.eq(tags[-1])
            tags.append(tag)
        tag_exp = tags[-1]
        shift = Signal(unsigned(len(exp_unit.exponent)))
        m.d.comb += shift.eq(-exp_unit.exponent)
        prob = Signal(unsigned(p.p_width), reset_less=True)
        tag_p = Signal(tag_layout)
        empties = (shift > p.exp_frac) | tag_exp.mask
        m.d.sync += [prob.eq(Mux(empties, 0, exp_unit.mantissa >> shift)), tag_p.eq(tag_exp)]
        # the tile's alpha is here, its row 0 next: the loader may refill the bank from the next cycle on
        with m.If(tag_p.valid & tag_p.release):
            m.d.sync += busy.bit_select(tag_p.bank, 1).eq(0)

        # accumulate, scale-and-round latency after the conversion: a P*V row as its registered products (and
        # p) delayed as long as the alpha rescale of the previous tile's sums takes
        product_width = p.p_width + p.v_width + 1
        v_sel = data.View(v_rows, v_buf[Cat(tag_p.index, tag_p.bank)])
        products = [prob * v_sel[i] for i in range(d)]
        tag_acc, prob_acc = tag_p, prob
        for stage in range(p.scale_spec.latency):
            delayed = [Signal(signed(product_width), name=f"pv{i}_s{stage}", reset_less=True) for i in range(d)]
            prob_next = Signal(unsigned(p.p_width), name=f"p_s{stage}", reset_less=True)
            tag_next = Signal(tag_layout, name=f"tag_acc{stage}")
            m.d.sync += [dst.eq(src) for dst, src in zip(delayed, products)]
            m.d.sync += [prob_next.eq(prob_acc), tag_next.eq(tag_acc)]
            products, prob_acc, tag_acc = delayed, prob_next, tag_next

        # an alpha in the accumulator (cycle c): l_sum / o_acc = R + D, D cleared; |o| registered in c + 1; the
        # scale-and-round units take it with alpha in c + 2 and give R in c + 5 (rescale_gap cycles apart)
        alpha_hold = Signal(unsigned(p.p_width), reset_less=True)
        rescaling = [Signal(name=f"rescale_s{stage}") for stage in range(gap - 1)]
        m.d.sync += [rescaling[0].eq(tag_acc.valid & tag_acc.alpha & ~tag_acc.first)]
        m.d.sync += [dst.eq(src) for dst, src in zip(rescaling[1:], rescaling)]
        rescaled = rescaling[-1]
        # high from the FINAL phase's second cycle on (a register, off the multipliers' input path): the lanes
        # read recip.y only once the reciprocal is done, recip.latency >= 1 cycles into FINAL
        finalizing = Signal()
        y_msb = recip.msb + (p.recip_frac + p.v_frac - p.out_frac)
        out_max = int_range(p.out_width, True)[1]
        m.d.comb += [
            recip.s.eq(l_sum),
            l_unit.en.eq(1),
            l_unit.a.eq(l_sum),
            l_unit.b.eq(alpha_hold),
            l_unit.shift.eq(p.exp_frac),
        ]
        for i, unit in enumerate(lanes):
            # |o| registered (off the multiplier's path)
            magnitude = Signal(unsigned(p.o_magnitude_width), name=f"o{i}_magnitude", reset_less=True)
            m.d.sync += magnitude.eq(Mux(o_acc[i] < 0, -o_acc[i], o_acc[i]))
            m.d.comb += [
                unit.en.eq(1),
                unit.a.eq(magnitude),
                unit.b.eq(Mux(finalizing, recip.y, alpha_hold)),
                unit.shift.eq(Mux(finalizing, y_msb, p.exp_frac)),
            ]
        with m.If(rescaled):
            m.d.sync += l_rescaled.eq(l_unit.result)
            for i, unit in enumerate(lanes):
                m.d.sync += o_rescaled[i].eq(Mux(o_acc[i] < 0, -unit.result, unit.result))
        with m.If(tag_acc.valid):
            with m.If(tag_acc.alpha & tag_acc.first):
                # a query's first tile: nothing to rescale (R = 0), and the previous query has combined
                m.d.sync += [l_rescaled.eq(0), l_tile.eq(0)]
                m.d.sync += [o.eq(0) for o in o_rescaled + o_tile]
            with m.Elif(tag_acc.alpha):
                m.d.sync += [l_sum.eq(l_rescaled + l_tile), l_tile.eq(0), alpha_hold.eq(prob_acc)]
                for i in range(d):
                    m.d.sync += [o_acc[i].eq(o_rescaled[i] + o_tile[i]), o_tile[i].eq(0)]
            with m.Else():
                m.d.sync += l_tile.eq(l_tile + prob_acc)
                for i in range(d):
                    m.d.sync += o_tile[i].eq(o_tile[i] + products[i])

        # issuer: the ready banks in turn, alpha then the rows. A query's first alpha waits for the previous
        # query's combination (R and D restart), its later alphas for the previous output register's write
        # (they overwrite l_sum / o_acc and use the scale-and-round units)
        issue_bank = Signal()
        step = Signal(range(tile + 1), reset_less=True)
        tile_left = Signal(range(tile + 1), reset_less=True)
        tile_is_final = Signal(reset_less=True)
        alpha_wait = Signal(range(gap))
        with m.If(alpha_wait != 0):
            m.d.sync += alpha_wait.eq(alpha_wait - 1)
        combine_pending = Signal()
        snapshot_busy = Signal(range(3))  # queries whose last tile is issued and output register not written
        issuing = Signal()
        bank_m = Mux(issue_bank, tile_m[1], tile_m[0])
        bank_first = Mux(issue_bank, tile_first[1], tile_first[0])
        drain = Signal(range(p.exp_depth + gap + 1))
        fphase = Signal(range(len(PHASES)))
        idle, final, out = (fphase == PHASES.index(name) for name in PHASES)
        fstep = Signal(range(p.normalize_cycles + 1), reset_less=True)
        # an alpha issued now reaches the accumulator exp_depth cycles later: a first one may go once the
        # combination is sure to come before (its conditions hold, the drain has < exp_depth cycles left), a
        # later one once the output register's write is (the finisher is far enough into FINAL)
        combined_in_time = ~combine_pending | (idle & (rows_done != 0) & (drain < p.exp_depth))
        written_in_time = (snapshot_busy == 0) | (
            (snapshot_busy == 1) & final & (fstep >= max(0, p.normalize_cycles - p.exp_depth))
        )
        # (a query's only live tile waits for the combination itself: its own drain timer and combination follow)
        bank_final = Mux(issue_bank, tile_final[1], tile_final[0])
        may_issue = Mux(bank_first, Mux(bank_final, ~combine_pending, combined_in_time), written_in_time)
        with m.If(~issuing):
            with m.If(ready.bit_select(issue_bank, 1) & (alpha_wait == 0) & may_issue):
                m.d.comb += [
                    issue.valid.eq(1),
                    issue.alpha.eq(1),
                    issue.first.eq(bank_first),
                    issue.release.eq(1),
                    issue.bank.eq(issue_bank),
                ]
                m.d.sync += [
                    diff.eq(m_run - bank_m),
                    m_run.eq(bank_m),
                    alpha_wait.eq(gap - 1),
                    step.eq(1),
                    issuing.eq(1),
                    ready.bit_select(issue_bank, 1).eq(0),
                    tile_left.eq(Mux(issue_bank, tile_n[1], tile_n[0])),
                    tile_is_final.eq(Mux(issue_bank, tile_final[1], tile_final[0])),
                ]
        with m.Else():
            index = (step - 1)[: len(issue.index)]
            m.d.comb += [
                issue.valid.eq(1),
                issue.index.eq(index),
                issue.bank.eq(issue_bank),
                issue.mask.eq(mask_buf[Cat(index, issue_bank)]),
            ]
            m.d.sync += [diff.eq(s_buf[Cat(index, issue_bank)] - m_run), step.eq(step + 1)]
            with m.If(step == tile_left):
                m.d.sync += [issuing.eq(0), issue_bank.eq(~issue_bank)]
        # the drain: the sums combine once the last row is in and the last alpha's rescale is done
        with m.If(drain != 0):
            m.d.sync += drain.eq(drain - 1)
        last_issued = Signal()
        m.d.comb += last_issued.eq(issuing & (step == tile_left) & tile_is_final)
        with m.If(last_issued):
            m.d.sync += [
                combine_pending.eq(1),
                drain.eq(p.exp_depth - 1 + Mux(tile_left < gap - 1, gap - tile_left, 1)),
            ]

        # finisher: the combination R + D, the normalization and the output, one query at a time
        m.d.sync += finalizing.eq(final)

        def goto(name):
            m.d.sync += fphase.eq(PHASES.index(name))

        combine = Signal()
        m.d.comb += combine.eq(idle & combine_pending & (drain == 0) & (rows_done != 0))
        m.d.sync += rows_done.eq(rows_done + query_rows_in - combine)
        output_taken = Signal()
        written = Signal()
        m.d.sync += [
            in_flight.eq(in_flight + q_take - output_taken),
            snapshot_busy.eq(snapshot_busy + last_issued - written),
        ]
        with m.If(idle):
            with m.If(combine):
                m.d.sync += [l_sum.eq(l_rescaled + l_tile), combine_pending.eq(0), fstep.eq(0)]
                m.d.sync += [o.eq(r + t) for o, r, t in zip(o_acc, o_rescaled, o_tile)]
                goto("FINAL")
        with m.Elif(final):
            m.d.comb += recip.start.eq(fstep == 0)
            m.d.sync += fstep.eq(fstep + 1)
            with m.If(fstep == p.normalize_cycles - 1):
                for i, unit in enumerate(lanes):
                    positive = Mux(unit.result > out_max, out_max, unit.result)
                    negative = Mux(unit.result > out_max + 1, out_max + 1, unit.result)
                    m.d.sync += out_reg[i].eq(Mux(o_acc[i] < 0, -negative, positive))
                m.d.comb += written.eq(1)
                goto("OUT")
        with m.Elif(out):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(out_reg)]
            with m.If(self.o.ready):
                m.d.comb += output_taken.eq(1)
                goto("IDLE")
        return m

    def _elaborate_groups(self) -> Module:
        """queries > 1: one K/V stream per group of up to `queries` queries (see the module docstring)."""
        m = Module()
        p = self.p
        d, tile, group = p.head_dim, p.tile, p.queries
        sw = p.score_bits
        s_lo, s_hi = p.score_range
        gap = p.rescale_gap
        m.domains.arith = ClockDomain("arith", reset_less=True, local=True)
        m.d.comb += ClockSignal("arith").eq(ClockSignal("sync"))
        arith = DomainRenamer("arith")
        m.submodules.exp = exp_unit = arith(ExpUnit(p.exp_spec))
        m.submodules.alpha_exp = alpha_unit = arith(ExpUnit(p.exp_spec))
        m.submodules.reciprocal = recip = arith(ReciprocalUnit(p.recip_spec))
        lanes = [arith(ScaleRoundUnit(p.scale_spec)) for _ in range(d)]
        final_lanes = [arith(ScaleRoundUnit(p.scale_spec)) for _ in range(d)]
        for i, (unit, final_unit) in enumerate(zip(lanes, final_lanes)):
            m.submodules[f"scale{i}"] = unit
            m.submodules[f"final_scale{i}"] = final_unit
        m.submodules.l_scale = l_unit = arith(ScaleRoundUnit(p.l_scale_spec))

        def per_query(shape, name):
            return [Signal(shape, name=f"{name}_q{i}", reset_less=True) for i in range(group)]

        o_shape = signed(p.o_magnitude_width + 1)
        l_shape = unsigned(p.l_width)
        q_regs = per_query(data.ArrayLayout(signed(p.q_width), d), "query")
        positions = per_query(unsigned(p.position_width), "position")
        m_new = per_query(signed(sw), "m_new")
        m_run = per_query(signed(sw), "m_run")
        # per query: R (rescaled sums up to the previous tile), D (this tile's terms), F (the finished sums)
        r_l, d_l, f_l = per_query(l_shape, "l_rescaled"), per_query(l_shape, "l_tile"), per_query(l_shape, "l_done")
        r_o = [[Signal(o_shape, name=f"o{k}_rescaled_q{i}", reset_less=True) for k in range(d)] for i in range(group)]
        d_o = [[Signal(o_shape, name=f"o{k}_tile_q{i}", reset_less=True) for k in range(d)] for i in range(group)]
        f_o = [[Signal(o_shape, name=f"o{k}_done_q{i}", reset_less=True) for k in range(d)] for i in range(group)]
        length = Signal(unsigned(p.length_width), reset_less=True)
        group_n = Signal(range(group + 1), reset_less=True)
        q_count = Signal(range(group))
        max_limit = Signal(range(p.seq_max + p.causal_offset + 1), reset_less=True)
        k_reg = Signal(data.ArrayLayout(signed(p.k_width), d), reset_less=True)

        # two banks of one tile: V rows (shared by the group), per query the scores, mask bits and the tile's max
        v_rows = data.ArrayLayout(signed(p.v_width), d)
        s_regs = [
            [[Signal(signed(sw), name=f"s{b}_q{i}_{j}", reset_less=True) for j in range(tile)] for i in range(group)]
            for b in range(2)
        ]
        mask_regs = [
            [[Signal(name=f"mask{b}_q{i}_{j}", reset_less=True) for j in range(tile)] for i in range(group)]
            for b in range(2)
        ]
        v_regs = [
            [Signal(unsigned(v_rows.size), name=f"v{b}_{j}", reset_less=True) for j in range(tile)] for b in range(2)
        ]
        tile_m = [[Signal(signed(sw), name=f"tile_m{b}_q{i}", reset_less=True) for i in range(group)] for b in range(2)]
        tile_n = [Signal(range(tile + 1), name=f"tile_rows{b}", reset_less=True) for b in range(2)]
        tile_nq = [Signal(range(group + 1), name=f"tile_queries{b}", reset_less=True) for b in range(2)]
        tile_final = [Signal(name=f"tile_final{b}", reset_less=True) for b in range(2)]
        tile_first = [Signal(name=f"tile_first{b}", reset_less=True) for b in range(2)]
        # rows of a bank's tile whose V rows have had their last read (tile: all, or no tile yet)
        freed = [Signal(range(tile + 1), name=f"freed{b}", init=tile) for b in range(2)]
        ready = Signal(2)  # loaded and its maxima known, until its first item is issued
        s_buf, mask_buf = (_banked([_padded(bank) for bank in regs]) for regs in (s_regs, mask_regs))
        v_buf = _banked(v_regs)

        # loader: the group's q beats, then its rows; a live row is scored for each query in a window of
        # group_n cycles (query 0 from the kv payload as it is accepted, the others from k_reg)
        loading = Signal()
        sub = Signal(range(group))
        load_bank = Signal()
        base = Signal(range(p.seq_max + tile + 1), reset_less=True)
        row = Signal(range(max(tile, 2)), reset_less=True)
        rows_left = Signal(range(p.seq_max + 1))
        tile_rows = Signal(range(tile + 1))
        m.d.comb += [rows_left.eq(length - base), tile_rows.eq(Mux(rows_left < tile, rows_left, tile))]
        live = Signal()
        m.d.comb += live.eq(base <= max_limit if p.causal else 1)
        last_tile = Signal()
        m.d.comb += last_tile.eq(rows_left <= tile if tile < p.seq_max else 1)
        final_live = last_tile | (base + tile > max_limit) if p.causal else last_tile
        last_row = row == tile_rows - 1
        bank_freed = Mux(load_bank, freed[1], freed[0])
        row_free = Mux(last_row, bank_freed == tile, row < bank_freed)

        q_take = Signal()
        m.d.comb += [self.q.ready.eq(~loading & (sub == 0)), q_take.eq(self.q.valid & self.q.ready)]
        kv_take = Signal()
        m.d.comb += [
            self.kv.ready.eq(loading & (sub == 0) & (~live | row_free)),
            kv_take.eq(self.kv.valid & self.kv.ready),
        ]

        # the score of (row, query sub): query 0 in the accept cycle, the others in the window's later cycles
        held_row = Signal(range(max(tile, 2)), reset_less=True)
        held_key = Signal(range(p.seq_max + tile + 1), reset_less=True)
        held_last = Signal(reset_less=True)
        held_bank = Signal(reset_less=True)
        in_window = Signal()
        k_in = data.View(k_reg.shape(), Mux(sub == 0, self.kv.payload.k.as_value(), k_reg.as_value()))
        q_in = data.View(q_regs[0].shape(), _array([q.as_value() for q in q_regs])[sub])
        dot = _sum_tree([q_in[i] * k_in[i] for i in range(d)])
        score = Mux(dot > s_hi, s_hi, Mux(dot < s_lo, s_lo, dot)) if p.score_width else dot
        key = Mux(sub == 0, base + row, held_key)
        sc_valid = Signal()
        sc_value = Signal(signed(sw), reset_less=True)
        sc_index = Signal(range(max(tile, 2)), reset_less=True)
        sc_query = Signal(range(group), reset_less=True)
        sc_bank = Signal(reset_less=True)
        sc_mask = Signal(reset_less=True)
        sc_last = Signal(reset_less=True)  # the tile's last row: its max is taken
        sc_end = Signal(reset_less=True)  # ... and its last query: the tile is ready
        scoring = (kv_take & live) | in_window
        window_last = Mux(sub == 0, last_row, held_last)
        m.d.sync += sc_valid.eq(scoring)
        with m.If(scoring):
            m.d.sync += [
                sc_value.eq(score),
                sc_index.eq(Mux(sub == 0, row, held_row)),
                sc_query.eq(sub),
                sc_bank.eq(Mux(sub == 0, load_bank, held_bank)),
                sc_last.eq(window_last),
                sc_end.eq(window_last & (sub == group_n - 1)),
                sc_mask.eq(key > _array(positions)[sub] + p.causal_offset if p.causal else 0),
            ]
            with m.If(sub == group_n - 1):
                m.d.sync += [sub.eq(0), in_window.eq(0)]
            with m.Else():
                m.d.sync += [sub.eq(sub + 1), in_window.eq(1)]
        with m.If(sc_valid):
            for i in range(group):
                with m.If(sc_query == i):
                    larger = ~sc_mask & (sc_value > m_new[i])
                    with m.If(larger):
                        m.d.sync += m_new[i].eq(sc_value)
                    for b in range(2):
                        with m.If(sc_bank == b):
                            for j in range(tile):
                                with m.If(sc_index == j):
                                    m.d.sync += [s_regs[b][i][j].eq(sc_value), mask_regs[b][i][j].eq(sc_mask)]
                            with m.If(sc_last):
                                m.d.sync += tile_m[b][i].eq(Mux(larger, sc_value, m_new[i]))
            with m.If(sc_end):
                m.d.sync += ready.bit_select(sc_bank, 1).eq(1)

        with m.If(q_take):
            last_query = (q_count == group - 1) | self.q.payload.last
            for i in range(group):
                with m.If(q_count == i):
                    m.d.sync += [q_regs[i].eq(self.q.payload.q), m_new[i].eq(s_lo)]
                    if p.causal:
                        m.d.sync += positions[i].eq(self.q.payload.position)
            with m.If(q_count == 0):
                m.d.sync += [length.eq(self.q.payload.length), base.eq(0), row.eq(0)]
            if p.causal:
                limit = self.q.payload.position + p.causal_offset
                with m.If((q_count == 0) | (limit > max_limit)):
                    m.d.sync += max_limit.eq(limit)
            with m.If(last_query):
                m.d.sync += [loading.eq(1), group_n.eq(q_count + 1), q_count.eq(0)]
            with m.Else():
                m.d.sync += q_count.eq(q_count + 1)
        with m.If(kv_take):
            m.d.sync += row.eq(row + 1)
            with m.If(live):
                m.d.sync += [
                    k_reg.eq(self.kv.payload.k),
                    held_row.eq(row),
                    held_key.eq(base + row),
                    held_last.eq(last_row),
                    held_bank.eq(load_bank),
                ]
                for b in range(2):
                    for j in range(tile):
                        with m.If((load_bank == b) & (row == j)):
                            m.d.sync += v_regs[b][j].eq(self.kv.payload.v)
            with m.If(last_row):
                m.d.sync += [row.eq(0), base.eq(base + tile)]
                with m.If(live):
                    m.d.sync += load_bank.eq(~load_bank)
                    for b in range(2):
                        with m.If(load_bank == b):
                            m.d.sync += [
                                tile_n[b].eq(tile_rows),
                                tile_nq[b].eq(group_n),
                                freed[b].eq(0),
                                tile_final[b].eq(final_live),
                                tile_first[b].eq(base == 0),
                            ]
                with m.If(last_tile):
                    m.d.sync += loading.eq(0)

        # issuer: the ready banks in turn, items (row j, query i) row-major, one per cycle
        tag_layout = data.StructLayout(
            {
                "valid": 1,
                "query": range(group),
                "row0": 1,
                "first": 1,
                "mask": 1,
                "last": 1,
                "group_last": 1,
                "row_done": 1,
                "row_last": 1,
                "bank": 1,
                "index": range(max(tile, 2)),
            }
        )
        issue = Signal(tag_layout)
        issue_bank = Signal()
        issuing = Signal()
        item_row = Signal(range(max(tile, 2)), reset_less=True)
        item_query = Signal(range(group))
        gap_wait = [Signal(range(gap), name=f"gap_wait_q{i}") for i in range(group)]
        # (a power of two of bits: a bit_select by a query number covers every index value)
        slots = 1 << max(1, (group - 1).bit_length())
        f_busy = Signal(slots)  # a query slot's finish buffer: reserved from its last item's issue
        f_valid = Signal(slots)  # ... written, until the finisher takes it
        f_last = Signal(slots, reset_less=True)
        for wait in gap_wait:
            with m.If(wait != 0):
                m.d.sync += wait.eq(wait - 1)

        def bank_pick(regs):
            return Mux(issue_bank, regs[1], regs[0])

        bank_rows, bank_nq = bank_pick(tile_n), bank_pick(tile_nq)
        bank_m = Array([_array(tile_m[0]), _array(tile_m[1])])[issue_bank][item_query]
        row0 = item_row == 0
        row_last = item_row == bank_rows - 1
        query_last = item_query == bank_nq - 1
        final_item = bank_pick(tile_final) & row_last
        active = issuing | ready.bit_select(issue_bank, 1)
        go = active & (~row0 | (_array(gap_wait)[item_query] == 0)) & (~final_item | ~f_busy.bit_select(item_query, 1))
        diff = Signal(signed(sw + 1), reset_less=True)
        alpha_diff = Signal(signed(sw + 1), reset_less=True)
        m.d.comb += [exp_unit.en.eq(1), exp_unit.d.eq(diff), alpha_unit.en.eq(1), alpha_unit.d.eq(alpha_diff)]
        slot = Cat(item_row, item_query, issue_bank)
        with m.If(go):
            m.d.comb += [
                issue.valid.eq(1),
                issue.query.eq(item_query),
                issue.row0.eq(row0),
                issue.first.eq(bank_pick(tile_first)),
                issue.mask.eq(mask_buf[slot]),
                issue.last.eq(final_item),
                issue.group_last.eq(query_last),
                issue.row_done.eq(query_last),
                issue.row_last.eq(row_last),
                issue.bank.eq(issue_bank),
                issue.index.eq(item_row),
            ]
            m.d.sync += [diff.eq(s_buf[slot] - bank_m), issuing.eq(1)]
            with m.If(~issuing):
                m.d.sync += ready.bit_select(issue_bank, 1).eq(0)
            for i in range(group):
                with m.If(item_query == i):
                    with m.If(row0):
                        m.d.sync += [alpha_diff.eq(m_run[i] - bank_m), m_run[i].eq(bank_m)]
                    with m.If(row0):
                        m.d.sync += gap_wait[i].eq(gap - 1)
            with m.If(final_item):
                m.d.sync += f_busy.bit_select(item_query, 1).eq(1)
            with m.If(query_last):
                m.d.sync += item_query.eq(0)
                with m.If(row_last):
                    m.d.sync += [item_row.eq(0), issuing.eq(0), issue_bank.eq(~issue_bank)]
                with m.Else():
                    m.d.sync += item_row.eq(item_row + 1)
            with m.Else():
                m.d.sync += item_query.eq(item_query + 1)

        # exp pipelines (p and alpha side by side), fixed-point conversion, V read, products, accumulate
        tags = [Signal(tag_layout, name="tag_issue")]
        m.d.sync += tags[0].eq(issue)
        for stage in range(p.exp_spec.latency):
            tag = Signal(tag_layout, name=f"tag_exp{stage}")
            m.d.sync += tag.eq(tags[-1])
            tags.append(tag)
        tag_exp = tags[-1]
        # the row's last V read is in the next cycle: the loader may rewrite it from then on
        with m.If(tag_exp.valid & tag_exp.row_done):
            for b in range(2):
                with m.If(tag_exp.bank == b):
                    m.d.sync += freed[b].eq(Mux(tag_exp.row_last, tile, tag_exp.index + 1))

        def fixed(unit, empty):
            shift = Signal(unsigned(len(unit.exponent)))
            m.d.comb += shift.eq(-unit.exponent)
            return Mux((shift > p.exp_frac) | empty, 0, unit.mantissa >> shift)

        prob = Signal(unsigned(p.p_width), reset_less=True)
        alpha = Signal(unsigned(p.p_width), reset_less=True)
        tag_p = Signal(tag_layout)
        m.d.sync += [prob.eq(fixed(exp_unit, tag_exp.mask)), alpha.eq(fixed(alpha_unit, 0)), tag_p.eq(tag_exp)]
        product_width = p.p_width + p.v_width + 1
        v_sel = data.View(v_rows, v_buf[Cat(tag_p.index, tag_p.bank)])
        products = [Signal(signed(product_width), name=f"pv{k}", reset_less=True) for k in range(d)]
        prob_acc = Signal(unsigned(p.p_width), reset_less=True)
        alpha_acc = Signal(unsigned(p.p_width), reset_less=True)
        tag_acc = Signal(tag_layout)
        m.d.sync += [dst.eq(prob * v_sel[k]) for k, dst in enumerate(products)]
        m.d.sync += [prob_acc.eq(prob), alpha_acc.eq(alpha), tag_acc.eq(tag_p)]

        # accumulate: row 0 of a query's tile restarts (first tile) or combines R + D for the rescale and
        # restarts D (a tile fully masked for the query has nothing to rescale: its terms are all 0)
        comb_valid = Signal()
        comb_query = Signal(range(group), reset_less=True)
        comb_alpha = Signal(unsigned(p.p_width), reset_less=True)
        comb_l = Signal(l_shape, reset_less=True)
        comb_o = [Signal(o_shape, name=f"o{k}_combined", reset_less=True) for k in range(d)]
        # per query: its last item is in (its sums wait for the rescale in flight, if any, to finish)
        pending = Signal(group)
        pending_last = Signal(group, reset_less=True)
        in_flight = Signal(group)  # a rescale of its R + D is on its way
        m.d.sync += comb_valid.eq(0)
        qa = tag_acc.query
        restart = tag_acc.row0 & ~tag_acc.mask
        with m.If(tag_acc.valid):
            for i in range(group):
                with m.If(qa == i):
                    with m.If(restart):
                        m.d.sync += [d_l[i].eq(prob_acc)] + [d_o[i][k].eq(products[k]) for k in range(d)]
                        with m.If(tag_acc.first):
                            m.d.sync += [r_l[i].eq(0)] + [r_o[i][k].eq(0) for k in range(d)]
                        with m.Else():
                            m.d.sync += [
                                comb_valid.eq(1),
                                comb_query.eq(i),
                                comb_alpha.eq(alpha_acc),
                                comb_l.eq(r_l[i] + d_l[i]),
                                in_flight[i].eq(1),
                            ]
                            m.d.sync += [comb_o[k].eq(r_o[i][k] + d_o[i][k]) for k in range(d)]
                    with m.Else():
                        m.d.sync += [d_l[i].eq(d_l[i] + prob_acc)]
                        m.d.sync += [d_o[i][k].eq(d_o[i][k] + products[k]) for k in range(d)]
                    with m.If(tag_acc.last):
                        m.d.sync += [pending[i].eq(1), pending_last[i].eq(tag_acc.group_last)]

        # rescale: |R + D| registered, then the scale-and-round units (alpha), the sign and query alongside
        mag_l = Signal(l_shape, reset_less=True)
        mag_o = [Signal(unsigned(p.o_magnitude_width), name=f"o{k}_magnitude", reset_less=True) for k in range(d)]
        scale_alpha = Signal(unsigned(p.p_width), reset_less=True)
        tracks = [
            Signal(data.StructLayout({"valid": 1, "query": range(group), "negative": d}), name=f"rescale{stage}")
            for stage in range(p.scale_spec.latency + 1)
        ]
        m.d.sync += [
            mag_l.eq(comb_l),
            scale_alpha.eq(comb_alpha),
            tracks[0].valid.eq(comb_valid),
            tracks[0].query.eq(comb_query),
            tracks[0].negative.eq(Cat(o < 0 for o in comb_o)),
        ]
        m.d.sync += [mag.eq(Mux(o < 0, -o, o)) for mag, o in zip(mag_o, comb_o)]
        m.d.sync += [dst.eq(src) for dst, src in zip(tracks[1:], tracks)]
        m.d.comb += [l_unit.en.eq(1), l_unit.a.eq(mag_l), l_unit.b.eq(scale_alpha), l_unit.shift.eq(p.exp_frac)]
        for unit, mag in zip(lanes, mag_o):
            m.d.comb += [unit.en.eq(1), unit.a.eq(mag), unit.b.eq(scale_alpha), unit.shift.eq(p.exp_frac)]
        done = tracks[-1]
        with m.If(done.valid):
            for i in range(group):
                with m.If(done.query == i):
                    m.d.sync += [r_l[i].eq(l_unit.result), in_flight[i].eq(0)]
                    m.d.sync += [
                        r_o[i][k].eq(Mux(done.negative[k], -unit.result, unit.result)) for k, unit in enumerate(lanes)
                    ]

        # a query's last item is in and its last rescale done: R + D is final (several queries at once)
        for i in range(group):
            with m.If(pending[i] & ~in_flight[i]):
                m.d.sync += [
                    f_l[i].eq(r_l[i] + d_l[i]),
                    pending[i].eq(0),
                    f_valid[i].eq(1),
                    f_last[i].eq(pending_last[i]),
                ]
                m.d.sync += [f_o[i][k].eq(r_o[i][k] + d_o[i][k]) for k in range(d)]

        # finisher: the finish buffers in order, one query at a time: reciprocal, scale-and-round, output
        fphase = Signal(range(len(PHASES)))
        idle, final, out = (fphase == PHASES.index(name) for name in PHASES)
        fstep = Signal(range(p.normalize_cycles + 1), reset_less=True)
        f_index = Signal(range(group))
        n_l = Signal(l_shape, reset_less=True)
        n_o = [Signal(o_shape, name=f"o{k}_final", reset_less=True) for k in range(d)]
        out_reg = Signal(o_layout(p), reset_less=True)
        y_msb = recip.msb + (p.recip_frac + p.v_frac - p.out_frac)
        out_max = int_range(p.out_width, True)[1]
        m.d.comb += recip.s.eq(n_l)
        for unit, o in zip(final_lanes, n_o):
            magnitude = Signal(unsigned(p.o_magnitude_width), name=f"{o.name}_magnitude", reset_less=True)
            m.d.sync += magnitude.eq(Mux(o < 0, -o, o))
            m.d.comb += [unit.en.eq(1), unit.a.eq(magnitude), unit.b.eq(recip.y), unit.shift.eq(y_msb)]

        def goto(name):
            m.d.sync += fphase.eq(PHASES.index(name))

        with m.If(idle):
            with m.If(f_valid.bit_select(f_index, 1)):
                m.d.sync += [
                    n_l.eq(_array(f_l)[f_index]),
                    fstep.eq(0),
                    f_valid.bit_select(f_index, 1).eq(0),
                    f_busy.bit_select(f_index, 1).eq(0),
                    f_index.eq(Mux(f_last.bit_select(f_index, 1), 0, f_index + 1)),
                ]
                m.d.sync += [o.eq(_array([f_o[i][k] for i in range(group)])[f_index]) for k, o in enumerate(n_o)]
                goto("FINAL")
        with m.Elif(final):
            m.d.comb += recip.start.eq(fstep == 0)
            m.d.sync += fstep.eq(fstep + 1)
            with m.If(fstep == p.normalize_cycles - 1):
                for k, unit in enumerate(final_lanes):
                    positive = Mux(unit.result > out_max, out_max, unit.result)
                    negative = Mux(unit.result > out_max + 1, out_max + 1, unit.result)
                    m.d.sync += out_reg[k].eq(Mux(n_o[k] < 0, -negative, positive))
                goto("OUT")
        with m.Elif(out):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(out_reg)]
            with m.If(self.o.ready):
                goto("IDLE")
        return m


def _array(values: list) -> Array:
    """An Array indexed by a query number: padded to a power of two entries (a read covers every index value,
    no `case` with uncovered patterns); the padding is never selected."""
    size = 1 << max(1, (len(values) - 1).bit_length())
    return Array(list(values) + [values[0]] * (size - len(values)))


def _padded(bank: list) -> list:
    """A bank's per-query rows padded to a power of two queries (so Cat(row, query, bank) reads cover every
    value); rows are padded by `_banked`. The padding is never selected."""
    size = 1 << max(1, (len(bank) - 1).bit_length())
    rows = 1 << max(1, (len(bank[0]) - 1).bit_length())
    flat = [register for regs in bank for register in regs + [regs[0]] * (rows - len(regs))]
    return flat + [bank[0][0]] * ((size - len(bank)) * rows)


def _banked(banks: list) -> Array:
    """An Array of both banks' registers read by Cat(index, bank): each bank padded to a power of two entries,
    so a read covers every index value (no `case` with uncovered patterns); the padding is never selected."""
    size = 1 << max(1, (len(banks[0]) - 1).bit_length())
    return Array([register for regs in banks for register in regs + [regs[0]] * (size - len(regs))])


def _sum_tree(values):
    """A balanced adder tree (widths grow by Amaranth's rules: exact)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i] for i in range(0, len(values), 2)]
    return values[0]


register(
    Block(
        name="attention",
        summary="one attention head: FlashAttention tiles of K/V with online softmax, fixed point, causal/decode",
        params=AttentionParams,
        component=AttentionHead,
        golden=attention_golden,
        cycles=attention_cycles,
        testbench="hardwire.sim.tb_attention",
        generator_version=GENERATOR_VERSION,
        error_bound=error_bound_lsb,
        error_reference="float64 torch scaled_dot_product_attention",
    )
)
