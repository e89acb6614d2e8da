"""The Stripes-style bit-serial array: parameters, accumulator and partial widths (brute force), the bit-serial
algorithm and golden model against torch.matmul, the tiling driver, the cycle model, deterministic and
lint-clean Verilog, the CLI, then the RTL in Verilator through cocotb (every output bit-exact against torch,
measured cycles equal to the cycle model) and a run that shows the testbench fails when hardware and
reference disagree."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from hardwire.gen import registry
from hardwire.gen.bitserial import (
    LATENCY_CYCLES,
    BitSerialParams,
    assemble_results,
    bit_planes,
    bitserial_golden,
    dot_cycles,
    gemm_cycles,
    jobs_cycles,
    min_precision,
    plan_gemm,
    serial_dot,
)
from hardwire.sim.runner import simulate
from hardwire.sim.tb_bitserial import default_cases
from hardwire.sim.verify import verify_block

from hardwire.cli import main
from hardwire.errors import ParameterError, SimulationError
from hardwire.params import int_range, wrap

# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("rows", 0, "1..64"),
        ("lanes", 65, "1..64"),
        ("simd", 0, "1..64"),
        ("w_width", 1, "2..16"),
        ("a_max", 17, "1..16"),
        ("a_max", 0, "1..16"),
        ("msb_first", 1, "True or False"),
        ("a_signed", "yes", "True or False"),
        ("k_max", 0, "1..1048576"),
        ("acc_width", 65, "..64"),
    ],
)
def test_bad_parameter_names_itself_its_value_and_the_range(field, value, allowed):
    with pytest.raises(ParameterError) as error:
        BitSerialParams(**{field: value})
    assert error.value.name == field
    assert repr(value) in str(error.value) and allowed in str(error.value)


def test_params_round_trip_and_the_name_shows_every_hardware_change():
    p = BitSerialParams(rows=3, lanes=2, simd=5, w_width=4, a_max=7, msb_first=False, k_max=99)
    assert BitSerialParams.from_dict(p.to_dict()) == p
    names = {
        BitSerialParams(**c).top_name
        for c in (
            {},
            {"rows": 3},
            {"lanes": 3},
            {"simd": 3},
            {"w_width": 4},
            {"w_signed": False},
            {"a_max": 8},
            {"a_signed": False},
            {"msb_first": False},
            {"k_max": 16},
            {"acc_width": 40},
        )
    }
    assert len(names) == 11


# --- widths: brute force --------------------------------------------------------------------------


def _fits(width, lo, hi, is_signed=True):
    w_lo, w_hi = int_range(width, is_signed)
    return w_lo <= lo and hi <= w_hi


@pytest.mark.parametrize(
    "a_max, a_signed, w_width, w_signed, k",
    [c for c in itertools.product((1, 2, 3), (False, True), (2, 3), (False, True), (1, 2, 3))],
)
def test_acc_width_is_the_narrowest_that_holds_every_dot_product_by_exhaustive_enumeration(
    a_max, a_signed, w_width, w_signed, k
):
    """Every activation vector times every weight vector, enumerated: the extremes fit, not one bit less."""
    p = BitSerialParams(simd=1, a_max=a_max, a_signed=a_signed, w_width=w_width, w_signed=w_signed, k_max=k)
    a_lo, a_hi = int_range(a_max, a_signed)
    w_lo, w_hi = int_range(w_width, w_signed)
    xs = np.array(list(itertools.product(range(a_lo, a_hi + 1), repeat=k)))
    ws = np.array(list(itertools.product(range(w_lo, w_hi + 1), repeat=k)))
    dots = xs @ ws.T
    lo, hi = int(dots.min()), int(dots.max())
    assert _fits(p.acc_bits, lo, hi, p.acc_signed) and not _fits(p.acc_bits - 1, lo, hi, p.acc_signed)


@pytest.mark.parametrize("a_max, w_width, k_max", [(8, 8, 4096), (16, 8, 128), (16, 16, 1 << 20), (4, 2, 3)])
def test_acc_width_holds_k_max_extreme_products_and_not_one_bit_less(a_max, w_width, k_max):
    for a_signed, w_signed in itertools.product((False, True), repeat=2):
        p = BitSerialParams(a_max=a_max, w_width=w_width, a_signed=a_signed, w_signed=w_signed, k_max=k_max)
        products = [x * w for x in int_range(a_max, a_signed) for w in int_range(w_width, w_signed)]
        lo, hi = k_max * min(products), k_max * max(products)
        assert _fits(p.acc_bits, lo, hi, p.acc_signed) and not _fits(p.acc_bits - 1, lo, hi, p.acc_signed)


@pytest.mark.parametrize("msb_first", [True, False])
@pytest.mark.parametrize("a_signed, w_signed", list(itertools.product((False, True), repeat=2)))
def test_every_chunk_partial_of_every_input_fits_partial_width_by_exhaustive_enumeration(msb_first, a_signed, w_signed):
    """All 2-element chunks of 3-bit activations and 2-bit weights at every precision: serial_dot asserts
    each intermediate partial fits partial_width, and the result equals the integer product."""
    p = BitSerialParams(simd=2, a_max=3, w_width=2, a_signed=a_signed, w_signed=w_signed, msb_first=msb_first, k_max=2)
    w_lo, w_hi = int_range(2, w_signed)
    ws = np.array(list(itertools.product(range(w_lo, w_hi + 1), repeat=2))).T  # 2 x 16
    for precision in range(1, 4):
        lo, hi = int_range(precision, a_signed)
        xs = np.array(list(itertools.product(range(lo, hi + 1), repeat=2)))
        assert np.array_equal(serial_dot(p, xs, ws, precision), xs @ ws)
    lo, hi = p.product_range
    assert not _fits(p.partial_width - 1, 2 * lo, 2 * hi)  # and the extreme chunk needs every bit


# --- the bit-serial algorithm and the golden model -------------------------------------------------


@pytest.mark.parametrize("a_signed, msb_first", list(itertools.product((False, True), repeat=2)))
def test_bit_planes_rebuild_the_value_with_the_sign_plane_subtracted(a_signed, msb_first):
    for precision in range(1, 17):
        lo, hi = int_range(precision, a_signed)
        values = np.array(sorted({lo, hi, 0, lo + 1, hi - 1, (lo + hi) // 2}.intersection(range(lo, hi + 1))))
        planes = bit_planes(values, precision, a_signed, msb_first)
        weights = [1 << b for b in range(precision)]
        if a_signed:
            weights[-1] = -weights[-1]
        order = weights[::-1] if msb_first else weights
        assert np.array_equal(np.tensordot(order, planes, axes=1), values)


SERIAL_CONFIGS = [
    BitSerialParams(simd=1, a_max=16, w_width=8),
    BitSerialParams(simd=4, a_max=16, w_width=8, msb_first=False),
    BitSerialParams(simd=3, a_max=8, w_width=4, a_signed=False, w_signed=False),
    BitSerialParams(simd=5, a_max=8, w_width=16, a_signed=False, msb_first=False),
    BitSerialParams(simd=2, a_max=4, w_width=3, w_signed=False),
]


@pytest.mark.parametrize("p", SERIAL_CONFIGS, ids=lambda p: p.top_name)
def test_serial_dot_and_golden_equal_torch_matmul_at_every_precision(p):
    rng = np.random.default_rng(3)
    w_lo, w_hi = int_range(p.w_width, p.w_signed)
    for precision in range(1, p.a_max + 1):
        lo, hi = p.a_range(precision)
        a = np.concatenate(
            [
                rng.integers(lo, hi + 1, (6, 23)),
                np.full((1, 23), lo),
                np.full((1, 23), hi),
                np.zeros((1, 23), dtype=np.int64),
            ]
        )
        w = np.concatenate(
            [rng.integers(w_lo, w_hi + 1, (23, 5)), np.full((23, 1), w_lo), np.full((23, 1), w_hi)], axis=1
        )
        expected = torch.matmul(torch.tensor(a), torch.tensor(w)).numpy()
        assert np.array_equal(serial_dot(p, a, w, precision), expected)
        assert np.array_equal(bitserial_golden(p, a, w), expected)


def test_golden_rejects_out_of_range_operands_and_wraps_like_the_accumulator():
    p = BitSerialParams(a_max=4, w_width=4, w_signed=False)
    with pytest.raises(ParameterError, match="W values"):
        bitserial_golden(p, np.ones((1, 2)), np.full((2, 1), -1))
    with pytest.raises(ParameterError, match="A values"):
        bitserial_golden(p, np.full((1, 2), 8), np.ones((2, 1)))
    with pytest.raises(ParameterError, match="K"):
        bitserial_golden(BitSerialParams(k_max=2), np.ones((1, 3)), np.ones((3, 1)))
    with pytest.raises(ParameterError, match="A values"):
        serial_dot(p, np.full((1, 2), 2), np.ones((2, 1)), 2)  # 2 needs 3 signed bits
    narrow = BitSerialParams(simd=1, a_max=8, w_width=8, acc_width=16)
    a, w = np.full((1, 4), -128), np.full((4, 1), -128)
    assert bitserial_golden(narrow, a, w)[0, 0] == wrap(4 * 128 * 128, 16, True)[()] == 0
    assert serial_dot(narrow, a, w, 8)[0, 0] == 0


def test_min_precision_is_the_fewest_bits_that_hold_the_values():
    assert [min_precision(v, True) for v in ([0], [-1], [1], [-2, 1], [-128, 127], [-129])] == [1, 1, 2, 2, 8, 9]
    assert [min_precision(v, False) for v in ([0], [1], [2], [255], [256])] == [1, 1, 2, 8, 9]


# --- tiling driver --------------------------------------------------------------------------------


def _emulate_beats(p: BitSerialParams, plan) -> list[list[int]]:
    """What the PEs make of the streams, beat by beat in Python (no RTL): checks the driver alone."""
    out = []
    weights = iter(plan.weights)
    acc = np.zeros((p.rows, p.lanes), dtype=np.int64)
    plane, chunk_w, partial = 0, None, np.zeros_like(acc)
    for beat in plan.activations:
        if plane == 0:
            chunk_w = np.array(next(weights)).reshape(p.lanes, p.simd).T
        prec = beat["precision"]
        bits = np.array([[(mask >> j) & 1 for j in range(p.simd)] for mask in beat["bits"]])
        bit = prec - 1 - plane if p.msb_first else plane
        weight = -(1 << bit) if p.a_signed and bit == prec - 1 else 1 << bit
        partial += weight * (bits @ chunk_w)
        plane += 1
        if plane == prec:
            acc += partial
            partial[:], plane = 0, 0
            if beat["last"]:
                out.append(acc.reshape(-1).tolist())
                acc[:] = 0
    assert next(weights, None) is None
    return out


@pytest.mark.parametrize("msb_first", [True, False])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (5, 9, 7), (7, 3, 2), (2, 20, 11)])
def test_tiling_driver_covers_any_gemm_shape_at_fixed_and_dynamic_precision(msb_first, m, k, n):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    p = BitSerialParams(rows=2, lanes=3, simd=4, a_max=8, msb_first=msb_first)
    a = rng.integers(-128, 128, (m, k))
    a[-1] = rng.integers(-2, 2, k)  # the last block of rows needs fewer bits
    w = rng.integers(-128, 128, (k, n))
    for precision in (8, None):
        plan = plan_gemm(p, a, w, precision)
        y = assemble_results(p, plan, _emulate_beats(p, plan))
        assert np.array_equal(y, torch.matmul(torch.tensor(a), torch.tensor(w)).numpy())
    dynamic = plan_gemm(p, a, w)
    assert [prec for _, prec in dynamic.jobs] == [
        min_precision(a[m0 : m0 + 2], True) for m0 in range(0, m, 2) for _ in range(0, n, 3)
    ]


def test_tiling_driver_rejects_a_precision_too_small_for_the_activations():
    p = BitSerialParams(rows=2, lanes=1, simd=2, a_max=8)
    a, w = np.array([[3, 0], [0, 0]]), np.ones((2, 1), dtype=np.int64)
    with pytest.raises(ParameterError, match="A values"):
        plan_gemm(p, a, w, 2)
    with pytest.raises(ParameterError, match="precision"):
        plan_gemm(p, a, w, [8, 8])
    with pytest.raises(ParameterError, match="precision"):
        plan_gemm(p, a, w, 9)


# --- cycle model ----------------------------------------------------------------------------------


def test_cycle_model_is_precision_times_chunks_plus_a_fixed_latency():
    for simd in (1, 4, 16):
        p = BitSerialParams(simd=simd)
        for precision in range(1, 17):
            assert dot_cycles(p, 128, precision) == -(-128 // simd) * precision + LATENCY_CYCLES
    p = BitSerialParams(rows=2, lanes=4, simd=4)
    plan = plan_gemm(p, np.ones((5, 10), dtype=np.int64), np.ones((10, 9), dtype=np.int64), 16)
    assert jobs_cycles(p, plan.jobs) == gemm_cycles(p, 5, 10, 9, 16) == 3 * 3 * 3 * 16 + LATENCY_CYCLES
    assert gemm_cycles(p, 5, 10, 9, 1) * 16 - 15 * LATENCY_CYCLES == gemm_cycles(p, 5, 10, 9, 16)


# --- generation, determinism, lint, CLI -----------------------------------------------------------


def test_generated_verilog_is_byte_identical_across_processes():
    script = (
        "from hardwire.gen import registry; from hardwire.gen.bitserial import BitSerialParams; "
        "print(registry.to_verilog(registry.get('bitserial'), "
        "BitSerialParams(rows=2, lanes=3, msb_first=False))[1])"
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
    assert runs[0] == runs[1] and "module bitserial_2x3_simd4_a16s_w8s_lsb" in runs[0]


LINT_CONFIGS = [
    BitSerialParams(rows=1, lanes=1, simd=1, a_max=1, w_width=2),
    BitSerialParams(),
    BitSerialParams(rows=3, lanes=2, simd=5, a_max=7, a_signed=False, w_signed=False, msb_first=False),
]


@pytest.mark.parametrize("params", LINT_CONFIGS, ids=lambda p: p.top_name)
def test_generated_verilog_is_lint_clean(params, tmp_path):
    from hardwire.flows.lint import lint

    meta = registry.generate("bitserial", params, tmp_path)
    report = lint([meta["verilog"]], meta["top"])
    assert report.clean, [w for w in report.warnings if not w["waived"]][:5]


def test_cli_gen_writes_verilog_and_names_a_bad_parameter(tmp_path, capsys):
    assert (
        main(
            [
                "gen",
                "bitserial",
                "--rows",
                "2",
                "--lanes",
                "2",
                "--simd",
                "3",
                "--a-max",
                "8",
                "--no-msb-first",
                "-o",
                str(tmp_path),
            ]
        )
        == 0
    )
    top = "bitserial_2x2_simd3_a8s_w8s_lsb"
    assert f"module {top}" in (tmp_path / f"{top}.v").read_text()
    assert (tmp_path / f"{top}.json").is_file()
    assert main(["gen", "bitserial", "--a-max", "17", "-o", str(tmp_path)]) == 2
    assert "a_max=17" in capsys.readouterr().err


@pytest.mark.slow
def test_generated_verilog_synthesizes_with_yosys(tmp_path):
    from hardwire.flows.synth import synth

    meta = registry.generate("bitserial", BitSerialParams(rows=2, lanes=2, simd=2, a_max=8), tmp_path)
    report = synth([meta["verilog"]], meta["top"], "ecp5")
    assert report.lut > 0 and report.ff > 0 and report.dsp == 0


# --- RTL in Verilator -----------------------------------------------------------------------------

SIM_CONFIGS = [
    BitSerialParams(rows=2, lanes=3, simd=3, w_width=4, a_max=16, k_max=40),
    BitSerialParams(rows=1, lanes=2, simd=2, w_width=3, w_signed=False, a_max=5, msb_first=False, k_max=20),
    pytest.param(BitSerialParams(), marks=pytest.mark.slow),
    pytest.param(BitSerialParams(rows=1, lanes=1, simd=1, a_max=8, a_signed=False, k_max=50), marks=pytest.mark.slow),
    pytest.param(
        BitSerialParams(rows=4, lanes=4, simd=8, a_max=16, a_signed=False, msb_first=False, k_max=64),
        marks=pytest.mark.slow,
    ),
    pytest.param(
        BitSerialParams(rows=3, lanes=2, simd=4, w_width=16, a_max=12, k_max=200, acc_width=24), marks=pytest.mark.slow
    ),
]


def _id(p):
    return (p.values[0] if hasattr(p, "values") else p).top_name


@pytest.mark.parametrize("params", SIM_CONFIGS, ids=_id)
def test_bitserial_matches_torch_matmul_bit_exactly_with_modelled_cycles(params):
    result = verify_block("bitserial", params)
    assert result.ok, result.table()
    assert len(result.cases) == len(default_cases(params))
    for name, case in result.cases.items():
        assert case["exact"] and case["mismatches"] == 0, (name, case)
        assert case["golden_equals_torch"] and case["extra_beats"] == 0, (name, case)
        if case["check_cycles"]:
            assert case["cycles"] == case["model_cycles"], (name, case)
    assert result.cases["every_precision"]["precisions"] == list(range(1, params.a_max + 1))


def test_tiled_gemm_on_the_array_matches_torch_at_dynamic_precision():
    """A GEMM much larger than the 2 x 3 array (19 x 37 x 10), rows of different magnitudes."""
    p = SIM_CONFIGS[0]
    rng = np.random.default_rng(11)
    a = rng.integers(-(1 << 15), 1 << 15, (19, 37))
    a[4:8] = rng.integers(-3, 4, (4, 37))
    a[12:14] = rng.integers(-1, 1, (2, 37))
    w = rng.integers(-8, 8, (37, 10))
    case = {
        "name": "gemm_19x37x10",
        "a": a.tolist(),
        "w": w.tolist(),
        "precision": None,
        "valid_probability": 1.0,
        "ready_probability": 1.0,
        "check_cycles": True,
    }
    result = verify_block("bitserial", p, cases=[case])
    assert result.ok, result.table()
    measured = result.cases["gemm_19x37x10"]
    assert measured["exact"] and measured["cycles"] == measured["model_cycles"]
    assert measured["precisions"] == [1, 3, 16]


def test_testbench_fails_when_hardware_and_reference_disagree():
    """The check can fail: hardware built MSB-first, driven as if it were LSB-first."""
    built = SIM_CONFIGS[0]
    claimed = BitSerialParams.from_dict(built.to_dict() | {"msb_first": False})
    top, verilog, _ = registry.to_verilog(registry.get("bitserial"), built)
    cases = [c for c in default_cases(claimed) if c["name"] in ("random_tiled",)]
    config = {"params": claimed.to_dict() | {"name": top}, "cases": cases, "seed": 1}
    with pytest.raises(SimulationError):
        simulate(verilog, top, "hardwire.sim.tb_bitserial", config=config)
