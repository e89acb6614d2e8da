"""The matrix-vector-threshold unit: parameters, content validation, the accumulator width (brute force), the
golden model against torch, the schedule model, deterministic and lint-clean Verilog, then the RTL in
Verilator through cocotb (bit-exact outputs, handshake cycles equal to the schedule model) on configurations
covering pe = simd = 1, pe = N, simd = K, raw mode, signed inputs, 1/2/8-bit widths and N, K that are not
powers of two, and a run that shows the testbench fails when hardware and reference disagree."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from hardwire.gen import registry
from hardwire.gen.mvu import (
    MatrixVectorUnit,
    MvuParams,
    check_content,
    clamp_thresholds,
    mvu_cycles,
    mvu_golden,
    mvu_random_content,
    mvu_schedule,
    mvu_threshold_probes,
)
from hardwire.sim.runner import simulate
from hardwire.sim.tb_mvu import default_cases
from hardwire.sim.verify import verify_block

from hardwire.errors import ParameterError, SimulationError
from hardwire.params import int_range

# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, name, allowed",
    [
        ({"in_features": 0}, "in_features", "1..4096"),
        ({"out_features": 4097}, "out_features", "1..4096"),
        ({"simd": 3}, "simd", "a divisor of in_features=16"),
        ({"pe": 3}, "pe", "a divisor of out_features=8"),
        ({"in_width": 0}, "in_width", "1..16"),
        ({"w_width": 17}, "w_width", "1..16"),
        ({"in_signed": 1}, "in_signed", "True or False"),
        ({"out_width": 9}, "out_width", "0 (raw accumulator) or 1..8"),
        ({"out_base": 1}, "out_base", "0 (unsigned) or -8 (signed)"),
        ({"out_base": -9}, "out_base", "0 (unsigned) or -8 (signed)"),
        ({"out_base": -4}, "out_base", "0 (unsigned) or -8 (signed)"),
        ({"out_width": 0, "out_base": -8}, "out_base", "0 (out_width=0"),
        ({"content_seed": -1}, "content_seed", "an integer >= 0"),
    ],
)
def test_bad_parameter_names_itself_its_value_and_the_range(changes, name, allowed):
    with pytest.raises(ParameterError) as error:
        MvuParams(**changes)
    assert error.value.name == name
    assert repr(changes[name]) in str(error.value) and allowed in str(error.value)


def test_params_round_trip_through_to_dict_and_name_every_hardware_change():
    p = MvuParams(in_features=12, out_features=6, simd=3, pe=2, in_signed=True, out_base=-8, content_seed=3)
    assert MvuParams.from_dict(p.to_dict()) == p
    assert p.to_dict()["acc_width"] == p.acc_width
    names = {
        MvuParams(**c).top_name
        for c in (
            {},
            {"simd": 2},
            {"pe": 4},
            {"in_width": 3},
            {"in_signed": True},
            {"w_width": 3},
            {"w_signed": False},
            {"out_width": 0},
            {"out_base": -8},
            {"content_seed": 1},
            {"in_features": 32},
            {"out_features": 16},
        )
    }
    assert len(names) == 12


def test_content_is_validated_with_clear_errors():
    p = MvuParams(in_features=4, out_features=2, simd=2, pe=1, w_width=3, w_signed=True, out_width=2)
    w = np.zeros((2, 4), dtype=np.int64)
    t = np.array([[0, 1, 2], [-5, -5, 9]])
    check_content(p, w, t)
    with pytest.raises(ParameterError, match=r"weights shape=\(4, 2\)"):
        check_content(p, w.T, t)
    with pytest.raises(ParameterError, match=r"weights values=4 .*-4\.\.3 \(3-bit signed\)"):
        check_content(p, w + 4, t)
    with pytest.raises(ParameterError, match=r"weights values"):
        check_content(p, w + 0.5, t)
    with pytest.raises(ParameterError, match=r"thresholds\[1\]=\[9, -5, 9\].*non-decreasing"):
        check_content(p, w, np.array([[0, 1, 2], [9, -5, 9]]))
    with pytest.raises(ParameterError, match=r"thresholds shape=\(2, 2\)"):
        check_content(p, w, t[:, :2])
    with pytest.raises(ParameterError, match="thresholds=None"):
        check_content(p, w, None)
    with pytest.raises(ParameterError, match="raw accumulator"):
        check_content(MvuParams(in_features=4, out_features=2, simd=2, pe=1, w_width=3, out_width=0), w, t)
    with pytest.raises(ParameterError, match="x values"):
        mvu_golden(p, w, t, np.full((1, 4), 16))
    with pytest.raises(ParameterError):
        MatrixVectorUnit(p, w + 4, t)


# --- accumulator width ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "in_width, in_signed, w_width, w_signed, k",
    [c for c in itertools.product((1, 2), (False, True), (1, 2), (False, True), (1, 2, 3))],
)
def test_acc_width_is_the_narrowest_signed_width_by_exhaustive_enumeration(in_width, in_signed, w_width, w_signed, k):
    """Every input vector times every weight row, enumerated: the extremes fit acc_width, not one bit less."""
    p = MvuParams(
        in_features=k,
        out_features=1,
        simd=1,
        pe=1,
        in_width=in_width,
        in_signed=in_signed,
        w_width=w_width,
        w_signed=w_signed,
        out_width=0,
    )
    xs = np.array(list(itertools.product(range(*_span(in_width, in_signed)), repeat=k)))
    ws = np.array(list(itertools.product(range(*_span(w_width, w_signed)), repeat=k)))
    acc = xs @ ws.T
    lo, hi = int(acc.min()), int(acc.max())
    assert (lo, hi) == p.acc_range
    fits = lambda width: int_range(width, True)[0] <= lo and hi <= int_range(width, True)[1]
    assert fits(p.acc_width) and (p.acc_width == 1 or not fits(p.acc_width - 1))


def _span(width, is_signed):
    lo, hi = int_range(width, is_signed)
    return lo, hi + 1


@pytest.mark.parametrize(
    "in_width, in_signed, w_width, w_signed, k",
    [c for c in itertools.product((3, 8, 16), (False, True), (4, 16), (False, True), (1, 7, 4096))],
)
def test_acc_width_holds_the_extreme_dot_products_and_not_one_bit_less(in_width, in_signed, w_width, w_signed, k):
    p = MvuParams(
        in_features=k,
        out_features=1,
        simd=1,
        pe=1,
        in_width=in_width,
        in_signed=in_signed,
        w_width=w_width,
        w_signed=w_signed,
        out_width=0,
    )
    products = [x * w for x in int_range(in_width, in_signed) for w in int_range(w_width, w_signed)]
    lo, hi = k * min(products), k * max(products)
    fits = lambda width: int_range(width, True)[0] <= lo and hi <= int_range(width, True)[1]
    assert fits(p.acc_width) and not fits(p.acc_width - 1)
    assert p.out_shape.width == p.acc_width and p.out_shape.signed


# --- golden model ---------------------------------------------------------------------------------


def _torch_reference(p: MvuParams, weights, thresholds, x) -> np.ndarray:
    """torch.matmul, then torch.searchsorted: how many of a channel's sorted thresholds are <= acc."""
    acc = torch.matmul(torch.as_tensor(x, dtype=torch.int64), torch.as_tensor(weights, dtype=torch.int64).T)
    if thresholds is None:
        return acc.numpy()
    t = torch.as_tensor(thresholds, dtype=torch.int64)
    counts = torch.searchsorted(t, acc.T.contiguous(), right=True).T
    return (counts + p.out_base).numpy()


