"""Shared fixed-point arithmetic for softmax and attention: exp, reciprocal, scale-and-round.

Each operation comes twice, side by side: a NumPy golden function that is the exact integer specification
(vectorized; int64, or Python-int object arrays when a width needs more than 62 bits) and an Amaranth
component that computes the same bits, pipelined with a stated latency.

Number formats (value = integer * 2**-frac):

* exp: ``exp(d * 2**-in_frac) ~= mantissa * 2**(exponent - mant_frac)`` with ``mantissa`` in
  [2**mant_frac, 2**(mant_frac + 1)) (1.0 <= m < 2.0) and ``exponent`` a signed integer (base-2
  decomposition: t = d * log2(e) in fixed point, exponent = floor(t), 2**frac(t) from a table).
* reciprocal: for an unsigned integer s >= 1, ``1 / s ~= y * 2**-(recip_frac + msb)`` with ``msb`` the
  position of the leading one of s and ``y`` an unsigned (recip_frac + 1)-bit integer ~= 2**recip_frac / a,
  a = s / 2**msb in [1, 2).
* scale-and-round: ``min(round_half_up(a * b / 2**shift), 2**out_width - 1)``.

Pipelines with a clock enable (`ExpUnit`, `ScaleRoundUnit`): every register advances only in cycles where
``en`` is high, so the result for the operand presented in an enabled cycle appears after `latency` enabled
cycles, whatever the stalls in between; their outputs are 0 after reset. The reciprocal (`ReciprocalUnit`) is
started by a pulse and signals ``done`` `latency` cycles later (no enable: it is used once per vector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hardwire.params import bits_for_range, int_range, is_int, require

EXP_INTERPOLATIONS = ("none", "linear")
EXP_PIECE_BITS = 18  # ExpSpec.product_stages = 2: the log2(e) constant in pieces of an ECP5 / xc7 DSP port
RECIPROCAL_METHODS = ("newton", "divider")


def _as_ints(values, bits: int) -> np.ndarray:
    """`values` as an int64 array, or as an array of Python ints when `bits` (the widest intermediate) > 62."""
    array = np.asarray(values)
    if bits > 62:
        return np.vectorize(int, otypes=[object])(array) if array.size else array.astype(object)
    return array.astype(np.int64)


def _shift_right(values, amounts):
    """Floor shift right by non-negative per-element amounts (works on int64 and object arrays)."""
    values, amounts = np.broadcast_arrays(values, amounts)
    if values.dtype == object:
        return np.array([int(v) >> int(a) for v, a in zip(values.ravel(), amounts.ravel())], dtype=object).reshape(
            values.shape
        )
    return values >> np.minimum(amounts, 63)


# --------------------------------------------------------------------------------------------------
# exp via base-2 decomposition


@dataclass(frozen=True)
class ExpSpec:
    """exp(d * 2**-in_frac) of a signed in_width-bit d, as a (mantissa, exponent) pair.

    lut_bits: fraction bits of t that index the 2**f table; interp: "none" (table at the interval midpoints,
    2**lut_bits entries) or "linear" (chords between 2**lut_bits + 1 table points, the remaining fraction
    bits interpolate). mant_frac: fraction bits of the mantissa and of t. log2e_frac: fraction bits of the
    log2(e) constant (0 = mant_frac + 2). product_stages: 1 (each multiply in one cycle) or 2 (for Fmax: the
    products d * log2e and, linear, the chord's delta * weight split into DSP-sized pieces registered in one
    stage and added in the next; one more cycle per product, the same bits).
    """

    in_width: int = 9
    in_frac: int = 4
    mant_frac: int = 16
    lut_bits: int = 6
    interp: str = "linear"
    log2e_frac: int = 0
    product_stages: int = 1

    def __post_init__(self):
        require(is_int(self.in_width) and 2 <= self.in_width <= 32, "in_width", self.in_width, "2..32")
        require(is_int(self.in_frac) and 0 <= self.in_frac <= 31, "in_frac", self.in_frac, "0..31")
        require(is_int(self.mant_frac) and 4 <= self.mant_frac <= 30, "mant_frac", self.mant_frac, "4..30")
        require(self.interp in EXP_INTERPOLATIONS, "interp", self.interp, " or ".join(EXP_INTERPOLATIONS))
        top = self.mant_frac - (1 if self.interp == "linear" else 0)
        require(
            is_int(self.lut_bits) and 1 <= self.lut_bits <= min(12, top),
            "lut_bits",
            self.lut_bits,
            f"1..{min(12, top)} (below mant_frac={self.mant_frac} for linear interpolation)",
        )
        require(
            is_int(self.log2e_frac) and (self.log2e_frac == 0 or 8 <= self.log2e_frac <= 40),
            "log2e_frac",
            self.log2e_frac,
            "0 (auto: mant_frac + 2) or 8..40",
        )
        require(self.product_stages in (1, 2), "product_stages", self.product_stages, "1 or 2")

    @property
    def log2e_bits(self) -> int:
        """Fraction bits of the log2(e) constant actually used."""
        return self.log2e_frac or self.mant_frac + 2

    @property
    def log2e(self) -> int:
        """round(log2(e) * 2**log2e_bits)."""
        return round(math.log2(math.e) * (1 << self.log2e_bits))

    @property
    def t_shift(self) -> int:
        """t = (d * log2e) >> t_shift keeps mant_frac fraction bits (t_shift < 0: a left shift)."""
        return self.in_frac + self.log2e_bits - self.mant_frac

    @property
    def interp_bits(self) -> int:
        """Fraction bits of t below the table index (the interpolation weight in linear mode)."""
        return self.mant_frac - self.lut_bits

    @property
    def table(self) -> list[int]:
        """The 2**f table, mant_frac fraction bits: midpoints (none) or 2**lut_bits + 1 chord ends (linear)."""
        steps = 1 << self.lut_bits
        scale = 1 << self.mant_frac
        if self.interp == "none":
            return [round(2.0 ** ((j + 0.5) / steps) * scale) for j in range(steps)]
        return [round(2.0 ** (j / steps) * scale) for j in range(steps + 1)]

    @property
    def exponent_range(self) -> tuple[int, int]:
        d_lo, d_hi = int_range(self.in_width, True)
        return tuple(int(v) for v in exp_golden(self, np.array([d_lo, d_hi]))[1])

    @property
    def exponent_width(self) -> int:
        return bits_for_range(*self.exponent_range, True)

    @property
    def product_width(self) -> int:
        """Signed width of d * log2e."""
        return self.in_width + self.log2e.bit_length()

    @property
    def latency(self) -> int:
        """Enabled cycles from d to (mantissa, exponent): product (one or two stages), table, (linear)
        interpolation."""
        products = 1 if self.interp == "none" else 2
        return (2 if self.interp == "none" else 3) + (self.product_stages - 1) * products

    def max_relative_error(self, d_abs_max: float) -> float:
        """A bound on |(m * 2**(e - mant_frac)) / exp(d) - 1| for |d| <= d_abs_max (real units): the table
        (midpoint: ln2 * h / 2 + rounding; chord: ln2**2 h**2 / 8 + rounding), the log2(e) constant's
        rounding times |d|, the floor of t (2**-mant_frac) and the interpolation's floor."""
        h = 2.0**-self.lut_bits
        ulp = 2.0**-self.mant_frac
        table = math.log(2) * h / 2 if self.interp == "none" else math.log(2) ** 2 * h * h / 8
        t_error = d_abs_max * 2.0 ** -(self.log2e_bits + 1) + ulp
        return (1 + table + 2 * ulp) * math.exp(math.log(2) * t_error) - 1 + 1e-12


