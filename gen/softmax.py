"""Streaming softmax unit in fixed point, four variants of the same datapath (`variant`).

Input: a stream of signed in_width-bit codes x (value x * 2**-in_frac), one element per beat, a vector ending
with `last` (or with its n_max-th element); output: one unsigned out_width-bit probability per input
(value y * 2**-out_width, saturated at 2**out_width - 1), in order, `last` on the final one.

The vector is written into an on-chip buffer (n_max x in_width bits) as it arrives; a "pass over the input"
below is one sweep over the vector: the arrival on the stream is pass 1, later passes replay the buffer, one
element per cycle. Variants (exp and reciprocal from `hardwire.gen.fixmath`):

* ``three_pass``: pass 1 (arrival) the max M; pass 2 the sum S of E(x - M); pass 3 normalizes. 3 passes.
* ``two_pass`` (Two-Pass Softmax): pass 1 accumulates exp(x) as a (mantissa, exponent) pair (Macc, K): each
  term (m, k) is aligned to the larger exponent by a shift, no max is needed and nothing overflows; pass 2
  normalizes with exponent k - K. 2 passes.
* ``online``: pass 1 keeps a running max M and the sum relative to it; when x > M the sum is rescaled by
  exp(M - x) (a multiply) and 1 is added; pass 2 normalizes against the final M. 2 passes.
* ``online_pipelined``: ``online`` with L = ``lanes`` interleaved (max, sum) pairs: element i updates lane
  i mod L, so a lane's rescale-multiply-add has L cycles and is pipelined over LANE_PIPELINE_DEPTH stages
  (online's one-cycle recurrence held it near 40 MHz on ECP5); after the last element the used lanes are
  rescaled to the vector's max and added (the lane combination, exact: see `_lane_sums_golden`). Three
  buffer banks, and registers where ECP5's critical paths ran (`_OnlinePipelined`). 2 passes.
* ``unified_max`` (FlashDecoding++): pass 1 sums E(x - phi) against the fixed estimate phi = max_estimate
  while tracking the true max M; pass 2 normalizes against phi. Fallback when M > phi (exp would exceed 1)
  or M < phi - estimate_window (the sum would lose precision): an extra pass sums E(x - M) as three_pass
  does and pass 3 normalizes against M. The fallback is decided when the last element arrives and costs
  exactly n extra cycles (the sum pass starts at once; pass 1's accumulation drains under it and is
  discarded; `softmax_schedule` is exact). 2 or 3 passes.

Arithmetic (all in `softmax_golden`): (m, k) = exp_golden(d); fixed-point terms E(m, k) = (m << g) >> -k
(sum_frac = mant_frac + g fraction bits, g = sum_guard_bits, k <= 0); the sum S (or Macc) is sum_width bits
and never overflows; (y, P) = reciprocal_golden(S); output = scale_round_golden(m, y, recip_frac + P -
out_width - g - kk, out_width) with kk = k - K (two_pass) or k.

Accuracy (`error_bound_lsb`, checked against float64 softmax on adversarial vectors in the tests). With
p_i = e_i / Z the true output (e_i = exp(x_i - M), Z = sum e_j >= 1) and A the exp's relative error bound
over every difference (fixmath: table, rounding, the floor of t, the log2(e) constant's rounding times the
largest |d|), each term m_i 2**(k_i - mant_frac) = e_i (1 + a_i), |a_i| <= A. The sum S = Z (1 + s) - D:
its terms' errors |s| <= A (online: each term is also rescaled by the factor of every later growth of the
max, so |s| <= (1 + c) A (1 + A)**(n - 1) with c the mean number of rescales, see `_online_rescales`), and
D >= 0 the truncation of each term (plus each realignment or rescale) to sum_frac = mant_frac +
sum_guard_bits fraction bits: at most (n - 1) (or 2 (n - 1)) units of 2**-sum_frac, over Z >= 1
(unified_max: Z >= exp(-window)). The reciprocal adds a relative r (fixmath's bound), and the scale-and-round
is exact before its rounding. So output_i / 2**out_width = p_i (1 + a_i)(1 + r) / (1 + s - D/Z): off by at
most 0.5 LSB (rounding) + 2**out_width * p_i * rel with rel = (1 + A)(1 + r) / (1 - s - D) - 1 (or the lower
side), and p_i <= 1; p = 1.0 saturates to 2**out_width - 1, so the bound is never below 1 LSB.
`derive_precision` picks each precision left unset so that rel <= 2**-(out_width + 1): the bound is then
1 LSB. The exp table's and the mantissa's bits follow out_width (+ log2 of the online rescales), the sum's
guard bits log2(n_max), the log2(e) constant's bits the input span.

Pipeline (one clock-enable `advance` = ~out.valid | out.ready, so back-pressure stalls everything in flight):
an element issued in cycle c (accepted from the stream, or its buffer address presented) has its x in c + 1,
d = x - reference registered for c + 2, (m, k) from the exp unit in c + X (X = 2 + exp latency); it either
accumulates in c + X + 1 (stage X registers what does not depend on the sum: the term, shift amounts), or
enters the scale-round unit in c + X and leaves as an output in c + X + L_sr (the unit's latency, 3).

Double buffering: the input buffer has two banks, and the datapath is split in two that run at once, each
with its own exp unit: the front end loads a vector into one bank (pass 1; three_pass and the fallback also
replay it for the sum pass) and accumulates its sum; once the sum is complete it hands the sum to the
reciprocal and the vector's reference (and two_pass's K) to per-bank registers, and goes on to load the next
vector into the other bank. The back end normalizes the banks in turn, back to back, with per-bank 1/S. A bank
is loaded again only after its previous vector's last normalize issue. So vector n + 1 loads while vector n
normalizes: back to back at length 64 the two single-sweep variants take 70.5 cycles per vector (0.91
elements per cycle), three_pass 134 (its second sweep is the front end's); one at a time it was 149 and 213.
`softmax_schedule` is exact.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import warnings
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
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

VARIANTS = ("three_pass", "two_pass", "online", "unified_max", "online_pipelined")
# online_pipelined: the stages of a lane's (max, sum) update from reading the lane's sum to writing it back
# (operand, partial products, two additions of them, the shift, the add): a lane's next element may read it
# LANE_PIPELINE_DEPTH cycles later at the earliest, so there are at least that many lanes
LANE_PIPELINE_DEPTH = 6
MAX_LANES = 64
MAX_N = 4096
# The bound the derived precisions aim for: |golden - float64 softmax| <= 1 output LSB.
ERROR_TARGET_LSB = 1.0
PRECISION_FIELDS = ("mant_frac", "exp_lut_bits", "recip_frac", "recip_lut_bits", "log2e_frac", "sum_guard_bits")


@dataclass(frozen=True)
class SoftmaxParams:
    """A validated softmax configuration; raises ParameterError naming the bad parameter."""

    variant: str = "three_pass"
    n_max: int = 16
    in_width: int = 8
    in_frac: int = 4
    out_width: int = 8
    # internal precisions: None derives each from out_width, n_max and the input format (`derive_precision`)
    mant_frac: int | None = None
    exp_lut_bits: int | None = None
    exp_interp: str = "linear"
    recip_method: str = "newton"
    recip_frac: int | None = None
    recip_lut_bits: int | None = None
    log2e_frac: int | None = None
    sum_guard_bits: int | None = None
    max_estimate: int = 48  # unified_max: phi, an input code
    estimate_window: int = 32  # unified_max: fallback also when max < phi - window (input codes)
    lanes: int | None = None  # online_pipelined: interleaved (max, sum) lanes (None: LANE_PIPELINE_DEPTH)

    def __post_init__(self):
        require(self.variant in VARIANTS, "variant", self.variant, ", ".join(VARIANTS))
        require(is_int(self.n_max) and 2 <= self.n_max <= MAX_N, "n_max", self.n_max, f"2..{MAX_N}")
        require(is_int(self.in_width) and 2 <= self.in_width <= 16, "in_width", self.in_width, "2..16")
        require(
            is_int(self.in_frac) and 0 <= self.in_frac <= self.in_width,
            "in_frac",
            self.in_frac,
            f"0..in_width={self.in_width}",
        )
        require(is_int(self.out_width) and 2 <= self.out_width <= 24, "out_width", self.out_width, "2..24")
        require(self.exp_interp in EXP_INTERPOLATIONS, "exp_interp", self.exp_interp, " or ".join(EXP_INTERPOLATIONS))
        require(
            self.recip_method in RECIPROCAL_METHODS, "recip_method", self.recip_method, " or ".join(RECIPROCAL_METHODS)
        )
        lo, hi = int_range(self.in_width, True)
        require(
            is_int(self.max_estimate) and lo <= self.max_estimate <= hi,
            "max_estimate",
            self.max_estimate,
            f"{lo}..{hi} (an input code)",
        )
        require(
            is_int(self.estimate_window) and 0 <= self.estimate_window <= hi - lo,
            "estimate_window",
            self.estimate_window,
            f"0..{hi - lo}",
        )
        if self.variant == "online_pipelined":
            if self.lanes is None:
                object.__setattr__(self, "lanes", LANE_PIPELINE_DEPTH)
            require(
                is_int(self.lanes) and LANE_PIPELINE_DEPTH <= self.lanes <= MAX_LANES,
                "lanes",
                self.lanes,
                f"{LANE_PIPELINE_DEPTH}..{MAX_LANES} (at least the lane update's pipeline depth)",
            )
        else:
            require(self.lanes is None, "lanes", self.lanes, "None (only online_pipelined has lanes)")
        fill_unset_precisions(self, PRECISION_FIELDS, derive_precision)
        require(
            is_int(self.recip_frac) and self.out_width < self.recip_frac <= 30,
            "recip_frac",
            self.recip_frac,
            f"{self.out_width + 1}..30 (more than out_width={self.out_width})",
        )
        require(
            is_int(self.sum_guard_bits) and 0 <= self.sum_guard_bits <= 16,
            "sum_guard_bits",
            self.sum_guard_bits,
            "0..16",
        )
        # the specs validate their own fields (and name them)
        _ = self.exp_spec, self.recip_spec
        if self.variant == "unified_max":
            m, k = exp_golden(self.exp_spec, np.array([-self.estimate_window]))
            require(
                int(m[0]) >> -int(k[0]) > 0,
                "estimate_window",
                self.estimate_window,
                "small enough that exp(-window) is not 0 at mant_frac bits (else the sum can be 0)",
            )
        self._warn_if_less_accurate_than_derived()

    def _warn_if_less_accurate_than_derived(self) -> None:
        """A user's precision that cannot meet the bound the derived ones meet is accepted, with a warning
        that states the bound it does meet."""
        if not self._given:
            return
        bound = error_bound_lsb(self)
        derived = dataclasses.replace(self, **{name: None for name in PRECISION_FIELDS})
        target = max(ERROR_TARGET_LSB, error_bound_lsb(derived))
        if bound > target * (1 + 1e-9):
            given = ", ".join(f"{name}={getattr(self, name)}" for name in self._given)
            warnings.warn(
                PrecisionWarning(
                    f"softmax {given}: the error bound is {bound:.3g} output LSB (derived precisions meet "
                    f"{target:.3g}; leave them unset for the derived values)"
                ),
                stacklevel=4,
            )

    @classmethod
    def from_dict(cls, values: dict) -> SoftmaxParams:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    # -- derived -----------------------------------------------------------------------------------

    @property
    def exp_spec(self) -> ExpSpec:
        """exp of d = x - reference (in_width + 1 bits: the difference of two codes)."""
        if self.variant == "online_pipelined":  # the product in two registered stages, for Fmax
            return ExpSpec(
                self.in_width + 1,
                self.in_frac,
                self.mant_frac,
                self.exp_lut_bits,
                self.exp_interp,
                self.log2e_frac,
                product_stages=2,
            )
        return ExpSpec(
            self.in_width + 1, self.in_frac, self.mant_frac, self.exp_lut_bits, self.exp_interp, self.log2e_frac
        )

    @property
    def sum_frac(self) -> int:
        """Fraction bits of the sum's terms: the mantissa's plus the guard bits that keep n_max truncations
        small."""
        return self.mant_frac + self.sum_guard_bits

    @property
    def sum_width(self) -> int:
        """Bits of the sum S (or Macc): n_max terms each < 2**(sum_frac + 1)."""
        return self.sum_frac + 1 + self.n_max.bit_length()

    @property
    def recip_spec(self) -> ReciprocalSpec:
        return ReciprocalSpec(self.sum_width, self.recip_frac, self.recip_method, self.recip_lut_bits)

    @property
    def kk_range(self) -> tuple[int, int]:
        """Range of the exponent kk used in normalization (<= 0)."""
        k_lo, k_hi = self.exp_spec.exponent_range
        if self.variant == "two_pass":
            return k_lo - k_hi, 0
        return k_lo, 0

    @property
    def shift_width(self) -> int:
        most = self.recip_frac + self.sum_width - 1 - self.out_width - self.sum_guard_bits - self.kk_range[0]
        return bits_for_range(0, most, False)

    @property
    def scale_spec(self) -> ScaleRoundSpec:
        stages = 2 if self.variant == "online_pipelined" else 1  # online_pipelined: for Fmax
        return ScaleRoundSpec(self.mant_frac + 1, self.recip_frac + 1, self.shift_width, self.out_width, stages)

    @property
    def exp_delay(self) -> int:
        """X: cycles from an element's issue to its (m, k) at the accumulator / scale-round input."""
        return 2 + self.exp_spec.latency

    @property
    def acc_delay(self) -> int:
        """Cycles from an element's issue to the cycle its term is added to the sum: X, then one register of
        everything that does not depend on the sum (the term m >> -k, shift amounts, the new exponent);
        online_pipelined: the lane update's first stage, after two (-k registered before the term's shift)."""
        return self.exp_delay + 1 + (self.variant == "online_pipelined")

    @property
    def output_delay(self) -> int:
        """Cycles from a normalize-pass issue to the output handshake (always-ready sink); online_pipelined
        registers the buffer's output and the scale-and-round's operands (1/S read from its bank, the shift),
        and queues the output: three more."""
        return self.exp_delay + self.scale_spec.latency + 3 * (self.variant == "online_pipelined")

    @property
    def banks(self) -> int:
        """Input buffer banks: two (one loads while the other normalizes); online_pipelined three, since its
        lane combination lengthens the time from a vector's last input to its normalization."""
        return 3 if self.variant == "online_pipelined" else 2

    @property
    def buffer_bits(self) -> int:
        """`banks` banks of n_max input codes."""
        return self.banks * self.n_max * self.in_width

    @property
    def in_layout(self) -> data.StructLayout:
        return data.StructLayout({"data": signed(self.in_width), "last": 1})

    @property
    def out_layout(self) -> data.StructLayout:
        return data.StructLayout({"data": unsigned(self.out_width), "last": 1})

    @property
    def top_name(self) -> str:
        name = (
            f"softmax_{self.variant}_n{self.n_max}_i{self.in_width}f{self.in_frac}_o{self.out_width}"
            f"_m{self.mant_frac}l{self.exp_lut_bits}{self.exp_interp[0]}"
            f"_r{self.recip_frac}{self.recip_method[0]}{self.recip_lut_bits}"
            f"_c{self.exp_spec.log2e_bits}g{self.sum_guard_bits}"
        )
        if self.variant == "unified_max":
            name += f"_phi{self.max_estimate}w{self.estimate_window}".replace("-", "m")
        if self.variant == "online_pipelined":
            name += f"_L{self.lanes}"
        return name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {
            "name": self.top_name,
            "sum_width": self.sum_width,
            "buffer_bits": self.buffer_bits,
            "error_bound_lsb": error_bound_lsb(self),
        }