GOLDEN_CONFIGS = [
    MvuParams(),
    MvuParams(in_features=12, out_features=6, simd=3, pe=2, in_signed=True, out_base=-8),
    MvuParams(in_features=20, out_features=3, simd=5, pe=3, in_width=8, w_width=8, out_width=8),
    MvuParams(in_features=9, out_features=5, simd=1, pe=1, in_width=2, w_width=2, out_width=2, out_base=-2),
    MvuParams(
        in_features=7, out_features=4, simd=7, pe=4, in_width=5, in_signed=True, w_width=3, w_signed=False, out_width=0
    ),
    MvuParams(in_features=3, out_features=2, simd=1, pe=2, in_width=1, w_width=1, w_signed=True, out_width=1),
]


@pytest.mark.parametrize("p", GOLDEN_CONFIGS, ids=lambda p: p.top_name)
def test_golden_matches_torch_on_random_and_corner_inputs(p):
    weights, thresholds = mvu_random_content(p)
    rng = np.random.default_rng(7)
    lo, hi = int_range(p.in_width, p.in_signed)
    x = np.concatenate(
        [
            rng.integers(lo, hi + 1, (50, p.in_features)),
            np.full((1, p.in_features), lo),
            np.full((1, p.in_features), hi),
            np.zeros((1, p.in_features), dtype=np.int64),
            mvu_threshold_probes(p),
        ]
    )
    y = mvu_golden(p, weights, thresholds, x)
    assert y.shape == (len(x), p.out_features)
    assert np.array_equal(y, _torch_reference(p, weights, thresholds, x))
    out_lo, out_hi = int_range(p.out_shape.width, p.out_shape.signed)
    assert out_lo <= y.min() and y.max() <= out_hi