def exp_golden(spec: ExpSpec, d) -> tuple[np.ndarray, np.ndarray]:
    """(mantissa, exponent) of exp(d * 2**-in_frac), exactly as `ExpUnit` computes them.

    t = floor(d * log2e * 2**-t_shift) (mant_frac fraction bits), exponent = t >> mant_frac (floor),
    f = t mod 2**mant_frac, idx = f >> interp_bits, r = f mod 2**interp_bits;
    none: mantissa = table[idx]; linear: mantissa = table[idx] + ((table[idx+1] - table[idx]) * r >> interp_bits).
    """
    d = _as_ints(d, spec.product_width + 1)
    lo, hi = int_range(spec.in_width, True)
    if d.size and (d.min() < lo or d.max() > hi):
        require(False, "d", int(d[(d < lo) | (d > hi)].ravel()[0]), f"{lo}..{hi} (signed {spec.in_width}-bit)")
    product = d * spec.log2e
    t = product >> spec.t_shift if spec.t_shift >= 0 else product << -spec.t_shift
    exponent = t >> spec.mant_frac
    f = t & ((1 << spec.mant_frac) - 1)
    index = f >> spec.interp_bits
    table = np.array(spec.table, dtype=np.int64)
    if spec.interp == "none":
        mantissa = table[index.astype(np.int64)]
    else:
        r = f & ((1 << spec.interp_bits) - 1)
        base = table[index.astype(np.int64)]
        delta = table[index.astype(np.int64) + 1] - base
        mantissa = base + ((delta * r) >> spec.interp_bits)
    return np.asarray(mantissa, dtype=np.int64), np.asarray(exponent, dtype=np.int64)