# --------------------------------------------------------------------------------------------------
# Precision: the analytic error bound, and the precisions derived from it


def _online_rescales(p: SoftmaxParams) -> float:
    """online: a bound on the weighted mean number of rescales after a term (sum_j e_j c_j / sum_j e_j), each
    of which multiplies the term by one more approximate exp factor: at most n_max - 1, and at most
    c0 (1 + 1/e) with c0 = ceil((ln n_max + 1) 2**in_frac), since a term followed by c growths of the max
    (each >= one input code) weighs at most exp(-c 2**-in_frac). online_pipelined: the same within a lane (a
    lane's max is at most the vector's), plus the one rescale of every lane to the vector's max at the end.
    0 for the other variants."""
    if p.variant not in ("online", "online_pipelined"):
        return 0.0
    c0 = math.ceil((math.log(p.n_max) + 1) * 2**p.in_frac)
    return float(min(p.n_max - 1, c0 * (1 + 1 / math.e))) + (p.variant == "online_pipelined")


def _exp_error(p: SoftmaxParams, mant_frac: int, lut_bits: int, log2e_frac: int) -> float:
    """The exp's relative error bound (fixmath) over every difference the softmax can present."""
    spec = ExpSpec(p.in_width + 1, p.in_frac, mant_frac, lut_bits, p.exp_interp, log2e_frac)
    return spec.max_relative_error(_difference_range(p))


def _difference_range(p: SoftmaxParams) -> float:
    """The largest |x - reference| in real units: the span of the input codes."""
    return (2**p.in_width - 1) / 2**p.in_frac