def test_random_content_is_seeded_in_range_and_spreads_over_the_output_levels():
    p = MvuParams(in_features=32, out_features=8, simd=4, pe=2, out_width=3)
    weights, thresholds = mvu_random_content(p)
    again = mvu_random_content(p)
    assert np.array_equal(weights, again[0]) and np.array_equal(thresholds, again[1])
    other = mvu_random_content(MvuParams(in_features=32, out_features=8, simd=4, pe=2, out_width=3, content_seed=1))
    assert not np.array_equal(weights, other[0])
    check_content(p, weights, thresholds)
    lo, hi = p.acc_range
    assert thresholds.min() < lo and thresholds.max() > hi + 1  # some lie outside: the clamp matters
    rng = np.random.default_rng(0)
    y = mvu_golden(p, weights, thresholds, rng.integers(0, 16, (400, 32)))
    assert len(np.unique(y)) == 2**p.out_width  # random inputs reach every level
    # the probe vectors hit a threshold exactly for every channel
    acc = mvu_threshold_probes(p) @ weights.T
    assert all(np.isin(thresholds[n], acc[:, n]).any() for n in range(p.out_features))


def test_clamped_thresholds_give_the_same_outputs_for_every_reachable_accumulator():
    p = MvuParams(in_features=2, out_features=1, simd=1, pe=1, in_width=2, w_width=2, out_width=2)
    lo, hi = p.acc_range
    t = np.array([[lo - 100, hi, hi + 50]])
    clamped = clamp_thresholds(p, t)
    assert clamped.tolist() == [[lo, hi, hi + 1]]
    assert p.threshold_width == p.acc_width  # hi + 1 still fits here
    w = np.array([[1, -2]])
    xs = np.array(list(itertools.product(range(4), repeat=2)))
    assert np.array_equal(mvu_golden(p, w, t, xs), mvu_golden(p, w, clamped, xs))
    # an accumulator equal to a threshold reaches it (>=), one below does not
    t_exact = np.array([[-3, 0, 1]])
    assert mvu_golden(p, w, t_exact, np.array([[1, 2], [0, 0], [1, 0], [3, 3]])).ravel().tolist() == [1, 2, 3, 1]


@pytest.mark.parametrize("a_signed, b_signed", list(itertools.product((False, True), repeat=2)))
def test_lut_multiplier_equals_python_product_for_every_operand_pair(a_signed, b_signed):
    """The partial-product multiplier used for narrow operands, exhaustively in Amaranth's simulator."""
    from amaranth.hdl import Module, Signal, signed, unsigned
    from amaranth.sim import Simulator
    from hardwire.gen.mvu import LUT_MULTIPLY_MAX_WIDTH, _multiply

    pairs = [(a_width, b_width) for a_width in (1, 2, 3, 5) for b_width in (1, 3, LUT_MULTIPLY_MAX_WIDTH)]
    m = Module()
    ports = []
    for a_width, b_width in pairs:
        a = Signal(signed(a_width) if a_signed else unsigned(a_width))
        b = Signal(signed(b_width) if b_signed else unsigned(b_width))
        y = Signal(signed(a_width + b_width + 1))
        m.d.comb += y.eq(_multiply(a, b))
        ports.append((a, b, y, int_range(a_width, a_signed), int_range(b_width, b_signed)))
    wrong = []

    async def testbench(ctx):
        for a, b, y, (a_lo, a_hi), (b_lo, b_hi) in ports:
            for a_value, b_value in itertools.product(range(a_lo, a_hi + 1), range(b_lo, b_hi + 1)):
                ctx.set(a, a_value)
                ctx.set(b, b_value)
                if ctx.get(y) != a_value * b_value:
                    wrong.append((len(a), len(b), a_value, b_value, ctx.get(y)))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    assert not wrong, wrong[:5]


# --- schedule model -------------------------------------------------------------------------------


