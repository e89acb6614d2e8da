"""The shared fixed-point arithmetic: golden functions against float64 (error bounds over the whole input range,
exhaustive where small) and the Amaranth units against the golden functions, bit for bit, in Amaranth's
simulator (with random clock-enable stalls)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from amaranth.sim import Simulator
from hardwire.gen.fixmath import (
    ExpSpec,
    ExpUnit,
    ReciprocalSpec,
    ReciprocalUnit,
    ScaleRoundSpec,
    ScaleRoundUnit,
    exp_golden,
    reciprocal_golden,
    scale_round_golden,
)

from hardwire.errors import ParameterError
from hardwire.params import int_range

EXP_SPECS = [
    ExpSpec(),
    ExpSpec(in_width=9, in_frac=4, mant_frac=16, lut_bits=8, interp="none"),
    ExpSpec(in_width=6, in_frac=2, mant_frac=8, lut_bits=3),
    ExpSpec(in_width=12, in_frac=8, mant_frac=20, lut_bits=7),
    ExpSpec(in_width=17, in_frac=8, mant_frac=12, lut_bits=5, interp="none", log2e_frac=20),
    ExpSpec(in_width=8, in_frac=0, mant_frac=12, lut_bits=4, log2e_frac=8),  # t_shift < 0: t = product << 4
    # the product in two registered stages (online_pipelined): a 31-bit constant in two DSP pieces; table-only
    ExpSpec(in_width=9, in_frac=4, mant_frac=23, lut_bits=6, log2e_frac=30, product_stages=2),
    ExpSpec(in_width=9, in_frac=4, mant_frac=16, lut_bits=8, interp="none", product_stages=2),
]


@pytest.mark.parametrize("spec", EXP_SPECS, ids=repr)
def test_exp_golden_is_within_its_error_bound_for_every_input(spec):
    lo, hi = int_range(spec.in_width, True)
    d = np.arange(lo, hi + 1)
    mantissa, exponent = exp_golden(spec, d)
    assert mantissa.min() >= 1 << spec.mant_frac and mantissa.max() < 2 << spec.mant_frac
    value = mantissa * np.exp2(exponent.astype(float) - spec.mant_frac)
    real = d / 2.0**spec.in_frac
    error = np.abs(value / np.exp(real) - 1)
    assert error.max() <= spec.max_relative_error(float(np.abs(real).max()))
    # exact where it should be: exp(0) = 1 in linear mode (a table end point)
    if spec.interp == "linear":
        assert exp_golden(spec, np.array([0]))[0][0] == 1 << spec.mant_frac
    assert (exponent.min(), exponent.max()) == spec.exponent_range


def test_exp_bound_is_tight_enough_to_matter():
    """The linear table with 6 index bits is better than 2**-15 over |d| <= 16; a 3-bit midpoint table is not."""
    fine = ExpSpec()
    coarse = ExpSpec(lut_bits=3, interp="none")
    d = np.arange(-256, 256)
    for spec, ok in ((fine, True), (coarse, False)):
        m, e = exp_golden(spec, d)
        err = np.abs(m * np.exp2(e - spec.mant_frac.__float__()) / np.exp(d / 16) - 1).max()
        assert (err < 2**-15) == ok, err


def test_exp_golden_rejects_out_of_range_and_works_on_object_arrays():
    spec = ExpSpec(in_width=6, in_frac=2, mant_frac=8, lut_bits=3)
    with pytest.raises(ParameterError, match="d=32"):
        exp_golden(spec, np.array([0, 32]))
    d = np.arange(-32, 32)
    a = exp_golden(spec, d)
    b = exp_golden(spec, d.astype(object))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("bad", [{"lut_bits": 16}, {"interp": "cubic"}, {"in_width": 1}, {"mant_frac": 40}])
def test_exp_spec_names_the_bad_parameter(bad):
    with pytest.raises(ParameterError, match=next(iter(bad))):
        ExpSpec(**bad)


RECIPROCAL_SPECS = [
    ReciprocalSpec(in_width=12, frac=16, method="newton", lut_bits=8),
    ReciprocalSpec(in_width=12, frac=16, method="divider"),
    ReciprocalSpec(in_width=24, frac=12, method="newton", lut_bits=6),
    ReciprocalSpec(in_width=6, frac=20, method="newton", lut_bits=10),
    ReciprocalSpec(in_width=50, frac=23, method="newton", lut_bits=9),  # a 16-bit softmax's sum at n = 4096
]


@pytest.mark.parametrize("spec", RECIPROCAL_SPECS, ids=repr)
def test_reciprocal_golden_is_within_its_error_bound(spec):
    hi = (1 << spec.in_width) - 1
    if spec.in_width <= 16:
        s = np.arange(1, hi + 1)  # exhaustive
    else:
        rng = np.random.default_rng(3)
        s = np.concatenate([np.arange(1, 1 << 14), rng.integers(1, hi + 1, 200_000), [hi, 1 << (spec.in_width - 1)]])
    y, msb = reciprocal_golden(spec, s)
    assert np.array_equal(msb, [int(v).bit_length() - 1 for v in s])  # exact (float log2 rounds near 2**50)
    error = np.abs(y * np.exp2(-(spec.frac + msb).astype(float)) * s - 1)
    assert error.max() <= spec.max_relative_error()
    assert y.max() <= 1 << spec.frac
    if spec.method == "divider":
        a = np.where(msb <= spec.frac, s << np.maximum(spec.frac - msb, 0), s >> np.maximum(msb - spec.frac, 0))
        assert np.array_equal(y, (1 << 2 * spec.frac) // a)


def test_scale_round_golden_is_round_half_up_and_saturates():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 1 << 17, 20_000)
    b = rng.integers(0, 1 << 17, 20_000)
    shift = rng.integers(1, 40, 20_000)
    got = scale_round_golden(a, b, shift, 12)
    exact = [min(math.floor(int(x) * int(y) / 2 ** int(s) + 0.5), 4095) for x, y, s in zip(a, b, shift)]
    assert got.tolist() == exact
    assert scale_round_golden([3], [1], [1], 8).tolist() == [2]  # 1.5 rounds up
    assert scale_round_golden([1], [1], [1], 8).tolist() == [1]  # 0.5 rounds up
    assert scale_round_golden([1 << 20], [1 << 20], [2], 8).tolist() == [255]


# --- the Amaranth units, bit-exact against the golden functions ----------------------------------


def _run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def _exp_unit_outputs(spec: ExpSpec, d, rng) -> tuple[np.ndarray, np.ndarray]:
    """Run `ExpUnit(spec)` on d with en high in ~70% of the cycles; the (mantissa, exponent) of every input,
    read `latency` enabled cycles after it was presented. Also checks that outputs hold while en is low."""
    dut = ExpUnit(spec)
    seen = []

    async def testbench(ctx):
        index = enabled = 0
        while len(seen) < len(d):
            en = int(rng.random() < 0.7)
            ctx.set(dut.en, en)
            ctx.set(dut.d, int(d[min(index, len(d) - 1)]))
            before = (ctx.get(dut.mantissa), ctx.get(dut.exponent))
            await ctx.tick()
            if not en:
                assert (ctx.get(dut.mantissa), ctx.get(dut.exponent)) == before, "moved without enable"
                continue
            index += 1
            enabled += 1
            if enabled >= spec.latency:
                seen.append((ctx.get(dut.mantissa), ctx.get(dut.exponent)))

    _run(dut, testbench)
    return np.array([s[0] for s in seen]), np.array([s[1] for s in seen])


@pytest.mark.parametrize("spec", EXP_SPECS, ids=repr)
def test_exp_unit_matches_golden_bit_exactly_under_enable_stalls(spec):
    lo, hi = int_range(spec.in_width, True)
    rng = np.random.default_rng(1)
    d = np.arange(lo, hi + 1) if spec.in_width <= 9 else rng.integers(lo, hi + 1, 600)
    d = np.concatenate([d, [lo, hi, 0, -1]])
    m_golden, e_golden = exp_golden(spec, d)
    got_m, got_e = _exp_unit_outputs(spec, d, rng)
    assert len(got_m) == len(d)
    assert np.array_equal(got_m, m_golden), np.argwhere(got_m != m_golden)[:3]
    assert np.array_equal(got_e, e_golden)


@pytest.mark.parametrize("spec", RECIPROCAL_SPECS, ids=repr)
def test_reciprocal_unit_matches_golden_with_its_stated_latency(spec):
    rng = np.random.default_rng(2)
    hi = (1 << spec.in_width) - 1
    s = np.concatenate([[1, hi, 1 << (spec.in_width - 1), 2, 3], rng.integers(1, hi + 1, 40)])
    y_golden, msb_golden = reciprocal_golden(spec, s)
    dut = ReciprocalUnit(spec)
    got = []

    async def testbench(ctx):
        for value in s:
            ctx.set(dut.start, 1)
            ctx.set(dut.s, int(value))
            await ctx.tick()
            ctx.set(dut.start, 0)
            for cycle in range(1, spec.latency + 2):
                if ctx.get(dut.done):
                    got.append((cycle, ctx.get(dut.y), ctx.get(dut.msb)))
                    break
                await ctx.tick()

    _run(dut, testbench)
    assert [g[0] for g in got] == [spec.latency] * len(s)
    assert [g[1] for g in got] == y_golden.tolist()
    assert [g[2] for g in got] == msb_golden.tolist()


def test_newton_reciprocal_accepts_a_start_every_cycle():
    spec = RECIPROCAL_SPECS[0]
    s = np.arange(1, 60) * 37
    y_golden, _ = reciprocal_golden(spec, s)
    dut = ReciprocalUnit(spec)
    got = []

    async def testbench(ctx):
        for cycle in range(len(s) + spec.latency + 1):
            ctx.set(dut.start, int(cycle < len(s)))
            ctx.set(dut.s, int(s[min(cycle, len(s) - 1)]))
            await ctx.tick()
            if ctx.get(dut.done):
                got.append(ctx.get(dut.y))

    _run(dut, testbench)
    assert got == y_golden.tolist()


SCALE_SPECS = [
    ScaleRoundSpec(a_width=17, b_width=17, shift_width=6, out_width=8),
    ScaleRoundSpec(a_width=4, b_width=3, shift_width=3, out_width=8),  # product narrower than out_width + 1
    ScaleRoundSpec(a_width=20, b_width=17, shift_width=6, out_width=20),  # attention's lanes: wide output
    ScaleRoundSpec(a_width=23, b_width=24, shift_width=9, out_width=16),  # shifts far past the product
    ScaleRoundSpec(a_width=26, b_width=16, shift_width=6, out_width=8, product_stages=2),  # online_pipelined
]


@pytest.mark.parametrize("spec", SCALE_SPECS, ids=repr)
def test_scale_round_unit_matches_golden(spec):
    rng = np.random.default_rng(4)
    n = 500
    a_max, b_max, s_max = (1 << spec.a_width) - 1, (1 << spec.b_width) - 1, (1 << spec.shift_width) - 1
    small = rng.integers(0, 1 << (spec.out_width + 2), n)  # products near the saturation point
    a = np.concatenate([rng.integers(0, a_max + 1, n), np.minimum(small, a_max), [a_max, 0, a_max >> 1, a_max]])
    b = np.concatenate([rng.integers(0, b_max + 1, n), np.full(n, 1), [b_max, 5, b_max >> 1, 1]])
    shift = np.concatenate([rng.integers(1, s_max + 1, n), np.full(n, 1), [1, 1, min(25, s_max), s_max]])
    golden = scale_round_golden(a, b, shift, spec.out_width)
    dut = ScaleRoundUnit(spec)
    got = []

    async def testbench(ctx):
        index = enabled = 0
        while len(got) < len(a):
            en = int(rng.random() < 0.8)
            i = min(index, len(a) - 1)
            ctx.set(dut.en, en)
            ctx.set(dut.a, int(a[i]))
            ctx.set(dut.b, int(b[i]))
            ctx.set(dut.shift, int(shift[i]))
            await ctx.tick()
            if en:
                index += 1
                enabled += 1
                if enabled >= spec.latency:
                    got.append(ctx.get(dut.result))

    _run(dut, testbench)
    assert got == golden.tolist()


def test_a_wrong_golden_is_caught():
    """The comparison can fail: the exp unit of a 3-bit table against the golden model of a 2-bit table."""
    spec = ExpSpec(in_width=6, in_frac=2, mant_frac=8, lut_bits=3)
    other = ExpSpec(in_width=6, in_frac=2, mant_frac=8, lut_bits=2)
    d = np.arange(-32, 32)
    got_m, _ = _exp_unit_outputs(spec, d, np.random.default_rng(0))
    assert np.array_equal(got_m, exp_golden(spec, d)[0])
    assert not np.array_equal(got_m, exp_golden(other, d)[0])