def _sum_error(p: SoftmaxParams, exp_error: float, sum_frac: int) -> tuple[float, float]:
    """(relative error of the sum from its exp terms, relative shortfall from truncating terms to sum_frac
    bits). Truncations: a term each (three_pass, unified_max: the max's own exp(0) is exact except for
    unified_max), plus a realignment (two_pass) or a rescale (online) per element; the sum is >= 1 (its
    largest term), or >= exp(-window) for unified_max's estimate."""
    n = p.n_max
    from_exp = exp_error
    if p.variant == "online":  # up to n - 1 factors compound: (1 + e)**c - 1 <= c e (1 + e)**(n - 1)
        from_exp = (1 + _online_rescales(p)) * exp_error * (1 + exp_error) ** (n - 1)
    if p.variant == "online_pipelined":  # up to n factors: n - 1 in a lane, one more combining the lanes
        from_exp = (1 + _online_rescales(p)) * exp_error * (1 + exp_error) ** n
    if p.variant == "unified_max":
        count, smallest = n, math.exp(-p.estimate_window / 2**p.in_frac) * (1 - exp_error)
    elif p.variant == "online_pipelined":  # a term and a rescale per element, and one per lane (<= n lanes)
        count, smallest = 2 * (n - 1) + n, 1 - exp_error
    else:
        count, smallest = (n - 1) * (2 if p.variant in ("two_pass", "online") else 1), 1 - exp_error
    return from_exp, count * 2.0**-sum_frac / smallest


def _relative_error(exp_error: float, recip_error: float, sum_error: tuple[float, float]) -> float:
    """The worst relative error of one output before rounding: its exp, the reciprocal, and the sum."""
    from_exp, truncation = sum_error
    high = (1 + exp_error) * (1 + recip_error) / (1 - from_exp - truncation) - 1
    low = 1 - (1 - exp_error) * (1 - recip_error) / (1 + from_exp)
    return max(high, low)


def error_bound_lsb(p: SoftmaxParams) -> float:
    """A bound on |softmax_golden(p, x) - 2**out_width softmax(x)| in output LSBs, for every vector x (float64
    softmax of the real inputs): 0.5 for the final rounding plus 2**out_width times the relative error
    (each output is at most 1.0), and at least 1 (p = 1.0 saturates to 2**out_width - 1)."""
    exp_error = _exp_error(p, p.mant_frac, p.exp_lut_bits, p.log2e_frac)
    relative = _relative_error(exp_error, p.recip_spec.max_relative_error(), _sum_error(p, exp_error, p.sum_frac))
    return max(1.0, 0.5 + 2**p.out_width * relative)


def derive_precision(p: SoftmaxParams) -> dict:
    """The internal precisions for p's out_width, n_max and input format: the cheapest (fewest table and
    datapath bits) that keep each part of the relative error within its share of 2**-(out_width + 1), so
    that `error_bound_lsb` <= 1: the exp (twice, plus once per online rescale) a half, the reciprocal a
    quarter, the sum's truncation an eighth. A precision p already sets is kept and the others are chosen
    around it. Where nothing within the widths' limits meets a share, the most accurate choice is taken, and
    `error_bound_lsb` states the bound it meets."""
    given = tuple((name, getattr(p, name)) for name in PRECISION_FIELDS if getattr(p, name) is not None)
    shape = (p.variant, p.n_max, p.in_width, p.in_frac, p.out_width, p.exp_interp, p.recip_method, p.estimate_window)
    return dict(_derive(shape, given))


@functools.lru_cache(maxsize=1024)
def _derive(shape: tuple, given_items: tuple) -> tuple:
    variant, n_max, in_width, in_frac, out_width, exp_interp, recip_method, estimate_window = shape
    p = types.SimpleNamespace(
        variant=variant,
        n_max=n_max,
        in_width=in_width,
        in_frac=in_frac,
        exp_interp=exp_interp,
        estimate_window=estimate_window,
    )
    given = dict(given_items)
    target = 2.0 ** -(out_width + 1)

    def valid(name, value, lo, hi):
        return name not in given or (is_int(value) and lo <= value <= hi)

    def choices(name, default_range):
        return [given[name]] if name in given else default_range

    def log2e_for(mant_frac):
        """The constant's rounding times the largest difference stays below an eighth of the mantissa's LSB."""
        return given.get("log2e_frac") or min(40, max(8, mant_frac + 3 + math.ceil(math.log2(_difference_range(p)))))

    # the exp: mantissa fraction bits and table index bits; cost: the table's bits, then the datapath's width
    weight = 2 + _online_rescales(p)
    best = None
    for mant_frac in choices("mant_frac", range(max(8, out_width), 31)):
        top = min(12, mant_frac - (1 if exp_interp == "linear" else 0)) if is_int(mant_frac) else 0
        for lut_bits in choices("exp_lut_bits", range(1, top + 1)):
            if not (
                is_int(mant_frac)
                and 4 <= mant_frac <= 30
                and is_int(lut_bits)
                and 1 <= lut_bits <= top
                and valid("log2e_frac", given.get("log2e_frac"), 8, 40)
            ):
                continue
            error = weight * _exp_error(p, mant_frac, lut_bits, log2e_for(mant_frac))
            cost = (1 << lut_bits) * (mant_frac + 1) * (2 if exp_interp == "linear" else 1) + 64 * mant_frac
            key = (
                error > target / 2,
                cost if error <= target / 2 else float(f"{error:.2g}"),
                cost,
                mant_frac,
                lut_bits,
            )
            best = min(best or key, key)
    mant_frac, exp_lut_bits = (best[3], best[4]) if best else (given.get("mant_frac", 16), given.get("exp_lut_bits", 6))

    # the reciprocal: fraction bits and (newton) table bits
    best = None
    for recip_frac in choices("recip_frac", range(out_width + 1, 31)):
        default_luts = range(1, min(12, recip_frac) + 1) if recip_method == "newton" and is_int(recip_frac) else [8]
        for lut_bits in choices("recip_lut_bits", default_luts):
            if not (
                is_int(recip_frac)
                and 4 <= recip_frac <= 30
                and is_int(lut_bits)
                and 1 <= lut_bits <= min(12, recip_frac)
            ):
                continue
            error = ReciprocalSpec(24, recip_frac, recip_method, lut_bits).max_relative_error()
            cost = ((1 << lut_bits) * (recip_frac + 1) if recip_method == "newton" else 0) + 64 * recip_frac
            key = (
                error > target / 4,
                cost if error <= target / 4 else float(f"{error:.2g}"),
                cost,
                recip_frac,
                lut_bits,
            )
            best = min(best or key, key)
    recip_frac, recip_lut_bits = (
        (best[3], best[4])
        if best
        else (given.get("recip_frac", max(16, out_width + 1)), given.get("recip_lut_bits", 8))
    )

    # the sum's guard bits: its truncations stay within an eighth
    guard = given.get("sum_guard_bits")
    if guard is None:
        base = mant_frac if is_int(mant_frac) else 16
        guard = next((g for g in range(17) if _sum_error(p, 0.0, base + g)[1] <= target / 8), 16)
    derived = {
        "mant_frac": mant_frac,
        "exp_lut_bits": exp_lut_bits,
        "recip_frac": recip_frac,
        "recip_lut_bits": recip_lut_bits,
        "log2e_frac": given.get("log2e_frac") or (log2e_for(mant_frac) if is_int(mant_frac) else 0),
        "sum_guard_bits": guard,
    }
    return tuple(derived.items())


# --------------------------------------------------------------------------------------------------
# Golden model


def _check_vector(p: SoftmaxParams, x) -> np.ndarray:
    x = np.asarray(x)
    require(
        x.ndim == 1 and 1 <= x.size <= p.n_max,
        "vector length",
        x.size if x.ndim == 1 else x.shape,
        f"1..n_max={p.n_max} (one vector)",
    )
    require(np.issubdtype(x.dtype, np.integer), "x dtype", str(x.dtype), "integers (input codes)")
    x = x.astype(np.int64)
    lo, hi = int_range(p.in_width, True)
    if x.min() < lo or x.max() > hi:
        require(False, "x", int(x[(x < lo) | (x > hi)][0]), f"{lo}..{hi} (signed {p.in_width}-bit)")
    return x


def needs_fallback(p: SoftmaxParams, x) -> bool:
    """unified_max: the vector's max is above the estimate or more than estimate_window below it."""
    top = int(np.max(x))
    return p.variant == "unified_max" and (top > p.max_estimate or top < p.max_estimate - p.estimate_window)


