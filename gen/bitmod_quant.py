"""BitMoD's weight datatypes and the per-group mixture-of-datatype quantizer (golden model, NumPy).

Every datatype is a table from a sign-magnitude code (sign = the code's MSB, magnitude index = the low bits) to
a value on an integer grid. The grids are chosen so that all values are integers: INT and FP3 values are
themselves; FP4 (E2M1) values are doubled (E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 -> 0, 1, 2, 3, 4, 6, 8,
12). A group's real weight is grid value x group scale, so the factor 2 is part of the scale.

The code 1 << (bits - 1) ("negative zero") is redundant in sign-magnitude. INT and plain FP types decode it as
0. As in BitMoD (HPCA 2025), the FP variants repurpose it as one special value, either for extra resolution
(ER: a value between the two largest magnitudes) or extra asymmetry/range (EA: a value beyond the largest),
on the positive or the negative side:

    type          bits  grid magnitudes (code low bits 0..)     code 1<<(bits-1)   grid unit
    int3          3     0 1 2 3                                  0                  1
    fp3           3     0 1 2 4                  (E2M0)          0                  1
    fp3_er_pos    3     as fp3                                   +3                 1
    fp3_er_neg    3     as fp3                                   -3                 1
    fp3_ea_pos    3     as fp3                                   +6                 1
    fp3_ea_neg    3     as fp3                                   -6                 1
    int4          4     0 1 2 3 4 5 6 7                          0                  1
    fp4           4     0 1 2 3 4 6 8 12         (E2M1 x 2)      0                  1/2
    fp4_er_pos    4     as fp4                                   +10 (E2M1 +5)      1/2
    fp4_er_neg    4     as fp4                                   -10 (E2M1 -5)      1/2
    fp4_ea_pos    4     as fp4                                   +16 (E2M1 +8)      1/2
    fp4_ea_neg    4     as fp4                                   -16 (E2M1 -8)      1/2

The type id is the row's index in this table (4 bits in hardware).

Scale format (what the hardware multiplies exactly): per group an unsigned ``scale_bits``-bit integer mantissa
m and a ``scale_exp_bits``-bit exponent e; per output row (channel) an integer ``base``. The group's scale is
m * 2**(e + base). The PE computes the integer sum_g psum_g * m_g * 2**e_g; the row's real output is that
integer * 2**base. ``base`` is chosen so that the row's largest possible scale (max|w| of the row / 3, the
smallest max|grid value| of any type) uses the top exponent; smaller scales use smaller e (m then keeps
``scale_bits`` significant bits) down to e = 0, below which m loses bits.

Quantizing a group with a type: scale = max|w| / max|grid value| (BitMoD's rule), rounded to the format
above (round half to even), then every weight goes to the nearest grid value * scale (ties go to the smaller
value). The mixture picks per group the type with the least squared error (ties: the first in the list).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardwire.params import require

# name -> (bits, magnitudes by magnitude index, value of the negative-zero code)
_TABLE = (
    ("int3", 3, (0, 1, 2, 3), 0),
    ("fp3", 3, (0, 1, 2, 4), 0),
    ("fp3_er_pos", 3, (0, 1, 2, 4), 3),
    ("fp3_er_neg", 3, (0, 1, 2, 4), -3),
    ("fp3_ea_pos", 3, (0, 1, 2, 4), 6),
    ("fp3_ea_neg", 3, (0, 1, 2, 4), -6),
    ("int4", 4, (0, 1, 2, 3, 4, 5, 6, 7), 0),
    ("fp4", 4, (0, 1, 2, 3, 4, 6, 8, 12), 0),
    ("fp4_er_pos", 4, (0, 1, 2, 3, 4, 6, 8, 12), 10),
    ("fp4_er_neg", 4, (0, 1, 2, 3, 4, 6, 8, 12), -10),
    ("fp4_ea_pos", 4, (0, 1, 2, 3, 4, 6, 8, 12), 16),
    ("fp4_ea_neg", 4, (0, 1, 2, 3, 4, 6, 8, 12), -16),
)

CODE_BITS = 4  # every code travels in a 4-bit field (3-bit types use the low 3 bits)
TYPE_ID_BITS = 4


@dataclass(frozen=True)
class Datatype:
    """One weight datatype: `values[code]` is the grid value of each code."""

    id: int
    name: str
    bits: int
    values: tuple[int, ...]

    @property
    def max_abs(self) -> int:
        return max(abs(v) for v in self.values)

    @property
    def terms(self) -> int:
        """Signed power-of-two terms the PE spends on every weight of this type (the most any value needs)."""
        return max(len(signed_digits(v)) for v in self.values)


def _build(type_id: int, name: str, bits: int, magnitudes, special: int) -> Datatype:
    half = 1 << (bits - 1)
    values = [m for m in magnitudes] + [special] + [-m for m in magnitudes[1:]]
    assert len(values) == 2 * half
    return Datatype(type_id, name, bits, tuple(values))


DATATYPES: tuple[Datatype, ...] = tuple(_build(i, *row) for i, row in enumerate(_TABLE))
BY_NAME: dict[str, Datatype] = {d.name: d for d in DATATYPES}

# Named sets for the quantizer. BitMoD's paper mixes the four FP variants with special values; the "+int"
# sets add the plain integer type of the same width as a fifth choice.
MIXTURES: dict[str, tuple[str, ...]] = {
    "int3": ("int3",),
    "fp3": ("fp3",),
    "int4": ("int4",),
    "fp4": ("fp4",),
    "bitmod3": ("fp3_er_pos", "fp3_er_neg", "fp3_ea_pos", "fp3_ea_neg"),
    "bitmod4": ("fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"),
    "bitmod3+int": ("int3", "fp3_er_pos", "fp3_er_neg", "fp3_ea_pos", "fp3_ea_neg"),
    "bitmod4+int": ("int4", "fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"),
    "int3+fp3": ("int3", "fp3"),
    "int4+fp4": ("int4", "fp4"),
} | {d.name: (d.name,) for d in DATATYPES}


def signed_digits(value: int) -> list[tuple[int, int]]:
    """`value` as its non-adjacent form: the fewest signed powers of two, [(sign +1/-1, shift), ...], the
    largest first. 0 -> []. E.g. 12 -> [(+1, 4), (-1, 2)] (16 - 4), 7 -> [(+1, 3), (-1, 0)]."""
    digits = []
    v, shift = abs(int(value)), 0
    while v:
        if v & 1:
            d = 2 - (v & 3)  # +1 if v = 1 mod 4, -1 if v = 3 mod 4
            digits.append((d, shift))
            v -= d
        v >>= 1
        shift += 1
    sign = -1 if value < 0 else 1
    return [(sign * d, s) for d, s in reversed(digits)]


def max_shift() -> int:
    return max(s for d in DATATYPES for v in d.values for _, s in signed_digits(v))


def max_terms() -> int:
    return max(d.terms for d in DATATYPES)


def resolve_types(dtypes) -> tuple[Datatype, ...]:
    """A mixture name ("bitmod4"), a comma-separated list ("int4,fp4") or a sequence of type names."""
    if isinstance(dtypes, str):
        names = MIXTURES.get(dtypes) or tuple(n.strip() for n in dtypes.split(",") if n.strip())
    else:
        names = tuple(dtypes)
    require(
        len(names) > 0 and all(n in BY_NAME for n in names),
        "dtypes",
        dtypes,
        f"a mixture ({', '.join(MIXTURES)}) or type names from {', '.join(BY_NAME)}",
    )
    return tuple(BY_NAME[n] for n in names)


def decode(codes, type_ids) -> np.ndarray:
    """Grid values of `codes` (any shape) under per-element type ids (broadcast). Rejects codes or ids out of
    range (a 3-bit type's codes must be < 8)."""
    codes = np.asarray(codes, dtype=np.int64)
    type_ids = np.broadcast_to(np.asarray(type_ids, dtype=np.int64), codes.shape)
    require(
        type_ids.size == 0 or (type_ids.min() >= 0 and type_ids.max() < len(DATATYPES)),
        "type id",
        int(type_ids.max()) if type_ids.size else 0,
        f"0..{len(DATATYPES) - 1}",
    )
    bits = np.array([d.bits for d in DATATYPES])[type_ids]
    bad = (codes < 0) | (codes >= (1 << bits))
    if bad.any():
        require(False, "weight code", int(codes[bad][0]), "0..2**bits - 1 of its datatype")
    table = np.zeros((len(DATATYPES), 1 << CODE_BITS), dtype=np.int64)
    for d in DATATYPES:
        table[d.id, : len(d.values)] = d.values
    return table[type_ids, codes]


# --------------------------------------------------------------------------------------------------
# Scale format


@dataclass(frozen=True)
class ScaleFormat:
    """Group scale = m * 2**(e + base): m unsigned `mantissa_bits`, e in 0..2**exponent_bits - 1."""

    mantissa_bits: int = 8
    exponent_bits: int = 3

    @property
    def e_max(self) -> int:
        return (1 << self.exponent_bits) - 1

    @property
    def m_max(self) -> int:
        return (1 << self.mantissa_bits) - 1

    def base_for(self, largest_scale: np.ndarray) -> np.ndarray:
        """Per row: the base that puts the row's largest scale at the top exponent with a full mantissa."""
        s = np.where(largest_scale > 0, largest_scale, 1.0)
        return np.floor(np.log2(s)).astype(np.int64) - (self.mantissa_bits - 1) - self.e_max

    def round(self, scale: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m, e) nearest to `scale` (half to even) with base `base` (broadcast); scale 0 -> (0, 0)."""
        scale = np.asarray(scale, dtype=np.float64)
        base = np.broadcast_to(base, scale.shape)
        positive = scale > 0
        safe = np.where(positive, scale, 1.0)
        e = np.floor(np.log2(safe)).astype(np.int64) - (self.mantissa_bits - 1) - base
        e = np.clip(e, 0, self.e_max)
        m = np.rint(np.ldexp(safe, -(e + base))).astype(np.int64)
        carry = m > self.m_max  # rounded up to 2**mantissa_bits: next exponent
        bump = carry & (e < self.e_max)
        m = np.where(bump, m >> 1, m)
        e = np.where(bump, e + 1, e)
        m = np.minimum(m, self.m_max)
        return np.where(positive, m, 0), np.where(positive, e, 0)

    def value(self, m, e, base) -> np.ndarray:
        return np.ldexp(np.asarray(m, dtype=np.float64), np.asarray(e, dtype=np.int64) + np.asarray(base))


# --------------------------------------------------------------------------------------------------
# Quantizer


@dataclass
class QuantizedWeights:
    """W (N, K) quantized in groups of `group_size` along K (padded with zeros to a whole number of groups).

    codes (N, Kp) 0..15, type_ids (N, G), scale_m (N, G), scale_e (N, G), base (N,); dequantized weight =
    decode(code, type) * scale_m * 2**(scale_e + base)."""

    codes: np.ndarray
    type_ids: np.ndarray
    scale_m: np.ndarray
    scale_e: np.ndarray
    base: np.ndarray
    group_size: int
    k: int  # the unpadded K
    fmt: ScaleFormat

    @property
    def grid(self) -> np.ndarray:
        """(N, Kp) integer grid values."""
        return decode(self.codes, np.repeat(self.type_ids, self.group_size, axis=1))

    def dequantize(self, padded: bool = False) -> np.ndarray:
        """Float64 weights, exact (every value is a small integer times a power of two)."""
        scale = self.fmt.value(self.scale_m, self.scale_e, self.base[:, None])
        w = self.grid * np.repeat(scale, self.group_size, axis=1)
        return w if padded else w[:, : self.k]


def _nearest(x: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    """Code of the nearest value to each x (ties to the smaller value); the first code of a repeated value."""
    distinct = sorted(set(values))
    code_of = {v: values.index(v) for v in distinct}
    mids = (np.array(distinct[1:], dtype=np.float64) + np.array(distinct[:-1], dtype=np.float64)) / 2
    index = np.searchsorted(mids, x, side="left")
    return np.array([code_of[v] for v in distinct], dtype=np.int64)[index]


def quantize(w, dtypes="bitmod4", group_size: int = 128, fmt: ScaleFormat = ScaleFormat()) -> QuantizedWeights:
    """Quantize W (N, K) per group of `group_size` along K, choosing per group the type of `dtypes` (see
    `resolve_types`) with the least squared error, scales in `fmt`."""
    w = np.asarray(w, dtype=np.float64)
    require(w.ndim == 2 and w.size > 0, "weights shape", w.shape, "(N, K) with N, K >= 1")
    require(bool(np.all(np.isfinite(w))), "weights", "non-finite values", "finite numbers")
    require(isinstance(group_size, int) and group_size >= 1, "group_size", group_size, ">= 1")
    types = resolve_types(dtypes)
    n, k = w.shape
    groups = -(-k // group_size)
    padded = np.zeros((n, groups * group_size))
    padded[:, :k] = w
    x = padded.reshape(n, groups, group_size)
    absmax = np.abs(x).max(axis=2)  # (N, G)
    # the base depends on the row only (not on the candidate types), so that every type sees the same scales
    # and the mixture's error per group is exactly the least of the single types' errors
    base = fmt.base_for(absmax.max(axis=1) / min(t.max_abs for t in DATATYPES))

    best_err = np.full((n, groups), np.inf)
    codes = np.zeros((n, groups, group_size), dtype=np.int64)
    type_ids = np.zeros((n, groups), dtype=np.int64)
    scale_m = np.zeros((n, groups), dtype=np.int64)
    scale_e = np.zeros((n, groups), dtype=np.int64)
    for t in types:
        m, e = fmt.round(absmax / t.max_abs, base[:, None])
        scale = fmt.value(m, e, base[:, None])
        safe = np.where(scale > 0, scale, 1.0)[:, :, None]
        c = _nearest(x / safe, t.values)
        c = np.where(scale[:, :, None] > 0, c, 0)
        err = ((np.array(t.values)[c] * scale[:, :, None] - x) ** 2).sum(axis=2)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        codes = np.where(better[:, :, None], c, codes)
        type_ids = np.where(better, t.id, type_ids)
        scale_m = np.where(better, m, scale_m)
        scale_e = np.where(better, e, scale_e)
    return QuantizedWeights(codes.reshape(n, groups * group_size), type_ids, scale_m, scale_e, base, group_size, k, fmt)


def relative_mse(y_quantized, y_reference) -> float:
    """||Y_q - Y||^2 / ||Y||^2."""
    y_quantized = np.asarray(y_quantized, dtype=np.float64)
    y_reference = np.asarray(y_reference, dtype=np.float64)
    return float(((y_quantized - y_reference) ** 2).sum() / max((y_reference**2).sum(), 1e-300))
