"""BitMoD: the datatype tables, the quantizer (round trip, per-group type choice, the mixture never worse than any
single type), the unified signed-power-of-two representation, the golden model against torch and a plain
integer reference, the cycle model, deterministic lint-clean Verilog, the CLI, then the RTL in Verilator
through cocotb (bit-exact outputs, handshake cycles equal to the cycle model), and a run showing that the
testbench fails when hardware and reference disagree."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hardwire.gen import registry
from hardwire.gen.bitmod import (
    TERMS,
    BitmodParams,
    bitmod_golden,
    bitmod_schedule,
    dot_product_cycles,
    gemm_cycles,
    gemm_golden,
    plan_gemm,
    term_table,
    terms_of_type,
)
from hardwire.gen.bitmod_quant import (
    BY_NAME,
    DATATYPES,
    MIXTURES,
    QuantizedWeights,
    ScaleFormat,
    decode,
    quantize,
    relative_mse,
    signed_digits,
)
from hardwire.sim.runner import simulate
from hardwire.sim.tb_bitmod import default_cases, synthetic_weights
from hardwire.sim.verify import verify_block

from hardwire.cli import main
from hardwire.errors import ParameterError, SimulationError

# --- datatypes ------------------------------------------------------------------------------------


def test_datatype_tables_are_the_documented_values_with_negative_zero_repurposed():
    fp3, fp4 = [0, 1, 2, 4], [0, 1, 2, 3, 4, 6, 8, 12]
    expected = {
        "int3": ([0, 1, 2, 3], 0),
        "fp3": (fp3, 0),
        "fp3_er_pos": (fp3, 3),
        "fp3_er_neg": (fp3, -3),
        "fp3_ea_pos": (fp3, 6),
        "fp3_ea_neg": (fp3, -6),
        "int4": (list(range(8)), 0),
        "fp4": (fp4, 0),
        "fp4_er_pos": (fp4, 10),
        "fp4_er_neg": (fp4, -10),
        "fp4_ea_pos": (fp4, 16),
        "fp4_ea_neg": (fp4, -16),
    }
    assert [d.name for d in DATATYPES] == list(expected)
    for d in DATATYPES:
        magnitudes, special = expected[d.name]
        half = 1 << (d.bits - 1)
        assert list(d.values[:half]) == magnitudes  # sign bit clear
        assert list(d.values[half + 1 :]) == [-v for v in magnitudes[1:]]  # sign bit set
        assert d.values[half] == special  # the negative-zero code
        assert len(set(d.values)) == (2 * half if special else 2 * half - 1)
    # FP4 grid values are E2M1 values doubled
    assert [v / 2 for v in fp4] == [0, 0.5, 1, 1.5, 2, 3, 4, 6]


def test_decode_rejects_codes_and_type_ids_out_of_range():
    assert decode([7, 8], [BY_NAME["int4"].id] * 2).tolist() == [7, 0]
    with pytest.raises(ParameterError, match="weight code=8"):
        decode([8], [BY_NAME["int3"].id])
    with pytest.raises(ParameterError, match="type id=12"):
        decode([0], [12])


@pytest.mark.parametrize("value", range(-40, 41))
def test_signed_digits_are_the_nonadjacent_form_and_every_datatype_value_needs_at_most_two(value):
    digits = signed_digits(value)
    assert sum(d * (1 << s) for d, s in digits) == value
    assert all(d in (-1, 1) for d, _ in digits)
    shifts = [s for _, s in digits]
    assert all(a - b >= 2 for a, b in itertools.pairwise(shifts))  # non-adjacent, largest first
    # the non-adjacent form has the fewest nonzero digits: no representation with fewer terms exists
    fewer = len(digits) - 1
    if fewer >= 1:
        candidates = [sign * (1 << s) for sign in (-1, 1) for s in range(8)]
        assert all(sum(c) != value for c in itertools.combinations_with_replacement(candidates, fewer))
    if any(value in d.values for d in DATATYPES):
        assert len(digits) <= 2 and all(0 <= s <= 4 for s in shifts)


def test_term_table_reproduces_every_code_of_every_type_and_the_term_counts():
    table = term_table()
    assert TERMS == 2
    for d in DATATYPES:
        for code in range(1 << d.bits):
            valid, negative, shift = table[d.id, code].T
            value = int((valid * np.where(negative == 1, -1, 1) * (1 << shift)).sum())
            assert value == d.values[code], (d.name, code)
    assert terms_of_type([d.id for d in DATATYPES]).tolist() == [2, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    assert not table[12:, :, :, 0].any()  # unused ids: no terms


# --- quantizer ------------------------------------------------------------------------------------

FMT = ScaleFormat(8, 3)


def test_scale_rounding_is_exact_for_representable_scales_and_nearest_otherwise():
    base = np.array([-19])  # largest scale: 255 * 2**(7 - 19)
    m, e = FMT.round(np.array([150 * 2.0**-12, 0.0]), base)
    assert m.tolist() == [150, 0] and e.tolist() == [7, 0]
    assert FMT.value(m, e, base).tolist() == [150 * 2.0**-12, 0.0]
    scales = np.exp2(np.random.default_rng(0).uniform(-30, -4.001, 2000))
    m, e = FMT.round(scales, base)
    assert (m <= 255).all() and (e >= 0).all() and (e <= 7).all()
    ulp = np.exp2(e + base)
    assert (np.abs(FMT.value(m, e, base) - scales) <= ulp / 2).all()  # nearest at its exponent
    normal = scales >= 128 * 2.0**-19
    assert (m[normal] >= 128).all() and (e[~normal] == 0).all()  # full mantissa unless at e = 0


def test_quantize_round_trip_codes_to_values_to_the_same_codes():
    rng = np.random.default_rng(3)
    w = rng.standard_t(4, (16, 300)) * 0.03
    q = quantize(w, ",".join(d.name for d in DATATYPES), 128, FMT)
    assert q.codes.shape == (16, 384) and q.type_ids.shape == (16, 3)
    w_q = q.dequantize()
    expected = decode(q.codes, np.repeat(q.type_ids, 128, axis=1)) * np.repeat(
        q.scale_m * np.exp2(q.scale_e + q.base[:, None]), 128, axis=1
    )
    assert np.array_equal(w_q, expected[:, :300])
    assert (q.codes[:, 300:] == 0).all()  # padding is zero
    again = quantize(w_q, ",".join(d.name for d in DATATYPES), 128, FMT)
    assert np.array_equal(again.dequantize(), w_q)  # quantized weights are fixed points
    assert relative_mse(w_q, w) < 0.02


def _group_favouring(d, scale):
    """One group that `d` represents exactly: every value of d (its special value included) times `scale`."""
    values = np.array(sorted(set(d.values)), dtype=np.float64)
    return np.resize(values, 128) * scale


@pytest.mark.parametrize("name", [d.name for d in DATATYPES])
def test_each_type_wins_the_groups_built_from_its_values(name):
    d = BY_NAME[name]
    scale = 150 * 2.0**-12  # exactly representable
    w = _group_favouring(d, scale)[None, :]
    q = quantize(w, ",".join(t.name for t in DATATYPES), 128, FMT)
    assert np.array_equal(q.dequantize(), w)  # zero error
    chosen = DATATYPES[int(q.type_ids[0, 0])]
    if name in ("fp3", "fp4"):
        assert chosen.name == name  # ties go to the first listed type
    else:
        assert chosen.name == name, (name, chosen.name)
    # and no other type of the same width reaches zero error on the groups with a special value or with 3, 5, 7
    if name not in ("fp3", "fp4"):
        for other in DATATYPES:
            if other.name != name and other.bits == d.bits:
                assert relative_mse(quantize(w, other.name, 128, FMT).dequantize(), w) > 0


@pytest.mark.parametrize("bits", [3, 4])
def test_mixture_error_per_group_is_the_least_of_the_single_types(bits):
    rng = np.random.default_rng(bits)
    w = (
        np.concatenate(
            [
                rng.standard_t(3, (8, 256)),
                rng.uniform(-1, 1, (8, 256)),
                np.abs(rng.standard_normal((4, 256))),
                -np.abs(rng.standard_normal((4, 256))),
            ]
        )
        * 0.05
    )
    names = MIXTURES[f"bitmod{bits}+int"] + (f"fp{bits}",)

    def group_errors(q):
        return ((q.dequantize() - w) ** 2).reshape(len(w), -1, 128).sum(axis=2)

    mixed = group_errors(quantize(w, ",".join(names), 128, FMT))
    singles = np.stack([group_errors(quantize(w, n, 128, FMT)) for n in names])
    assert np.array_equal(mixed, singles.min(axis=0))
    assert (mixed < singles.max(axis=0)).mean() > 0.5  # the choice matters on most groups
    # on the whole tensor the mixture beats both plain types of the same width
    for plain in (f"int{bits}", f"fp{bits}"):
        assert mixed.sum() < group_errors(quantize(w, plain, 128, FMT)).sum()


def test_quantizer_rejects_bad_input_with_clear_errors():
    with pytest.raises(ParameterError, match="dtypes"):
        quantize(np.ones((2, 4)), "int5")
    with pytest.raises(ParameterError, match="weights shape"):
        quantize(np.ones(4))
    with pytest.raises(ParameterError, match="weights"):
        quantize(np.array([[np.nan, 1.0]]))


# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, name, allowed",
    [
        ({"pes": 0}, "pes", "1..64"),
        ({"lanes": 3}, "group_size", "a multiple of lanes=3"),
        ({"group_size": 100}, "group_size", "a multiple of lanes=8"),
        ({"a_width": 1}, "a_width", "2..16"),
        ({"scale_bits": 0}, "scale_bits", "1..16"),
        ({"scale_exp_bits": 5}, "scale_exp_bits", "0..4"),
        ({"k_max": 100}, "k_max", "a multiple of group_size=128"),
        ({"a_width": 16, "scale_bits": 16, "scale_exp_bits": 4, "k_max": 1 << 20}, "out_width", "<= 63"),
    ],
)
def test_bad_parameter_names_itself_its_value_and_the_range(changes, name, allowed):
    with pytest.raises(ParameterError) as error:
        BitmodParams(**changes)
    assert error.value.name == name and allowed in str(error.value)


def test_params_round_trip_and_every_hardware_change_shows_in_the_name():
    p = BitmodParams(pes=2, lanes=4, group_size=16, k_max=64)
    assert BitmodParams.from_dict(p.to_dict()) == p
    names = {
        BitmodParams(**c).top_name
        for c in (
            {},
            {"pes": 2},
            {"lanes": 4},
            {"group_size": 64},
            {"a_width": 4},
            {"scale_bits": 6},
            {"scale_exp_bits": 2},
            {"k_max": 1024},
        )
    }
    assert len(names) == 8


# --- golden model ---------------------------------------------------------------------------------


def _plain_reference(p, q, a):
    """Integers straight from the value tables: sum_g (grid_g . a_g) * m_g * 2**e_g, in Python ints."""
    grid = q.grid
    k = grid.shape[1]
    a_pad = np.zeros((len(a), k), dtype=object)
    a_pad[:, : q.k] = a
    out = np.zeros((len(a), grid.shape[0]), dtype=object)
    for i, j in itertools.product(range(len(a)), range(grid.shape[0])):
        for g in range(k // p.group_size):
            s = slice(g * p.group_size, (g + 1) * p.group_size)
            psum = int(np.dot(grid[j, s].astype(object), a_pad[i, s]))
            out[i, j] += psum * int(q.scale_m[j, g]) * 2 ** int(q.scale_e[j, g])
    return out


@pytest.mark.parametrize(
    "p",
    [
        BitmodParams(pes=2, lanes=4, group_size=16, k_max=64),
        BitmodParams(pes=3, lanes=8, group_size=128, a_width=4, scale_exp_bits=0),
        BitmodParams(pes=1, lanes=2, group_size=2, k_max=8, scale_bits=1),
    ],
    ids=lambda p: p.top_name,
)
def test_golden_equals_plain_integers_and_torch_float64(p):
    rng = np.random.default_rng(5)
    lo, hi = -(1 << (p.a_width - 1)), (1 << (p.a_width - 1)) - 1
    groups = p.k_max // p.group_size
    q = synthetic_weights(p, rng, 5, groups)
    a = np.concatenate([rng.integers(lo, hi + 1, (6, q.k)), np.full((1, q.k), lo), np.full((1, q.k), hi)])
    y = gemm_golden(p, q, a)
    assert np.array_equal(y.astype(object), _plain_reference(p, q, a))
    y_torch = torch.matmul(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(q.dequantize()).T).numpy()
    assert np.array_equal(np.ldexp(y.astype(np.float64), q.base[None, :]), y_torch)
    bound = 1 << (p.out_width - 1)
    assert (np.abs(y) < bound).all()


def test_extreme_dot_product_fills_the_output_width_and_does_not_overflow():
    p = BitmodParams(pes=1, lanes=8, group_size=128, k_max=1024)
    groups = p.k_max // p.group_size
    ea_neg = BY_NAME["fp4_ea_neg"]
    code = ea_neg.values.index(-16)
    codes = np.full((1, p.k_max), code)
    ids = np.full((1, groups), ea_neg.id)
    y = bitmod_golden(p, codes, ids, np.full((1, groups), 255), np.full((1, groups), 7), np.full(p.k_max, -128))
    assert y[0] == p.k_max * 16 * 128 * 255 * 2**7
    assert y[0] < 1 << (p.out_width - 1) <= 2 * y[0]  # the width is just enough


def test_golden_rejects_out_of_range_inputs():
    p = BitmodParams(pes=1, lanes=4, group_size=8, k_max=16)
    ok = {
        "codes": np.zeros((1, 8)),
        "type_ids": np.zeros((1, 1)),
        "scale_m": np.ones((1, 1)),
        "scale_e": np.zeros((1, 1)),
        "a": np.zeros(8),
    }
    bitmod_golden(p, **ok)
    for change, match in (
        ({"a": np.full(8, 128)}, "activation values"),
        ({"scale_m": np.full((1, 1), 256)}, "scale_m"),
        ({"scale_e": np.full((1, 1), 8)}, "scale_e"),
        ({"codes": np.full((1, 8), 8)}, "weight code"),
        ({"codes": np.zeros((1, 12)), "a": np.zeros(12)}, "K"),
    ):
        with pytest.raises(ParameterError, match=match):
            bitmod_golden(p, **(ok | change))


# --- cycle model ----------------------------------------------------------------------------------


def test_cycles_per_dot_product_are_terms_times_chunks_plus_dequantization():
    p = BitmodParams(pes=1, lanes=8, group_size=128)
    for terms in (1, 2):
        assert dot_product_cycles(p, [terms]) == 16 * terms + p.scale_bits + 4
    assert dot_product_cycles(p, [2, 1, 2]) == 16 * 5 + p.scale_bits + 4


def test_schedule_stalls_on_the_dequantization_unit_when_groups_are_shorter_than_it():
    p = BitmodParams(pes=1, lanes=8, group_size=8, k_max=64, scale_bits=8)  # one chunk per group
    accepted, produced = bitmod_schedule(p, [2] * 4, [0, 0, 0, 1], [0] * 4)
    # group 0 issues in cycles 1-2 and is taken in 3 (dequantized 4-11); group 1 issues 3-4 into the free
    # hand-off; group 2's final term must wait until the unit takes group 1 in its last cycle, 11, so chunk 3
    # is accepted then; its final term waits for the next take, in 19 (group 2 dequantized 20-27); group 3
    # is taken in 27, dequantized 28-35, written into the FIFO in 35 and handed out in 37
    assert accepted == [0, 2, 4, 11] and produced == [37]
    # input bubbles delay acceptance; the result follows the last chunk
    a2, p2 = bitmod_schedule(BitmodParams(pes=1, lanes=4, group_size=8), [1, 1], [0, 1], [5, 30])
    assert a2 == [5, 30] and p2 == [30 + 1 + 1 + 8 + 2]


def test_gemm_plan_covers_every_row_block_and_activation_row():
    p = BitmodParams(pes=4, lanes=8, group_size=32, k_max=128)
    rng = np.random.default_rng(0)
    q = quantize(rng.standard_normal((9, 70)), "bitmod4", 32, FMT)
    plan = plan_gemm(p, q, rng.integers(-128, 128, (2, 70)))
    assert plan.shape == (2, 96, 9) and len(plan.results) == 2 * 3
    assert len(plan.weights) == 2 * 3 * 12 and sum(plan.chunk_last) == 6
    assert gemm_cycles(p, plan) >= sum(plan.chunk_terms)


# --- generation, determinism, lint, CLI -----------------------------------------------------------


def test_generated_verilog_is_byte_identical_across_processes():
    script = (
        "from hardwire.gen import registry; from hardwire.gen.bitmod import BitmodParams; "
        "print(registry.to_verilog(registry.get('bitmod'), BitmodParams(pes=2, lanes=4, group_size=16))[1])"
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
    assert runs[0] == runs[1] and "module bitmod_p2_l4_g16" in runs[0]


@pytest.mark.parametrize(
    "params",
    [BitmodParams(pes=1, lanes=1, group_size=1, k_max=4, scale_bits=1, scale_exp_bits=0), BitmodParams()],
    ids=lambda p: p.top_name,
)
def test_generated_verilog_is_lint_clean(params, tmp_path):
    from hardwire.flows.lint import lint

    meta = registry.generate("bitmod", params, tmp_path)
    report = lint([meta["verilog"]], meta["top"])
    assert report.clean, [w for w in report.warnings if not w["waived"]][:5]


def test_cli_gen_writes_verilog_and_its_description(tmp_path, capsys):
    assert main(["gen", "bitmod", "--pes", "2", "--lanes", "4", "--group-size", "16", "-o", str(tmp_path)]) == 0
    top = "bitmod_p2_l4_g16"
    meta = json.loads((tmp_path / f"{top}.json").read_text())
    assert meta["params"]["pes"] == 2 and meta["params"]["out_width"] == BitmodParams(2, 4, 16).out_width
    assert {p["name"] for p in meta["ports"]} >= {"weights__payload", "activations__payload", "results__ready"}
    assert main(["gen", "bitmod", "--lanes", "3", "-o", str(tmp_path)]) == 2
    assert "group_size=128" in capsys.readouterr().err


# --- RTL simulation -------------------------------------------------------------------------------

SIM_CONFIGS = [
    # two PEs of four lanes: three row blocks, every type, the extremes at k_max
    BitmodParams(pes=2, lanes=4, group_size=16, k_max=64),
    # one chunk per group: the dequantization unit is the bottleneck and the hand-off stalls the lanes;
    # 4-bit activations, no scale exponent
    BitmodParams(pes=3, lanes=4, group_size=4, k_max=16, a_width=4, scale_bits=5, scale_exp_bits=0),
    pytest.param(
        BitmodParams(pes=1, lanes=1, group_size=4, k_max=8, scale_bits=1, scale_exp_bits=1), marks=pytest.mark.slow
    ),
    pytest.param(BitmodParams(), marks=pytest.mark.slow),
    pytest.param(
        BitmodParams(pes=8, lanes=16, group_size=64, k_max=512, a_width=6, scale_bits=10, scale_exp_bits=4),
        marks=pytest.mark.slow,
    ),
]


def _id(p):
    return (p.values[0] if hasattr(p, "values") else p).top_name


@pytest.mark.parametrize("params", SIM_CONFIGS, ids=_id)
def test_bitmod_matches_golden_and_torch_bit_exactly_with_modelled_cycles(params):
    result = verify_block("bitmod", params)
    assert result.ok, result.table()
    assert len(result.cases) == len(default_cases(params))
    types_seen = set()
    for name, case in result.cases.items():
        assert case["exact"] and case["mismatches"] == 0 and case["extra_beats"] == 0, (name, case)
        assert case["torch_exact"] and case["golden_equals_torch"] and case["inputs_together"], (name, case)
        if case["check_schedule"]:
            assert case["schedule_ok"], (name, case)
        if case["full_rate"]:
            assert case["cycles"] == case["model_cycles"], (name, case)
        types_seen |= set(case["types"])
    assert types_seen == {d.name for d in DATATYPES}


def test_testbench_fails_when_hardware_and_golden_disagree():
    """The check can fail: hardware built with groups of 16, checked as if groups were 8 (same ports, so the
    compiled model of the first configuration is reused; every other group's scale differs)."""
    built = SIM_CONFIGS[0]
    claimed = dataclasses.replace(built, group_size=8)
    top, verilog, _ = registry.to_verilog(registry.get("bitmod"), built)
    cases = [c for c in default_cases(claimed) if c["name"] == "every_type_and_special_value"]
    config = {"params": claimed.to_dict() | {"name": top}, "cases": cases, "seed": 1}
    with pytest.raises(SimulationError, match="differ from the golden model"):
        simulate(verilog, top, "hardwire.sim.tb_bitmod", config=config)


def test_quantized_weights_survive_the_testbench_json_round_trip():
    from hardwire.sim.tb_bitmod import weights_from_json, weights_to_json

    q = quantize(np.random.default_rng(1).standard_normal((3, 40)), "bitmod3+int", 16, FMT)
    back = weights_from_json(json.loads(json.dumps(weights_to_json(q))))
    assert isinstance(back, QuantizedWeights) and np.array_equal(back.dequantize(), q.dequantize())