def softmax_golden_details(p: SoftmaxParams, x) -> dict:
    """Every intermediate of one vector, exactly as the hardware computes it: reference, (m, k), kk, sum,
    reciprocal (y, P), shifts, outputs."""
    x = _check_vector(p, x)
    es, mf, g = p.exp_spec, p.mant_frac, p.sum_guard_bits
    fallback = needs_fallback(p, x)
    if p.variant == "two_pass":
        m, k = exp_golden(es, x)
        total, top = int(m[0]) << g, int(k[0])
        for mi, ki in zip(m[1:].tolist(), k[1:].tolist()):
            if ki > top:
                total, top = (total >> (ki - top)) + (mi << g), ki
            else:
                total += (mi << g) >> (top - ki)
        kk = k - top
        reference = 0
    elif p.variant == "online":
        e0 = int(exp_golden(es, np.array([0]))[0][0]) << g
        previous = np.maximum.accumulate(x)[:-1]  # the running max M before each later element
        rest = x[1:]
        grows = rest > previous
        # one exp per element: exp(M - x) (the rescale factor) when x grows the max, else exp(x - M)
        factors = exp_golden(es, np.where(grows, previous - rest, rest - previous))
        total = e0
        for grew, mi, ki in zip(grows.tolist(), *(v.tolist() for v in factors)):
            if grew:
                total = ((total * mi) >> (mf - ki)) + e0
            else:
                total += (mi << g) >> -ki
        reference = int(x.max())
        m, k = exp_golden(es, x - reference)
        kk = k
    elif p.variant == "online_pipelined":
        total, lanes = _lane_sums_golden(p, x)
        reference = int(x.max())
        m, k = exp_golden(es, x - reference)
        kk = k
    else:
        reference = p.max_estimate if p.variant == "unified_max" and not fallback else int(x.max())
        m, k = exp_golden(es, x - reference)
        total = int(((m << g) >> -k).sum())
        kk = k
    assert 0 < total < 1 << p.sum_width, "the sum overflowed its width (a bug in sum_width)"
    y, msb = (int(v[0]) for v in reciprocal_golden(p.recip_spec, np.array([total])))
    shift = p.recip_frac + msb - p.out_width - g - kk
    out = scale_round_golden(m, y, shift, p.out_width)
    details = {
        "reference": reference,
        "mantissa": m,
        "exponent": k,
        "kk": kk,
        "sum": total,
        "y": y,
        "msb": msb,
        "shift": shift,
        "fallback": fallback,
        "out": out,
    }
    if p.variant == "online_pipelined":
        details["lanes"] = lanes
    return details


def _lane_sums_golden(p: SoftmaxParams, x: np.ndarray) -> tuple[int, dict]:
    """online_pipelined's sum: element i updates lane i mod L as `online` updates its one (max, sum) pair,
    every update written ((S * f) >> a) + addend: the lane's first element (f = 0, addend exp(0)); x growing
    the lane's max M_j (f, a from exp(M_j - x) = (m, k): f = m, a = mant_frac - k, addend exp(0)); else
    (f = 2**mant_frac, a = mant_frac: S itself, addend the term (m << g) >> -k of exp(x - M_j)). At the end
    each used lane (min(n, L) of them) is rescaled to the vector's max M, (S_j * m) >> (mant_frac - k) with
    (m, k) = exp(M_j - M), and the rescaled lanes are added. Each lane's rescale truncates on its own and the
    additions are exact, so the order of combination does not change the sum; the hardware takes the lanes in
    the order of their last elements (lanes of elements n - u .. n - 1)."""
    es, mf, g, count = p.exp_spec, p.mant_frac, p.sum_guard_bits, p.lanes
    n = x.size
    e0 = int(exp_golden(es, np.array([0]))[0][0]) << g
    lane_max: list[int] = [0] * count
    differences, grows = [], []
    for i, xi in enumerate(x.tolist()):
        j = i % count
        if i < count:
            lane_max[j] = xi
            differences.append(0)
            grows.append(False)
        else:
            grows.append(xi > lane_max[j])
            differences.append(lane_max[j] - xi if xi > lane_max[j] else xi - lane_max[j])
            lane_max[j] = max(lane_max[j], xi)
    mantissas, exponents = (v.tolist() for v in exp_golden(es, np.array(differences)))
    lane_sum = [0] * count
    for i, (grew, mi, ki) in enumerate(zip(grows, mantissas, exponents)):
        j = i % count
        if i < count:
            lane_sum[j] = e0
        elif grew:
            lane_sum[j] = ((lane_sum[j] * mi) >> (mf - ki)) + e0
        else:
            lane_sum[j] += (mi << g) >> -ki
        assert lane_sum[j] < 1 << p.sum_width, "a lane's sum overflowed its width (a bug in sum_width)"
    used = min(n, count)
    order = [(n - used + q) % count for q in range(used)]
    top = max(lane_max[j] for j in order)
    factors = exp_golden(es, np.array([lane_max[j] - top for j in order]))
    rescaled = [(lane_sum[j] * int(mi)) >> (mf - int(ki)) for j, mi, ki in zip(order, *factors)]
    return sum(rescaled), {
        "order": order,
        "max": [lane_max[j] for j in order],
        "sum": [lane_sum[j] for j in order],
        "rescaled": rescaled,
    }


def softmax_golden(p: SoftmaxParams, x) -> np.ndarray:
    """One vector (1..n_max input codes) -> its output codes (int64), bit-exact with the hardware."""
    return softmax_golden_details(p, x)["out"]


# --------------------------------------------------------------------------------------------------
# Cycle model


def passes_over_input(p: SoftmaxParams, fallback: bool = False) -> int:
    """Sweeps over the vector: its arrival on the stream plus buffer replays."""
    if p.variant == "three_pass" or (p.variant == "unified_max" and fallback):
        return 3
    return 2


def softmax_schedule(p: SoftmaxParams, vectors, offered: list[int]) -> tuple[list[int], list[int]]:
    """Exact handshake cycles (accepted inputs, produced outputs) with an always-ready sink, for `vectors`
    (their lengths and, for unified_max, whether they fall back) whose elements are first offered in
    cycles `offered` (non-decreasing, one per element, all vectors concatenated).

    Per vector v (bank v mod 2): element i is accepted at max(offer, previous accept + 1, load start). From
    the last accept A the drain ends at T0 = A + X_acc (three_pass / fallback: A + n + X_acc, after the sum
    pass; X_acc = `acc_delay`); the sum goes to the reciprocal at T = max(T0, D_{v-1}) (the cycle the
    previous reciprocal is done), which starts at R = T + 1 and is done at D = R + L_rec. Normalize issues
    from N = max(D, N_{v-1} + n_{v-1}) (the back end takes the banks in turn, back to back), output j at
    N + j + `output_delay`. The front end loads the next vector from max(R, E_{v-1} + 1): after the hand-off,
    into the bank whose vector (v - 1) issued its last normalize element at E_{v-1}. Every delay comes from
    the fixmath specs' latencies. online_pipelined: `_pipelined_schedule`."""
    if p.variant == "online_pipelined":
        return _pipelined_schedule(p, vectors, offered)
    acc_delay, recip = p.acc_delay, p.recip_spec.latency
    accepted, produced = [], []
    load_start = 0
    done = None  # D of the previous vector
    norm_free = 0  # the first cycle the back end can issue the next vector
    last_issue = [-1, -1]  # E of the vector before, per bank
    index = 0
    for number, vector in enumerate(vectors):
        n = len(vector)
        bank = number % 2
        load_start = max(load_start, last_issue[bank] + 1)
        for _ in range(n):
            offer = int(offered[index])
            if index and offer < int(offered[index - 1]):
                raise ValueError(f"offered[{index}]={offer} is before offered[{index - 1}]: must be non-decreasing")
            cycle = max(offer, load_start, accepted[-1] + 1 if accepted else 0)
            accepted.append(cycle)
            index += 1
        last = accepted[-1]
        drained = last + acc_delay + (n if passes_over_input(p, needs_fallback(p, vector)) == 3 else 0)
        handoff = drained if done is None else max(drained, done)
        done = handoff + 1 + recip
        first_issue = max(done, norm_free)
        produced.extend(first_issue + j + p.output_delay for j in range(n))
        norm_free = first_issue + n
        last_issue[bank] = first_issue + n - 1
        load_start = handoff + 1
    return accepted, produced


def _pipelined_schedule(p: SoftmaxParams, vectors, offered: list[int]) -> tuple[list[int], list[int]]:
    """`softmax_schedule` of online_pipelined. Accepts as above (from the load start). After the last accept
    A the front end issues the u = min(n, L) lane combinations, one per cycle from C = max(A + delta,
    H_{v-1} + 1), delta = max(1, P - u + 1) (P = LANE_PIPELINE_DEPTH: a lane is read only after its last
    element's update is written; H_{v-1} the previous hand-off: the combination of a vector starts only
    once the previous sum has gone to the reciprocal), and loads the next vector from C + u. The last
    combination is added to the sum in W = C + u - 1 + acc_delay + P - 1; the hand-off is at H = max(W + 1,
    D_{v-1}), the reciprocal is done at D = H + 1 + L_rec, and the back end is as above, over three banks
    (vector v loads into bank v mod 3 after vector v - 3's last normalize issue)."""
    acc_delay, recip, depth = p.acc_delay, p.recip_spec.latency, LANE_PIPELINE_DEPTH
    accepted, produced = [], []
    load_start = 0
    done = None
    handoff = None
    norm_free = 0
    last_issue = [-1] * p.banks
    index = 0
    for number, vector in enumerate(vectors):
        n = len(vector)
        bank = number % p.banks
        load_start = max(load_start, last_issue[bank] + 1)
        for _ in range(n):
            offer = int(offered[index])
            if index and offer < int(offered[index - 1]):
                raise ValueError(f"offered[{index}]={offer} is before offered[{index - 1}]: must be non-decreasing")
            accepted.append(max(offer, load_start, accepted[-1] + 1 if accepted else 0))
            index += 1
        used = min(n, p.lanes)
        combine = accepted[-1] + max(1, depth - used + 1)
        if handoff is not None:
            combine = max(combine, handoff + 1)
        complete = combine + used - 1 + acc_delay + depth  # the cycle after the last addition
        handoff = complete if done is None else max(complete, done)
        done = handoff + 1 + recip
        first_issue = max(done, norm_free)
        produced.extend(first_issue + j + p.output_delay for j in range(n))
        norm_free = first_issue + n
        last_issue[bank] = first_issue + n - 1
        load_start = combine + used
    return accepted, produced