def test_schedule_at_full_rate_has_initiation_interval_nf_times_sf_and_no_bubbles():
    p = MvuParams(in_features=6, out_features=9, simd=3, pe=3)  # SF = 2, NF = 3
    delay = p.output_delay
    accepted, produced = mvu_schedule(p, [0] * 6)
    assert accepted == [0, 1, 6, 7, 12, 13]
    assert produced == [t + delay for t in (1, 3, 5, 7, 9, 11, 13, 15, 17)]
    summary = mvu_cycles(p, frames=3)
    assert summary["initiation_interval"] == 6
    assert summary["latency_cycles"] == 1 + delay
    assert summary["total_cycles"] == 17 + delay + 1
    # one output per cycle when SF = 1; one input per cycle when NF = 1
    assert mvu_schedule(MvuParams(in_features=4, out_features=8, simd=4, pe=2), [0, 0])[1] == [
        t + MvuParams(in_features=4, out_features=8, simd=4, pe=2).output_delay for t in range(8)
    ]
    q = MvuParams(in_features=8, out_features=2, simd=2, pe=2)
    assert mvu_schedule(q, [0] * 12)[0] == list(range(12))
    assert mvu_cycles(q, 5)["initiation_interval"] == 4


def test_schedule_follows_input_bubbles_and_waits_for_the_replayed_folds():
    p = MvuParams(in_features=6, out_features=9, simd=3, pe=3)  # SF = 2, NF = 3
    delay = p.output_delay
    accepted, produced = mvu_schedule(p, [2, 10, 11, 30, 30])
    assert accepted == [2, 10, 15, 30, 35]  # beats 2 and 4 wait for folds 1, 2
    assert produced == [t + delay for t in (10, 12, 14, 30, 32, 34)]  # the partial last vector: nothing yet
    with pytest.raises(ValueError, match="non-decreasing"):
        mvu_schedule(p, [3, 2])


def test_latency_is_the_pipeline_stages_and_grows_with_the_adder_tree():
    base = {"in_features": 64, "out_features": 4, "pe": 1}
    delays = {simd: MvuParams(simd=simd, **base).output_delay for simd in (1, 2, 4, 8, 16, 64)}
    # memory 2 + product 1 + accumulator 1 + comparison 1 + FIFO 2, plus a register per two tree levels
    assert delays == {1: 7, 2: 7, 4: 8, 8: 8, 16: 9, 64: 10}
    assert MvuParams(simd=4, out_width=0, **base).output_delay == 7


# --- generation, determinism, lint ----------------------------------------------------------------


def test_generated_verilog_is_byte_identical_across_processes():
    script = (
        "from hardwire.gen import registry; from hardwire.gen.mvu import MvuParams; "
        "print(registry.to_verilog(registry.get('mvu'), "
        "MvuParams(in_features=12, out_features=6, simd=3, pe=2))[1])"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
        ).stdout
        for seed in (1, 2)
    ]
    assert runs[0] == runs[1] and "module mvu_12x6_simd3_pe2" in runs[0]


LINT_CONFIGS = [
    MvuParams(in_features=1, out_features=1, simd=1, pe=1),
    MvuParams(in_features=6, out_features=5, simd=1, pe=1),
    MvuParams(in_features=12, out_features=6, simd=12, pe=6, in_signed=True, out_base=-8),
    MvuParams(in_features=10, out_features=4, simd=10, pe=2, in_width=8, w_width=8, out_width=8),
    MvuParams(in_features=9, out_features=6, simd=3, pe=3, in_signed=True, w_signed=False, out_width=0),
    MvuParams(in_features=64, out_features=64, simd=8, pe=4),
    MvuParams(
        in_features=16, out_features=6, simd=4, pe=2, in_width=1, w_width=1, w_signed=False, out_width=1, binary=True
    ),
]


@pytest.mark.parametrize("params", LINT_CONFIGS, ids=lambda p: p.top_name)
def test_generated_verilog_is_lint_clean(params, tmp_path):
    from hardwire.flows.lint import lint

    meta = registry.generate("mvu", params, tmp_path)
    report = lint([meta["verilog"]], meta["top"])
    assert report.clean, [w for w in report.warnings if not w["waived"]][:5]


# --- RTL simulation -------------------------------------------------------------------------------