class ExpUnit(wiring.Component):
    """exp(d * 2**-in_frac) as (mantissa, exponent), `spec.latency` enabled cycles after d (see `exp_golden`).

    Ports: en (In 1), d (In signed(in_width)), mantissa (Out unsigned(mant_frac + 1)),
    exponent (Out signed(exponent_width)). The outputs are registers.
    """

    def __init__(self, spec: ExpSpec):
        self.spec = spec
        super().__init__(
            {
                "en": In(1),
                "d": In(signed(spec.in_width)),
                "mantissa": Out(unsigned(spec.mant_frac + 1)),
                "exponent": Out(signed(spec.exponent_width)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        s = self.spec
        # stage 1: the product with the log2(e) constant (a DSP multiply); only the bits read later are
        # registered: t = product >> t_shift, from the table index up without interpolation, narrowed to
        # the exponent's range (exact: every exponent fits exponent_width)
        dropped = 0 if s.interp == "linear" else s.interp_bits
        if s.product_stages == 1:
            product = self.d * Const(s.log2e, unsigned(s.log2e.bit_length()))
        else:
            product = self._split_product(m)
        shift = s.t_shift + dropped
        t_comb = product >> shift if shift >= 0 else product << -shift
        t_high = Signal(signed(s.mant_frac - dropped + s.exponent_width), reset_less=True)
        with m.If(self.en):
            m.d.sync += t_high.eq(t_comb)
        fraction_high = t_high[: s.mant_frac - dropped]  # t mod 2**mant_frac, from bit `dropped` up
        index = fraction_high[s.interp_bits - dropped :]
        table = s.table
        width = s.mant_frac + 1
        exponent = Signal(signed(s.exponent_width), reset_less=s.interp == "linear")
        # stage 2: the table
        # the registers that drive the outputs reset to 0 (the other stages need no reset)
        base = Signal(unsigned(width), reset_less=s.interp == "linear")
        with m.If(self.en):
            m.d.sync += [
                exponent.eq(t_high >> (s.mant_frac - dropped)),
                base.eq(Array(Const(v, width) for v in table[: 1 << s.lut_bits])[index]),
            ]
        if s.interp == "none":
            m.d.comb += [self.mantissa.eq(base), self.exponent.eq(exponent)]
            return m
        deltas = [table[j + 1] - table[j] for j in range(1 << s.lut_bits)]
        delta_width = max(deltas).bit_length()
        delta = Signal(unsigned(delta_width), reset_less=True)
        weight = Signal(unsigned(max(1, s.interp_bits)), reset_less=True)
        with m.If(self.en):
            m.d.sync += [
                delta.eq(Array(Const(v, delta_width) for v in deltas)[index]),
                weight.eq(fraction_high[: s.interp_bits]),
            ]
        # stage 3: the chord
        mantissa = Signal(unsigned(width))
        exponent3 = Signal(signed(s.exponent_width))
        if s.product_stages == 2:
            chord = piecewise_product(m, self.en, delta, weight, "chord")
            base, exponent = registered(m, self.en, base, "base"), registered(m, self.en, exponent, "exponent")
        else:
            chord = delta * weight
        with m.If(self.en):
            m.d.sync += [mantissa.eq(base + (chord >> s.interp_bits)), exponent3.eq(exponent)]
        m.d.comb += [self.mantissa.eq(mantissa), self.exponent.eq(exponent3)]
        return m

    def _split_product(self, m):
        """d * log2e over two enabled stages: d times each 18-bit piece of the constant (one DSP each), registered;
        the caller's stage adds the pieces back (the same product)."""
        s = self.spec
        pieces = []
        for low in range(0, s.log2e.bit_length(), EXP_PIECE_BITS):
            value = (s.log2e >> low) & ((1 << EXP_PIECE_BITS) - 1)
            piece = Signal(signed(s.in_width + value.bit_length() + 1), name=f"product_piece_{low}", reset_less=True)
            with m.If(self.en):
                m.d.sync += piece.eq(self.d * Const(value, unsigned(max(1, value.bit_length()))))
            pieces.append((piece, low))
        return sum(piece << low for piece, low in pieces)


def registered(m: Module, en, value, name: str) -> Signal:
    """`value` one enabled cycle later."""
    register = Signal.like(value, name=f"{name}_delayed", reset_less=True)
    with m.If(en):
        m.d.sync += register.eq(value)
    return register


def piecewise_product(m: Module, en, a, b, name: str):
    """a * b of two unsigned values over two enabled stages: the products of their 18-bit pieces (one DSP
    each) are registered, and the returned expression (their shifted sum, the same product) is the next
    stage's."""
    terms = []
    for a_low in range(0, len(a), EXP_PIECE_BITS):
        for b_low in range(0, len(b), EXP_PIECE_BITS):
            part = a[a_low : a_low + EXP_PIECE_BITS] * b[b_low : b_low + EXP_PIECE_BITS]
            terms.append(registered(m, en, part, f"{name}_part_{a_low}_{b_low}") << (a_low + b_low))
    return sum(terms)[: len(a) + len(b)]


# --------------------------------------------------------------------------------------------------
# reciprocal


@dataclass(frozen=True)
class ReciprocalSpec:
    """1 / s of an unsigned in_width-bit s >= 1 as (y, msb): 1/s ~= y * 2**-(frac + msb).

    method: "newton" (table of 2**lut_bits midpoint reciprocals + one Newton-Raphson step, pipelined) or
    "divider" (restoring division, exact floor(2**(2 frac) / a_q), one quotient bit per cycle).
    """

    in_width: int = 24
    frac: int = 16
    method: str = "newton"
    lut_bits: int = 8

    def __post_init__(self):
        require(is_int(self.in_width) and 1 <= self.in_width <= 56, "in_width", self.in_width, "1..56")
        require(is_int(self.frac) and 4 <= self.frac <= 30, "frac", self.frac, "4..30")
        require(self.method in RECIPROCAL_METHODS, "method", self.method, " or ".join(RECIPROCAL_METHODS))
        require(
            is_int(self.lut_bits) and 1 <= self.lut_bits <= min(12, self.frac),
            "lut_bits",
            self.lut_bits,
            f"1..{min(12, self.frac)}",
        )

    @property
    def msb_width(self) -> int:
        return max(1, (self.in_width - 1).bit_length())

    @property
    def table(self) -> list[int]:
        """y0 for the 2**lut_bits intervals of a in [1, 2): round(2**frac / midpoint)."""
        steps = 1 << self.lut_bits
        return [round((1 << self.frac) / (1 + (j + 0.5) / steps)) for j in range(steps)]

    @property
    def latency(self) -> int:
        """Cycles from the start pulse (s sampled) to done (y, msb valid): leading one, normalize, then newton:
        table read, table register, a * y0, 2 - a * y0, y0 * (2 - a * y0); divider: frac + 1 quotient bits,
        then the result register."""
        return 7 if self.method == "newton" else self.frac + 4

    def max_relative_error(self) -> float:
        """A bound on |y * 2**-(frac + msb) * s - 1| (s >= 1): truncating s to frac + 1 bits, then newton:
        the table's error squared plus three truncations; divider: one quotient ulp."""
        ulp = 2.0**-self.frac
        trunc = ulp
        if self.method == "divider":
            return trunc + 2 * ulp
        e0 = 0.5 / (1 << self.lut_bits) + ulp  # the table entry at the interval midpoint, rounded
        return trunc + e0 * e0 + 4 * ulp


def reciprocal_golden(spec: ReciprocalSpec, s) -> tuple[np.ndarray, np.ndarray]:
    """(y, msb) exactly as `ReciprocalUnit` computes them; s = 0 gives (2**frac, 0) (1/1).

    msb = floor(log2 s); a_q = s normalized to frac + 1 bits (s << (frac - msb), or s >> (msb - frac),
    truncating), a_q in [2**frac, 2**(frac + 1)).
    newton: y0 = table[(a_q >> (frac - lut_bits)) mod 2**lut_bits]; t = (2**(2 frac + 1) - a_q * y0) >> frac;
    y = (y0 * t) >> frac.   divider: y = floor(2**(2 frac) / a_q).
    """
    s = _as_ints(s, spec.in_width + 1)
    lo, hi = int_range(spec.in_width, False)
    if s.size and (s.min() < lo or s.max() > hi):
        require(False, "s", int(s[(s < lo) | (s > hi)].ravel()[0]), f"0..{hi} (unsigned {spec.in_width}-bit)")
    f = spec.frac
    safe = np.maximum(s, 1)
    msb = np.zeros(s.shape, dtype=np.int64)
    for bit in range(spec.in_width):
        msb = np.where(safe >> bit != 0, bit, msb)
    a = np.where(msb <= f, safe << np.maximum(f - msb, 0), safe >> np.maximum(msb - f, 0))
    if spec.method == "divider":
        y = (1 << (2 * f)) // a
    else:
        y0 = np.array(spec.table, dtype=np.int64)[(a >> (f - spec.lut_bits)) & ((1 << spec.lut_bits) - 1)]
        t = ((1 << (2 * f + 1)) - a * y0) >> f
        y = (y0 * t) >> f
    return np.asarray(y, dtype=np.int64), msb


class ReciprocalUnit(wiring.Component):
    """1 / s as (y, msb) (see `reciprocal_golden`): s is sampled in the cycle `start` is high, `done` is high
    for one cycle `spec.latency` cycles later, y and msb hold until the next result. newton accepts a start
    every cycle; divider a start only `latency` cycles after the previous one.

    Ports: start (In 1), s (In unsigned(in_width)), done (Out 1), y (Out unsigned(frac + 1)),
    msb (Out unsigned(msb_width)).
    """

    def __init__(self, spec: ReciprocalSpec):
        self.spec = spec
        super().__init__(
            {
                "start": In(1),
                "s": In(unsigned(spec.in_width)),
                "done": Out(1),
                "y": Out(unsigned(spec.frac + 1)),
                "msb": Out(unsigned(spec.msb_width)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        sp = self.spec
        f = sp.frac
        # stage 1: the leading one (a priority encoder); stage 2: normalization (a barrel shift)
        msb_comb = Signal(unsigned(sp.msb_width))
        for bit in range(sp.in_width):
            with m.If(self.s[bit]):
                m.d.comb += msb_comb.eq(bit)
        s0 = Signal(unsigned(sp.in_width), reset_less=True)
        msb0 = Signal(unsigned(sp.msb_width), reset_less=True)
        left = Signal(reset_less=True)  # msb <= frac: shift left by frac - msb
        valid0 = Signal()
        m.d.sync += [
            s0.eq(Mux(self.s == 0, 1, self.s)),
            msb0.eq(msb_comb),
            left.eq(msb_comb <= f),
            valid0.eq(self.start),
        ]
        amount = max(sp.msb_width, f.bit_length())
        a = Signal(unsigned(f + 1), reset_less=True)
        msb1 = Signal(unsigned(sp.msb_width), reset_less=True)
        valid1 = Signal()
        m.d.sync += [
            a.eq(Mux(left, s0 << (f - msb0)[:amount], s0 >> (msb0 - f)[:amount])),
            msb1.eq(msb0),
            valid1.eq(valid0),
        ]
        if sp.method == "newton":
            self._newton(m, a, msb1, valid1)
        else:
            self._divider(m, a, msb1, valid1)
        return m

    def _newton(self, m, a, msb1, valid1):
        sp = self.spec
        f = sp.frac
        table = Array(Const(v, f + 1) for v in sp.table)
        # the table read (a block RAM when large), then a plain register: the RAM's slow clock-to-out and the
        # multiplier would not fit one cycle together
        y0_read = Signal(unsigned(f + 1), reset_less=True)
        a2 = Signal(unsigned(f + 1), reset_less=True)
        m.d.sync += [y0_read.eq(table[a[f - sp.lut_bits : f]]), a2.eq(a)]
        y0 = Signal(unsigned(f + 1), reset_less=True)
        a3 = Signal(unsigned(f + 1), reset_less=True)
        m.d.sync += [y0.eq(y0_read), a3.eq(a2)]
        product = Signal(unsigned(2 * f + 2), reset_less=True)
        y0_3 = Signal(unsigned(f + 1), reset_less=True)
        m.d.sync += [product.eq(a3 * y0), y0_3.eq(y0)]
        correction = Signal(unsigned(f + 2), reset_less=True)
        y0_4 = Signal(unsigned(f + 1), reset_less=True)
        m.d.sync += [correction.eq((Const(1 << (2 * f + 1), 2 * f + 2) - product)[f:]), y0_4.eq(y0_3)]
        y = Signal(unsigned(f + 1), reset_less=True)
        m.d.sync += y.eq((y0_4 * correction) >> f)
        # msb and valid ride along the five stages
        msb, valid = msb1, valid1
        for stage in range(3, 8):
            msb_next = Signal(msb1.shape(), name=f"msb_s{stage}", reset_less=True)
            valid_next = Signal(name=f"valid_s{stage}")
            m.d.sync += [msb_next.eq(msb), valid_next.eq(valid)]
            msb, valid = msb_next, valid_next
        m.d.comb += [self.y.eq(y), self.msb.eq(msb), self.done.eq(valid)]

    def _divider(self, m, a, msb1, valid1):
        sp = self.spec
        f = sp.frac
        # restoring division of 2**(2f) by a: quotient bit j = f .. 0 compares the remainder with a << j
        remainder = Signal(unsigned(2 * f + 2), reset_less=True)
        divisor = Signal(unsigned(2 * f + 2), reset_less=True)
        quotient = Signal(unsigned(f + 1), reset_less=True)
        msb = Signal(msb1.shape(), reset_less=True)
        steps = Signal(range(f + 2))
        busy = Signal()
        y = Signal(unsigned(f + 1), reset_less=True)
        msb_out = Signal(msb1.shape(), reset_less=True)
        done = Signal()
        m.d.sync += done.eq(0)
        with m.If(valid1):
            m.d.sync += [
                remainder.eq(1 << (2 * f)),
                divisor.eq(a << f),
                quotient.eq(0),
                msb.eq(msb1),
                steps.eq(f + 1),
                busy.eq(1),
            ]
        with m.Elif(busy):
            fits = remainder >= divisor
            m.d.sync += [
                remainder.eq(Mux(fits, remainder - divisor, remainder)),
                divisor.eq(divisor >> 1),
                quotient.eq((quotient << 1) | fits),
                steps.eq(steps - 1),
            ]
            with m.If(steps == 1):
                m.d.sync += [busy.eq(0), done.eq(1), y.eq((quotient << 1) | fits), msb_out.eq(msb)]
        m.d.comb += [self.y.eq(y), self.msb.eq(msb_out), self.done.eq(done)]


# --------------------------------------------------------------------------------------------------
# scale, round, saturate


def scale_round_golden(a, b, shift, out_width: int) -> np.ndarray:
    """min(floor((a * b + 2**(shift - 1)) / 2**shift), 2**out_width - 1) for unsigned a, b and shift >= 1,
    computed as (((a * b) >> (shift - 1)) + 1) >> 1 (the same number), as `ScaleRoundUnit` does."""
    a, b, shift = np.broadcast_arrays(*(np.asarray(v, dtype=np.int64) for v in (a, b, shift)))
    if shift.size and shift.min() < 1:
        require(False, "shift", int(shift.min()), ">= 1")
    bits = int(np.max(a, initial=1)).bit_length() + int(np.max(b, initial=1)).bit_length()
    product = _as_ints(a, bits) * _as_ints(b, bits)
    rounded = (_shift_right(product, shift - 1) + 1) >> 1
    return np.minimum(rounded, (1 << out_width) - 1).astype(np.int64)


@dataclass(frozen=True)
class ScaleRoundSpec:
    """Unsigned a (a_width) times unsigned b (b_width), right-shifted by shift (1..2**shift_width - 1),
    rounded half up and saturated to out_width bits."""

    a_width: int = 17
    b_width: int = 17
    shift_width: int = 6
    out_width: int = 8
    product_stages: int = 1  # 2: the product over two stages (`piecewise_product`), for Fmax

    def __post_init__(self):
        for name in ("a_width", "b_width"):
            value = getattr(self, name)
            require(is_int(value) and 1 <= value <= 32, name, value, "1..32")
        require(is_int(self.shift_width) and 1 <= self.shift_width <= 12, "shift_width", self.shift_width, "1..12")
        require(is_int(self.out_width) and 1 <= self.out_width <= 32, "out_width", self.out_width, "1..32")
        require(self.product_stages in (1, 2), "product_stages", self.product_stages, "1 or 2")

    @property
    def latency(self) -> int:
        """Enabled cycles: the product (and shift - 1; over product_stages), then the shift by shift - 1, then
        round + saturate."""
        return 2 + self.product_stages


class ScaleRoundUnit(wiring.Component):
    """`scale_round_golden` in three enabled cycles (multiply, barrel shift, round + saturate: each stage one
    operation, for Fmax). Ports: en, a, b, shift (In), result (Out unsigned(out_width))."""

    def __init__(self, spec: ScaleRoundSpec):
        self.spec = spec
        super().__init__(
            {
                "en": In(1),
                "a": In(unsigned(spec.a_width)),
                "b": In(unsigned(spec.b_width)),
                "shift": In(unsigned(spec.shift_width)),
                "result": Out(unsigned(spec.out_width)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        sp = self.spec
        width = sp.a_width + sp.b_width
        # stage 1: the product, and shift - 1 (shift >= 1; 0 wraps, outside the specification)
        product = Signal(unsigned(width), reset_less=True)
        shift_less = Signal(unsigned(sp.shift_width), reset_less=True)
        if sp.product_stages == 2:
            a_times_b = piecewise_product(m, self.en, self.a, self.b, "product")
            shift_less_early = registered(m, self.en, (self.shift - 1)[: sp.shift_width], "shift_less")
        else:
            a_times_b, shift_less_early = self.a * self.b, (self.shift - 1)[: sp.shift_width]
        with m.If(self.en):
            m.d.sync += [product.eq(a_times_b), shift_less.eq(shift_less_early)]
        # stage 2: h = product >> (shift - 1), which keeps the rounding bit as its LSB
        half = Signal(unsigned(width), reset_less=True)
        with m.If(self.en):
            m.d.sync += half.eq(product >> shift_less)
        # stage 3: round half up ((h + 1) >> 1) and saturate. (h + 1) >> 1 > 2**out_width - 1 exactly when
        # h >= 2**(out_width + 1) - 1: a bit above out_width + 1 set, or the low out_width + 1 bits all ones
        # (then their increment would carry out); otherwise the increment of the low bits is the result.
        low_width = min(width, sp.out_width + 1)
        low = half[:low_width]
        saturated = low == (1 << (sp.out_width + 1)) - 1
        if width > low_width:
            saturated |= half[low_width:].any()
        top = (1 << sp.out_width) - 1
        result = Signal(unsigned(sp.out_width))  # 0 after reset
        with m.If(self.en):
            m.d.sync += result.eq(Mux(saturated, top, (low + 1)[1:]))
        m.d.comb += self.result.eq(result)
        return m


def fill_unset_precisions(params, fields: tuple[str, ...], derive) -> None:
    """Set every field of the frozen `params` left at None to `derive(params)[field]`, and record in `_given`
    the fields the user set: softmax and attention derive their internal precisions this way, once, so that
    equal hardware compares equal whichever way its precisions were given."""
    unset = [name for name in fields if getattr(params, name) is None]
    object.__setattr__(params, "_given", tuple(name for name in fields if name not in unset))
    if unset:
        derived = derive(params)
        for name in unset:
            object.__setattr__(params, name, derived[name])