def softmax_cycles(p: SoftmaxParams, n: int | None = None, fallback: bool = False) -> dict:
    """Full-rate summary for vectors of length n (default n_max), back to back: latency (first input to first
    output handshake), cycles per vector (initiation interval), elements per cycle, passes, buffer bits."""
    n = p.n_max if n is None else n
    require(is_int(n) and 1 <= n <= p.n_max, "n", n, f"1..n_max={p.n_max}")
    lo, hi = int_range(p.in_width, True)
    if p.variant == "unified_max":
        top = (
            p.max_estimate + 1
            if fallback and p.max_estimate < hi
            else (p.max_estimate - p.estimate_window - 1 if fallback else p.max_estimate)
        )
        if fallback and not lo <= top <= hi:
            require(False, "fallback", fallback, "False (no input code triggers the fallback)")
        vector = [top] * n
    else:
        vector = [0] * n
    # the steady state: the hand-offs settle after the first two vectors; the interval then repeats with a
    # period of one or two vectors (the two banks), so it is averaged over an even number of vectors
    count = 7
    accepted, produced = softmax_schedule(p, [vector] * count, [0] * (count * n))
    interval = (accepted[(count - 1) * n] - accepted[2 * n]) / (count - 3)
    if interval == int(interval):
        interval = int(interval)
    return {
        "n": n,
        "latency_cycles": produced[0] - accepted[0],
        "initiation_interval": interval,
        "total_cycles": produced[n - 1] - accepted[0] + 1,
        "elements_per_cycle": n / interval,
        "passes": passes_over_input(p, fallback),
        "buffer_bits": p.buffer_bits,
    }


# --------------------------------------------------------------------------------------------------
# Component

LOAD, SUM, DRAIN = range(3)


class Softmax(wiring.Component):
    """The softmax unit. Ports: ``inp`` (stream of {data: signed(in_width), last}), ``out`` (stream of
    {data: unsigned(out_width), last})."""

    def __init__(self, p: SoftmaxParams):
        self.p = p
        super().__init__({"inp": In(stream.Signature(p.in_layout)), "out": Out(stream.Signature(p.out_layout))})

    def elaborate(self, platform):
        if self.p.variant == "online_pipelined":
            return _OnlinePipelined(self).elaborate()
        m = Module()
        p = self.p
        v = p.variant
        es, rs, ss = p.exp_spec, p.recip_spec, p.scale_spec
        mf, g, n_max = p.mant_frac, p.sum_guard_bits, p.n_max
        x_delay = p.exp_delay

        # the front end's exp (pass 1 / sum pass) and the back end's (normalize): both run every cycle
        m.submodules.exp = exp = ExpUnit(es)
        m.submodules.norm_exp = norm_exp = ExpUnit(es)
        m.submodules.recip = recip = ReciprocalUnit(rs)
        m.submodules.scale = scale = ScaleRoundUnit(ss)
        # two banks of n_max elements: bank b at addresses b * n_max ..
        m.submodules.buffer = buffer = memory.Memory(shape=signed(p.in_width), depth=2 * n_max, init=[])
        write = buffer.write_port()
        sum_read = buffer.read_port()
        norm_read = buffer.read_port()

        def address(bank, index):
            return index + Mux(bank, n_max, 0)

        front_tag = data.StructLayout({"valid": 1, "first": 1, "load": 1, "grew": 1})
        back_tag = data.StructLayout({"valid": 1, "last": 1, "bank": 1})
        ftags = [Signal(front_tag, name=f"front_tag_s{stage}") for stage in range(p.acc_delay + 1)]
        btags = [Signal(back_tag, name=f"back_tag_s{stage}") for stage in range(x_delay + ss.latency + 1)]
        out_tag = btags[-1]
        advance = Signal()
        m.d.comb += [
            self.out.valid.eq(out_tag.valid),
            self.out.payload.data.eq(scale.result),
            self.out.payload.last.eq(out_tag.last),
            advance.eq(~self.out.valid | self.out.ready),
            exp.en.eq(advance),
            norm_exp.en.eq(advance),
            scale.en.eq(advance),
            sum_read.en.eq(advance),
            norm_read.en.eq(advance),
        ]
        with m.If(advance):
            for tags in (ftags, btags):
                for stage in range(2, len(tags)):
                    m.d.sync += tags[stage].eq(tags[stage - 1])
                m.d.sync += tags[1].eq(0)

        # per bank: busy from its load until its last normalize issue; ready from its reciprocal's result
        # until then; what normalization needs of its vector (length, reference, two_pass's K, 1/S)
        busy = Signal(2)
        ready = Signal(2)
        meta_length = _Banked(m, "length", range(n_max + 1))
        meta_reference = _Banked(m, "reference", signed(p.in_width))
        meta_top = _Banked(m, "top", signed(es.exponent_width))
        meta_y = _Banked(m, "y", unsigned(rs.frac + 1))
        meta_msb = _Banked(m, "msb", unsigned(rs.msb_width))

        # -- front end: load (pass 1), the sum pass, the drain, the hand-off to the reciprocal ----------------
        state = Signal(range(3), init=LOAD)
        write_bank = Signal()
        count = Signal(range(n_max + 1))  # elements accepted (LOAD) / issued (SUM)
        length = Signal(range(n_max + 1))
        timer = Signal(range(p.acc_delay + 1))
        running = Signal(signed(p.in_width), reset_less=True)  # the running max M
        fallback = Signal()
        total = Signal(unsigned(p.sum_width), reset_less=True)  # S or Macc
        top = Signal(signed(es.exponent_width), reset_less=True)  # two_pass: K
        x_reg = Signal(signed(p.in_width), reset_less=True)
        previous = Signal(signed(p.in_width), reset_less=True)  # online: M before this element
        recip_busy = Signal()
        recip_bank = Signal()

        payload = self.inp.payload
        accept = Signal()
        m.d.comb += [
            self.inp.ready.eq((state == LOAD) & advance & ~busy.bit_select(write_bank, 1)),
            accept.eq(self.inp.valid & self.inp.ready),
            write.addr.eq(address(write_bank, count)),
            write.data.eq(payload.data),
            write.en.eq(accept),
            sum_read.addr.eq(address(write_bank, count)),
            recip.s.eq(total),
        ]
        is_first = count == 0
        ends = payload.last | (count == n_max - 1)
        new_max = Mux(is_first | (payload.data > running), payload.data, running)
        issue = ftags[1]
        m.d.sync += recip.start.eq(0)
        with m.If(recip.done):
            m.d.sync += [recip_busy.eq(0), ready.bit_select(recip_bank, 1).eq(1)]
            meta_y.write(recip_bank, recip.y)
            meta_msb.write(recip_bank, recip.msb)
        if v == "three_pass":
            reference_out = running
        elif v == "unified_max":
            reference_out = Mux(fallback, running, p.max_estimate)
        else:
            reference_out = running
        with m.If(advance):
            with m.If(state == LOAD):  # noqa: SIM117 (an Amaranth If/Elif chain, not nested contexts)
                with m.If(accept):
                    m.d.sync += [count.eq(count + 1), running.eq(new_max), x_reg.eq(payload.data), previous.eq(running)]
                    if v != "three_pass":
                        m.d.sync += [issue.valid.eq(1), issue.first.eq(is_first), issue.load.eq(1)]
                    with m.If(ends):
                        m.d.sync += [length.eq(count + 1), count.eq(0), busy.bit_select(write_bank, 1).eq(1)]
                        goes_to_sum = Const(1) if v == "three_pass" else Const(0)
                        if v == "unified_max":
                            goes_to_sum = (new_max > p.max_estimate) | (new_max < p.max_estimate - p.estimate_window)
                            m.d.sync += fallback.eq(goes_to_sum)
                        with m.If(goes_to_sum):
                            m.d.sync += state.eq(SUM)
                        with m.Else():
                            m.d.sync += [state.eq(DRAIN), timer.eq(p.acc_delay - 1)]
            with m.Elif(state == SUM):
                m.d.sync += [issue.valid.eq(1), issue.first.eq(count == 0), count.eq(count + 1)]
                with m.If(count == length - 1):
                    m.d.sync += [state.eq(DRAIN), timer.eq(p.acc_delay - 1), count.eq(0)]
            with m.Else():
                # DRAIN: the last term reaches the sum; then the sum goes to the reciprocal once it is free
                # (a start is accepted in the cycle its previous result is done) and the bank to the back end
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(~recip_busy | recip.done):
                    m.d.sync += [
                        recip.start.eq(1),
                        recip_busy.eq(1),
                        recip_bank.eq(write_bank),
                        write_bank.eq(~write_bank),
                        state.eq(LOAD),
                    ]
                    meta_length.write(write_bank, length)
                    meta_reference.write(write_bank, reference_out)
                    meta_top.write(write_bank, top)

        # front stage 1 -> 2: x (stream register or buffer), the difference d = x - reference
        s1 = ftags[1]
        x = Mux(s1.load, x_reg, sum_read.data)
        d = Signal(signed(p.in_width + 1), reset_less=True)
        grew = Signal()
        if v == "online":
            m.d.comb += grew.eq(s1.load & (s1.first | (x_reg > previous)))
        if v == "three_pass":
            reference = running
        elif v == "two_pass":
            reference = Const(0, signed(p.in_width))
        elif v == "online":
            reference = previous
        else:
            reference = Mux(s1.load, Const(p.max_estimate, signed(p.in_width)), running)
        difference = x - reference
        if v == "online":
            # pass 1: -(|x - M_prev|): the rescale factor exp(M_prev - x) when x grows the max
            difference = Mux(s1.first, 0, Mux(grew, previous - x, x - previous))
        with m.If(advance):
            m.d.sync += [d.eq(difference), ftags[2].eq(s1), ftags[2].grew.eq(grew)]
        m.d.comb += exp.d.eq(d)

        # front stage X: the sum's pre-stage: everything that does not depend on the sum is registered (the
        # term m >> -k, shift amounts, two_pass's new exponent K), so the loop of stage X + 1 (sum register ->
        # sum register) is one shift (or multiply) and one add
        sx = ftags[x_delay]
        sa = ftags[p.acc_delay]
        mantissa, exponent = exp.mantissa, exp.exponent
        guarded = mantissa << g  # sum_frac fraction bits
        term = guarded >> (-exponent).as_unsigned()
        addend = Signal(unsigned(mf + g + 1), reset_less=True)  # added to the (shifted) sum
        acc_now = advance & sx.valid
        accumulate = advance & sa.valid
        if v == "two_pass":
            grows = ~sx.first & (exponent > top)
            amount_width = bits_for_range(0, es.exponent_range[1] - es.exponent_range[0], False)
            amount = Signal(unsigned(amount_width), reset_less=True)  # the sum's shift when K grows
            with m.If(acc_now):
                m.d.sync += [
                    amount.eq(Mux(grows, exponent - top, 0)),
                    addend.eq(Mux(sx.first | grows, guarded, guarded >> (top - exponent).as_unsigned())),
                ]
                with m.If(sx.first | grows):
                    m.d.sync += top.eq(exponent)
            with m.If(accumulate):
                m.d.sync += total.eq(Mux(sa.first, 0, total >> amount) + addend)
        elif v == "online":
            e0 = int(exp_golden(es, np.array([0]))[0][0]) << g
            factor = Signal(unsigned(mf + 1), reset_less=True)  # exp(M_prev - x) when x grows the max
            amount = Signal(unsigned(bits_for_range(0, mf - es.exponent_range[0], False)), reset_less=True)
            with m.If(acc_now):
                m.d.sync += [
                    factor.eq(mantissa),
                    amount.eq(mf - exponent),
                    addend.eq(Mux(sx.grew & ~sx.first, e0, term)),
                ]
            with m.If(accumulate):
                with m.If(sa.first):
                    m.d.sync += total.eq(addend)
                with m.Elif(sa.grew):
                    m.d.sync += total.eq(((total * factor) >> amount) + addend)
                with m.Else():
                    m.d.sync += total.eq(total + addend)
        else:
            # unified_max: the load pass with x > phi would add terms > 1; it is then discarded (fallback)
            with m.If(acc_now):
                m.d.sync += addend.eq(Mux(exponent > 0, 0, term))
            with m.If(accumulate):
                m.d.sync += total.eq(Mux(sa.first, 0, total) + addend)

        # -- back end: normalize the banks in turn, back to back ------------------------------------------
        read_bank = Signal()
        norm_count = Signal(range(n_max + 1))
        norm_length = meta_length.read(read_bank)
        # a bank is ready from its reciprocal's done cycle on (the first issue is that cycle)
        bank_ready = ready.bit_select(read_bank, 1) | (recip.done & (recip_bank == read_bank))
        m.d.comb += norm_read.addr.eq(address(read_bank, norm_count))
        with m.If(advance & bank_ready):
            m.d.sync += [
                btags[1].valid.eq(1),
                btags[1].bank.eq(read_bank),
                btags[1].last.eq(norm_count == norm_length - 1),
                norm_count.eq(norm_count + 1),
            ]
            with m.If(norm_count == norm_length - 1):
                m.d.sync += [
                    norm_count.eq(0),
                    read_bank.eq(~read_bank),
                    ready.bit_select(read_bank, 1).eq(0),
                    busy.bit_select(read_bank, 1).eq(0),
                ]

        # back stage 1 -> 2: d = x - the vector's reference; stage X: into the scale-round unit
        b1 = btags[1]
        norm_d = Signal(signed(p.in_width + 1), reset_less=True)
        norm_reference = Const(0, signed(p.in_width)) if v == "two_pass" else meta_reference.read(b1.bank)
        with m.If(advance):
            m.d.sync += [norm_d.eq(norm_read.data - norm_reference), btags[2].eq(b1)]
        m.d.comb += norm_exp.d.eq(norm_d)
        bx = btags[x_delay]
        kk = norm_exp.exponent - meta_top.read(bx.bank) if v == "two_pass" else norm_exp.exponent
        m.d.comb += [
            scale.a.eq(norm_exp.mantissa),
            scale.b.eq(meta_y.read(bx.bank)),
            scale.shift.eq(p.recip_frac - p.out_width - g + meta_msb.read(bx.bank) - kk),
        ]
        return m