SIM_CONFIGS = [
    # pe = simd = 1, N and K not powers of two, unsigned 4-bit output
    MvuParams(in_features=6, out_features=5, simd=1, pe=1),
    # pe = N (one neuron fold), signed inputs, signed output
    MvuParams(in_features=12, out_features=6, simd=3, pe=6, in_signed=True, out_base=-8),
    # simd = K (one synapse fold): one output beat per cycle; 8-bit operands, 255 thresholds per channel
    MvuParams(in_features=10, out_features=3, simd=10, pe=1, in_width=8, w_width=8, out_width=8),
    # raw accumulator, signed 5-bit inputs times unsigned 3-bit weights
    MvuParams(
        in_features=9, out_features=6, simd=3, pe=3, in_width=5, in_signed=True, w_width=3, w_signed=False, out_width=0
    ),
    # 2-bit everything, signed output
    MvuParams(in_features=20, out_features=12, simd=4, pe=3, in_width=2, w_width=2, out_width=2, out_base=-2),
    # fully parallel (SF = NF = 1), 1-bit weights and outputs, 16-bit inputs
    MvuParams(
        in_features=5, out_features=3, simd=5, pe=3, in_width=16, in_signed=True, w_width=1, w_signed=True, out_width=1
    ),
    # binary (XNOR-popcount): 1-bit codes of -1/+1, a 1-bit output and a raw popcount
    MvuParams(
        in_features=24, out_features=6, simd=8, pe=2, in_width=1, w_width=1, w_signed=False, out_width=1, binary=True
    ),
    MvuParams(
        in_features=12, out_features=4, simd=3, pe=4, in_width=1, w_width=1, w_signed=False, out_width=0, binary=True
    ),
    pytest.param(MvuParams(in_features=64, out_features=64, simd=8, pe=4), marks=pytest.mark.slow),
    pytest.param(
        MvuParams(in_features=72, out_features=30, simd=24, pe=10, in_width=8, in_signed=True, w_width=8, out_width=0),
        marks=pytest.mark.slow,
    ),
]


def _id(p):
    return (p.values[0] if hasattr(p, "values") else p).top_name


@pytest.mark.parametrize("params", SIM_CONFIGS, ids=_id)
def test_mvu_matches_golden_bit_exactly_with_exact_handshake_cycles(params):
    result = verify_block("mvu", params)
    assert result.ok, result.table()
    assert len(result.cases) == len(default_cases(params))
    for name, case in result.cases.items():
        assert case["exact"] and case["mismatches"] == 0 and case["extra_beats"] == 0, (name, case)
        if case["check_schedule"]:
            assert case["schedule_ok"], (name, case)
        if case["full_rate"]:
            assert case["cycles"] == case["model_cycles"], (name, case)
            assert case["latency_cycles"] == case["model_latency_cycles"], (name, case)
    if params.thresholds_mode:
        assert result.cases["threshold_boundary"]["threshold_hits"] > 0


def test_testbench_fails_when_hardware_and_golden_disagree():
    """The check can fail: hardware built with the content of seed 0, checked against the content of seed 1
    (the Verilog of the first simulated configuration: its compiled model is reused)."""
    built = SIM_CONFIGS[0]
    claimed = dataclasses.replace(built, content_seed=1)
    top, verilog, _ = registry.to_verilog(registry.get("mvu"), built)
    cases = [c for c in default_cases(claimed) if c["name"] == "random_full_rate"]
    with pytest.raises(SimulationError, match="differ from the golden model"):
        simulate(verilog, top, "hardwire.sim.tb_mvu", config={"params": claimed.to_dict(), "cases": cases, "seed": 1})


@pytest.mark.slow
@pytest.mark.parametrize("in_width, w_width, dsp", [(4, 4, 0), (8, 8, 6)])
def test_narrow_products_use_luts_and_wide_ones_one_dsp_each_on_ecp5(in_width, w_width, dsp, tmp_path):
    from hardwire.flows.synth import synth

    p = MvuParams(in_features=12, out_features=6, simd=3, pe=2, in_width=in_width, w_width=w_width)
    meta = registry.generate("mvu", p, tmp_path)
    report = synth([meta["verilog"]], meta["top"], "ecp5")
    assert report.dsp == dsp == (0 if in_width <= 4 else p.simd * p.pe)
    assert report.lut > 0 and report.ff > 0


def test_binary_mode_is_the_bipolar_dot_product_shifted_and_rejects_wider_operands():
    p = MvuParams(
        in_features=10, out_features=3, simd=5, pe=3, in_width=1, w_width=1, w_signed=False, out_width=0, binary=True
    )
    rng = np.random.default_rng(0)
    x, w = rng.integers(0, 2, size=(50, 10)), rng.integers(0, 2, size=(3, 10))
    bipolar = (2 * x - 1) @ (2 * w - 1).T
    assert np.array_equal(2 * mvu_golden(p, w, None, x) - 10, bipolar)
    assert p.acc_range == (0, 10) and "xnor" in p.top_name
    with pytest.raises(ParameterError, match="binary"):
        MvuParams(in_width=2, w_width=1, w_signed=False, binary=True)