class _Banked:
    """One register per buffer bank, written and read by a bank bit (two registers and a multiplexer)."""

    def __init__(self, m: Module, name: str, shape):
        self.m = m
        self.banks = [Signal(shape, name=f"{name}_{bank}", reset_less=True) for bank in range(2)]

    def write(self, bank, value) -> None:
        with self.m.If(bank):
            self.m.d.sync += self.banks[1].eq(value)
        with self.m.Else():
            self.m.d.sync += self.banks[0].eq(value)

    def read(self, bank):
        return Mux(bank, self.banks[1], self.banks[0])


class _PerBank:
    """One register per buffer bank (any number of banks), written and read by a bank index."""

    def __init__(self, m: Module, name: str, shape, banks: int):
        self.m = m
        self.banks = [Signal(shape, name=f"{name}_{bank}", reset_less=True) for bank in range(banks)]

    def write(self, bank, value) -> None:
        for index, bank_register in enumerate(self.banks):  # not a Switch: a bank count need not be a power of 2
            with self.m.If(bank == index):
                self.m.d.sync += bank_register.eq(value)

    def read(self, bank):
        return _select(self.banks, bank)


def _select(values, index):
    """values[index] as a multiplexer whose cases cover every value of the index (the list padded with its last
    element to a power of two: lint-clean for any count)."""
    values = list(values)
    values += [values[-1]] * ((1 << max(0, (len(values) - 1).bit_length())) - len(values))
    return Array(values)[index]


(COMBINE,) = range(1, 2)  # online_pipelined's front end: LOAD, then COMBINE (the lane combinations)
PIECE_BITS = 18  # the lane update's multiply in pieces of an ECP5 / xc7 DSP port


class _OnlinePipelined:
    """The online_pipelined unit: `Softmax` with L interleaved (max, sum) lanes in the front end.

    Front end. Element i (accepted in LOAD) goes to lane j = i mod L: its lane's max M_j and the vector's max M
    are updated at once; d = x - M_j (or M_j - x when x grows M_j, 0 for the lane's first element) goes
    through the exp; stages X and X + 1 register the update's factor f, shift a and addend (see
    `_lane_sums_golden`);
    then the lane's update takes LANE_PIPELINE_DEPTH stages: read S_j (an L-way multiplexer), the partial
    products of S_j * f (one DSP each), their sum in two additions, the shift by a, the add of the addend and
    the write of S_j. A lane is updated at most every L >= LANE_PIPELINE_DEPTH cycles, so its next element
    reads the written value. After the last element the front end (COMBINE) issues one combination per used
    lane into the same pipeline: d = M_j - M, f = the exp's mantissa, addend 0; its result is added to the
    vector's sum instead of written to the lane. The last one hands the sum to the reciprocal (or marks it
    pending until the reciprocal is free); the next vector loads meanwhile, and starts its own combinations
    only after that hand-off (`_pipelined_schedule` is exact).

    Back end: `Softmax`'s, over three banks, with two more registers: the buffer's output (a block RAM's
    clock-to-out) and the scale-and-round's operands (1/S and its shift, read from the bank's registers
    through a multiplexer). The output leaves through a two-entry queue, and the unit's clock enable
    (`advance`) is "the queue is not full", a register, instead of the sink's ready.

    Every register above was placed where nextpnr's critical path on ECP5 ran (bench/softmax.py)."""

    def __init__(self, top: Softmax):
        self.top = top
        self.p = top.p

    def elaborate(self):
        m = Module()
        p, top = self.p, self.top
        es, rs, ss = p.exp_spec, p.recip_spec, p.scale_spec
        mf, g, n_max, lanes, banks = p.mant_frac, p.sum_guard_bits, p.n_max, p.lanes, p.banks
        x_delay, acc_delay, depth = p.exp_delay, p.acc_delay, LANE_PIPELINE_DEPTH
        write_stage = acc_delay + depth - 1

        m.submodules.exp = exp = ExpUnit(es)
        m.submodules.norm_exp = norm_exp = ExpUnit(es)
        m.submodules.recip = recip = ReciprocalUnit(rs)
        m.submodules.scale = scale = ScaleRoundUnit(ss)
        m.submodules.buffer = buffer = memory.Memory(shape=signed(p.in_width), depth=banks * n_max, init=[])
        write = buffer.write_port()
        norm_read = buffer.read_port()

        def address(bank, index):
            return index + _select([Const(b * n_max, range(banks * n_max)) for b in range(banks)], bank)

        def next_bank(bank):
            return Mux(bank == banks - 1, 0, bank + 1)

        lane_shape = range(lanes)
        front_tag = data.StructLayout(
            {
                "valid": 1,
                "first": 1,
                "load": 1,
                "grew": 1,
                "combine": 1,
                "combine_first": 1,
                "combine_last": 1,
                "lane": lane_shape,
            }
        )
        back_tag = data.StructLayout({"valid": 1, "last": 1, "bank": range(banks)})
        ftags = [Signal(front_tag, name=f"front_tag_s{stage}") for stage in range(write_stage + 1)]
        btags = [Signal(back_tag, name=f"back_tag_s{stage}") for stage in range(p.output_delay)]
        out_tag = btags[-1]
        advance = Signal(init=1)
        # the output goes through a two-entry queue and everything advances while it is not full: `advance`
        # comes from a register, not from the sink's ready through the whole unit's enables (the stall takes
        # effect a cycle later; the second entry holds the result that moves meanwhile)
        queue = [Signal(p.out_layout, name=f"out_queue_{entry}") for entry in range(2)]
        queued = Signal(range(3))
        push = advance & out_tag.valid
        pop = top.out.valid & top.out.ready
        with m.If(pop):
            m.d.sync += queue[0].eq(queue[1])
        result = Signal(p.out_layout)
        m.d.comb += [result.data.eq(scale.result), result.last.eq(out_tag.last)]
        with m.If(push):
            with m.If(queued - pop == 0):
                m.d.sync += queue[0].eq(result)
            with m.Else():
                m.d.sync += queue[1].eq(result)
        # `advance` is the flip-flop "not full" itself (no gate between it and its ~2000 enables)
        queued_next = (queued + push - pop)[:2]
        m.d.sync += [queued.eq(queued_next), advance.eq(queued_next != 2)]
        m.d.comb += [
            top.out.valid.eq(queued != 0),
            top.out.payload.eq(queue[0]),
            exp.en.eq(advance),
            norm_exp.en.eq(advance),
            scale.en.eq(advance),
            norm_read.en.eq(advance),
        ]
        with m.If(advance):
            for tags in (ftags, btags):
                for stage in range(2, len(tags)):
                    m.d.sync += tags[stage].eq(tags[stage - 1])
                m.d.sync += tags[1].eq(0)

        # one flag per bank, padded to a power of two (a bit_select's cases then cover every bank index)
        busy = Signal(1 << (banks - 1).bit_length())
        ready = Signal(1 << (banks - 1).bit_length())
        meta_length = _PerBank(m, "length", range(n_max + 1), banks)
        meta_reference = _PerBank(m, "reference", signed(p.in_width), banks)
        meta_y = _PerBank(m, "y", unsigned(rs.frac + 1), banks)
        meta_msb = _PerBank(m, "msb", unsigned(rs.msb_width), banks)

        # -- front end: load (one lane update per element), then the lane combinations --------------------
        state = Signal(range(2), init=LOAD)
        write_bank = Signal(range(banks))
        count = Signal(range(n_max + 1))
        length = Signal(range(n_max + 1))
        lane = Signal(lane_shape)  # the lane of the next element
        wrapped = Signal()  # every lane has had an element (count >= L)
        running = Signal(signed(p.in_width), reset_less=True)  # the vector's max M
        lane_max = [Signal(signed(p.in_width), name=f"lane_max_{j}", reset_less=True) for j in range(lanes)]
        lane_sum = [Signal(unsigned(p.sum_width), name=f"lane_sum_{j}", reset_less=True) for j in range(lanes)]
        x_reg = Signal(signed(p.in_width), reset_less=True)  # x, or a combination's M_j
        previous = Signal(signed(p.in_width), reset_less=True)  # M_j before x, or a combination's M
        timer = Signal(range(depth + 1))
        used = Signal(range(lanes + 1))  # lanes to combine: min(n, L)
        combined = Signal(range(lanes + 1))  # combinations issued
        combine_lane = Signal(lane_shape)
        outstanding = Signal()  # a sum is combining or waiting for the reciprocal
        pending = Signal()  # a complete sum waits for the reciprocal
        total = Signal(unsigned(p.sum_width), reset_less=True)
        tail_length = Signal(range(n_max + 1), reset_less=True)
        tail_reference = Signal(signed(p.in_width), reset_less=True)
        tail_bank = Signal(range(banks), reset_less=True)
        recip_busy = Signal()
        recip_bank = Signal(range(banks))

        payload = top.inp.payload
        accept = Signal()
        m.d.comb += [
            top.inp.ready.eq((state == LOAD) & advance & ~busy.bit_select(write_bank, 1)),
            accept.eq(top.inp.valid & top.inp.ready),
            write.addr.eq(address(write_bank, count)),
            write.data.eq(payload.data),
            write.en.eq(accept),
            recip.s.eq(total),
        ]
        ends = payload.last | (count == n_max - 1)
        lane_last = lane == lanes - 1
        following = Mux(lane_last, 0, lane + 1)
        its_max = _select(lane_max, lane)
        issue = ftags[1]
        with m.If(advance):
            with m.If(state == LOAD):
                with m.If(accept):
                    m.d.sync += [
                        count.eq(count + 1),
                        x_reg.eq(payload.data),
                        previous.eq(its_max),
                        running.eq(Mux((count == 0) | (payload.data > running), payload.data, running)),
                        issue.valid.eq(1),
                        issue.load.eq(1),
                        issue.first.eq(~wrapped),
                        issue.lane.eq(lane),
                        lane.eq(following),
                        wrapped.eq(wrapped | lane_last),
                    ]
                    with m.If(ends):
                        # u = min(n, L) combinations from the lane of element n - u; the first waits until the
                        # last update of its lane is written: max(0, P - u) cycles after the first chance
                        lanes_used = Mux(wrapped | lane_last, lanes, count + 1)
                        m.d.sync += [
                            length.eq(count + 1),
                            count.eq(0),
                            busy.bit_select(write_bank, 1).eq(1),
                            state.eq(COMBINE),
                            used.eq(lanes_used),
                            combined.eq(0),
                            combine_lane.eq(Mux(wrapped | lane_last, following, 0)),
                            timer.eq(Mux(lanes_used >= depth, 0, depth - lanes_used)),
                            lane.eq(0),
                            wrapped.eq(0),
                        ]
            with m.Else():
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif((combined != 0) | ~outstanding):
                    first_combination = combined == 0
                    last_combination = combined == used - 1
                    m.d.sync += [
                        issue.valid.eq(1),
                        issue.combine.eq(1),
                        issue.combine_first.eq(first_combination),
                        issue.combine_last.eq(last_combination),
                        issue.lane.eq(combine_lane),
                        x_reg.eq(_select(lane_max, combine_lane)),
                        previous.eq(running),
                        combined.eq(combined + 1),
                        combine_lane.eq(Mux(combine_lane == lanes - 1, 0, combine_lane + 1)),
                    ]
                    with m.If(first_combination):
                        m.d.sync += [
                            outstanding.eq(1),
                            tail_length.eq(length),
                            tail_reference.eq(running),
                            tail_bank.eq(write_bank),
                        ]
                    with m.If(last_combination):
                        m.d.sync += [state.eq(LOAD), write_bank.eq(next_bank(write_bank))]

        # front stage 1 -> 2: d = x - M_j, M_j - x when x grows M_j, 0 for a lane's first element; M_j - M for
        # a combination
        s1 = ftags[1]
        d = Signal(signed(p.in_width + 1), reset_less=True)
        grew = s1.load & ~s1.first & (x_reg > previous)
        # the lane's max is written here, a cycle after the accept and its read (`previous`), off the input's
        # handshake path: the lane's next element is accepted L cycles later, a combination reads it later still
        for j in range(lanes):
            with m.If(advance & s1.load & (s1.lane == j) & (s1.first | grew)):
                m.d.sync += lane_max[j].eq(x_reg)
        with m.If(advance):
            m.d.sync += [
                d.eq(Mux(s1.first, 0, Mux(grew, previous - x_reg, x_reg - previous))),
                ftags[2].eq(s1),
                ftags[2].grew.eq(grew),
            ]
        m.d.comb += exp.d.eq(d)

        # stage X: (m, k) registered with -k and mant_frac - k (every d here is <= 0, so k <= 0); X + 1: the
        # update's factor f, shift a and addend (everything that does not depend on the lane's sum)
        sy = ftags[x_delay + 1]
        amount_width = bits_for_range(0, mf - es.exponent_range[0], False)
        mantissa = Signal(unsigned(mf + 1), reset_less=True)
        negated = Signal(unsigned(amount_width), reset_less=True)
        rescale_amount = Signal(unsigned(amount_width), reset_less=True)
        with m.If(advance):
            m.d.sync += [
                mantissa.eq(exp.mantissa),
                negated.eq((-exp.exponent).as_unsigned()),
                rescale_amount.eq(mf - exp.exponent),
            ]
        e0 = int(exp_golden(es, np.array([0]))[0][0]) << g
        rescale = sy.grew | sy.combine
        factor = Signal(unsigned(mf + 1), reset_less=True)
        amount = Signal(unsigned(amount_width), reset_less=True)
        addend = Signal(unsigned(mf + g + 1), reset_less=True)
        with m.If(advance):
            m.d.sync += [
                factor.eq(Mux(sy.first, 0, Mux(rescale, mantissa, 1 << mf))),
                amount.eq(Mux(rescale, rescale_amount, mf)),
                addend.eq(Mux(sy.combine, 0, Mux(sy.first | sy.grew, e0, (mantissa << g) >> negated))),
            ]

        # the lane update, LANE_PIPELINE_DEPTH stages from acc_delay: each stage's values are registered with
        # advance and carried beside the tags
        def carry(value, stage, name):
            register = Signal.like(value, name=f"{name}_s{stage}", reset_less=True)
            with m.If(advance):
                m.d.sync += register.eq(value)
            return register

        sa = ftags[acc_delay]
        operand = carry(_select(lane_sum, sa.lane), acc_delay + 1, "operand")
        factor1 = carry(factor, acc_delay + 1, "factor")
        amount1 = carry(amount, acc_delay + 1, "amount")
        addend1 = carry(addend, acc_delay + 1, "addend")
        # stage acc + 1: the partial products, one DSP each
        operand_pieces = [(operand[low : low + PIECE_BITS], low) for low in range(0, len(operand), PIECE_BITS)]
        factor_pieces = [(factor1[low : low + PIECE_BITS], low) for low in range(0, len(factor1), PIECE_BITS)]
        rows = []
        for a_piece, a_low in operand_pieces:
            row = [
                (carry(a_piece * b_piece, acc_delay + 2, f"partial_{a_low}_{b_low}"), b_low)
                for b_piece, b_low in factor_pieces
            ]
            rows.append((row, a_low))
        amount2, addend2 = carry(amount1, acc_delay + 2, "amount"), carry(addend1, acc_delay + 2, "addend")
        # stage acc + 2: each operand piece's row of partial products added; acc + 3: the rows added
        product_width = len(operand) + len(factor1)
        row_sums = [
            (carry(sum(part << low for part, low in row)[:product_width], acc_delay + 3, f"row_{a_low}"), a_low)
            for row, a_low in rows
        ]
        amount3, addend3 = carry(amount2, acc_delay + 3, "amount"), carry(addend2, acc_delay + 3, "addend")
        product = carry(sum(part << low for part, low in row_sums)[:product_width], acc_delay + 4, "product")
        amount4, addend4 = carry(amount3, acc_delay + 4, "amount"), carry(addend3, acc_delay + 4, "addend")
        # stage acc + 4: the shift; acc + 5 (write_stage): the add, into the lane or (a combination) the sum
        shifted = carry((product >> amount4)[: p.sum_width], acc_delay + 5, "shifted")
        addend5 = carry(addend4, acc_delay + 5, "addend")
        # which lane is written, decoded a stage early (a one-hot register: each lane's enable is one gate)
        s4 = ftags[acc_delay + 4]
        lane_writes = carry(
            Cat(s4.valid & ~s4.combine & (s4.lane == j) for j in range(lanes)), acc_delay + 5, "lane_writes"
        )
        assert write_stage == acc_delay + 5
        sw = ftags[write_stage]
        with m.If(advance & sw.valid & sw.combine):
            m.d.sync += total.eq(Mux(sw.combine_first, 0, total) + shifted)
        for j in range(lanes):
            with m.If(advance & lane_writes[j]):
                m.d.sync += lane_sum[j].eq(shifted + addend5)

        # the hand-off: the last combination's sum to the reciprocal (it samples `total` in the start cycle)
        completes = advance & sw.valid & sw.combine & sw.combine_last
        m.d.sync += recip.start.eq(0)
        with m.If(recip.done):
            m.d.sync += [recip_busy.eq(0), ready.bit_select(recip_bank, 1).eq(1)]
            meta_y.write(recip_bank, recip.y)
            meta_msb.write(recip_bank, recip.msb)
        # (from a register: the hand-off's enables stay off the output's back-pressure path)
        with m.If(completes):
            m.d.sync += pending.eq(1)
        with m.If(pending & (~recip_busy | recip.done)):
            m.d.sync += [
                recip.start.eq(1),
                recip_busy.eq(1),
                recip_bank.eq(tail_bank),
                pending.eq(0),
                outstanding.eq(0),
            ]
            meta_length.write(tail_bank, tail_length)
            meta_reference.write(tail_bank, tail_reference)

        # -- back end: normalize the banks in turn, back to back ------------------------------------------
        read_bank = Signal(range(banks))
        norm_count = Signal(range(n_max + 1))
        norm_length = meta_length.read(read_bank)
        bank_ready = ready.bit_select(read_bank, 1) | (recip.done & (recip_bank == read_bank))
        m.d.comb += norm_read.addr.eq(address(read_bank, norm_count))
        with m.If(advance & bank_ready):
            m.d.sync += [
                btags[1].valid.eq(1),
                btags[1].bank.eq(read_bank),
                btags[1].last.eq(norm_count == norm_length - 1),
                norm_count.eq(norm_count + 1),
            ]
            with m.If(norm_count == norm_length - 1):
                m.d.sync += [
                    norm_count.eq(0),
                    read_bank.eq(next_bank(read_bank)),
                    ready.bit_select(read_bank, 1).eq(0),
                    busy.bit_select(read_bank, 1).eq(0),
                ]

        # stage 1 -> 2: the buffer's output registered (a block RAM's clock-to-out is half a cycle at 100 MHz);
        # 2 -> 3: d = x - the vector's reference
        b2 = btags[2]
        norm_x = Signal(signed(p.in_width), reset_less=True)
        norm_d = Signal(signed(p.in_width + 1), reset_less=True)
        with m.If(advance):
            m.d.sync += [norm_x.eq(norm_read.data), norm_d.eq(norm_x - meta_reference.read(b2.bank))]
        m.d.comb += norm_exp.d.eq(norm_d)
        # stage X + 1: the scale-and-round's operands registered (1/S from the bank's registers, its shift)
        bx = btags[x_delay + 1]
        scale_a = Signal(unsigned(mf + 1), reset_less=True)
        scale_b = Signal(unsigned(rs.frac + 1), reset_less=True)
        scale_shift = Signal(unsigned(ss.shift_width), reset_less=True)
        with m.If(advance):
            m.d.sync += [
                scale_a.eq(norm_exp.mantissa),
                scale_b.eq(meta_y.read(bx.bank)),
                scale_shift.eq(p.recip_frac - p.out_width - g + meta_msb.read(bx.bank) - norm_exp.exponent),
            ]
        m.d.comb += [scale.a.eq(scale_a), scale.b.eq(scale_b), scale.shift.eq(scale_shift)]
        return m


register(
    Block(
        name="softmax",
        summary="streaming fixed-point softmax (three_pass, two_pass, online, unified_max, online_pipelined), run-time "
        "length",
        params=SoftmaxParams,
        component=Softmax,
        golden=softmax_golden,
        cycles=softmax_cycles,
        testbench="hardwire.sim.tb_softmax",
        generator_version=GENERATOR_VERSION,
        error_bound=error_bound_lsb,
        error_reference="float64 torch.softmax",
    )
)
