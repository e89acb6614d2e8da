"""BitVert / BBS: parameters; the encoder (directions, >= 50% skipped per column on any input, sign-column
merging, the packed encoding round-trips exactly); the pruning options; the golden model of the PE arithmetic
against torch on the decoded weights; the cycle model by hand; deterministic, lint-clean Verilog; the CLI;
then the RTL in Verilator (bit-exact GEMVs, result handshake cycles equal to the cycle model computed from the
encoded weights) and runs that show the testbench fails when the hardware and the claim disagree."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from hardwire.gen import registry
from hardwire.gen.bitvert import (
    OUTPUT_LATENCY_CYCLES,
    BitVertParams,
    Record,
    array_pass_ends,
    bbs_cycles,
    bit_columns,
    bitvert_cycles,
    bitvert_dot,
    bitvert_golden,
    bitvert_schedule,
    column_stats,
    decode_bbs,
    dense_cycles_per_group,
    directions,
    effectual_counts,
    encode_bbs,
    encoded_bits,
    group_cycles,
    group_records,
    group_weights,
    plan_gemv,
    prune_column_budget,
    prune_rounded_average,
    record_cycles,
    record_value,
    row_records,
    sign_run,
    zero_skip_cycles,
)
from hardwire.sim.runner import simulate
from hardwire.sim.tb_bitvert import default_cases
from hardwire.sim.verify import verify_block

from hardwire.errors import ParameterError, SimulationError


def _adversarial(width: int, group_size: int, rng) -> list[np.ndarray]:
    """Weight matrices (rows, K) that stress the encoder: random, all ones (-1), zeros, alternating bits,
    extremes, exact ties, small magnitudes, one bit set."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    k = 3 * group_size + 1
    alt = int("01" * width, 2) & ((1 << width) - 1)
    to_signed = lambda u: u - (1 << width) if u >> (width - 1) else u
    tie = np.zeros((2, k), dtype=np.int64)
    tie[:, ::2] = -1
    return [
        rng.integers(lo, hi + 1, (4, k)),
        np.full((2, k), -1),
        np.zeros((2, k), dtype=np.int64),
        np.full((2, k), lo),
        np.full((2, k), hi),
        np.tile([to_signed(alt), to_signed(alt ^ ((1 << width) - 1))], (2, k))[:, :k],
        rng.choice([lo, hi], (3, k)),
        rng.choice([lo, hi, 0, -1, 1], (3, k)),
        tie,
        rng.integers(-2, 2, (3, k)),
        np.where(rng.random((2, k)) < 0.5, 1, 0) << rng.integers(0, width - 1, (2, k)),
    ]


# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, name, allowed",
    [
        ({"group_size": 1}, "group_size", "2..32"),
        ({"group_size": 33}, "group_size", "2..32"),
        ({"lanes": 5}, "lanes", "1..4 (group_size // 2"),
        ({"lanes": 0}, "lanes", "1..4"),
        ({"w_width": 1}, "w_width", "2..16"),
        ({"a_width": 17}, "a_width", "1..16"),
        ({"a_signed": 1}, "a_signed", "True or False"),
        ({"pes": 65}, "pes", "1..64"),
        ({"k_max": 4}, "k_max", "8..1048576"),
    ],
)
def test_bad_parameter_names_itself_its_value_and_the_range(changes, name, allowed):
    with pytest.raises(ParameterError) as error:
        BitVertParams(**changes)
    assert error.value.name == name and allowed in str(error.value)


def test_params_round_trip_and_every_hardware_change_shows_in_the_name():
    p = BitVertParams(group_size=6, lanes=3, pes=2, a_signed=False, k_max=99)
    assert BitVertParams.from_dict(p.to_dict()) == p
    names = {
        BitVertParams(**c).top_name
        for c in (
            {},
            {"group_size": 4},
            {"lanes": 1},
            {"w_width": 4},
            {"a_width": 4},
            {"a_signed": False},
            {"pes": 2},
            {"k_max": 64},
        )
    }
    assert len(names) == 8


def test_acc_width_holds_the_extreme_dot_products_and_not_one_bit_less():
    p = BitVertParams(k_max=1024)
    extremes = [1024 * a * w for a in (-128, 127) for w in (-128, 127)]
    fits = lambda width: -(1 << (width - 1)) <= min(extremes) and max(extremes) < 1 << (width - 1)
    assert fits(p.acc_width) and not fits(p.acc_width - 1)


# --- encoder --------------------------------------------------------------------------------------


@pytest.mark.parametrize("width, group_size", [(8, 8), (8, 16), (4, 5), (2, 2), (6, 7), (16, 32)])
def test_at_least_half_of_every_column_is_skipped_on_any_input(width, group_size):
    rng = np.random.default_rng(width * 100 + group_size)
    for w in _adversarial(width, group_size, rng):
        cols = bit_columns(group_weights(w, group_size, width), width)
        e = effectual_counts(cols)
        assert e.max() <= group_size // 2
        assert column_stats(w, group_size, width)["min_column_skipped"] >= 0.5
        # the direction is the majority: the effectual bits are the minority value
        d = directions(cols)
        assert np.array_equal(e, np.where(d == 1, group_size - cols.sum(-1), cols.sum(-1)))
        for row in w:
            for recs in row_records(BitVertParams(group_size=group_size, lanes=1, w_width=width, k_max=4096), row):
                assert all(
                    record_cycles(r, BitVertParams(group_size=group_size, lanes=1, w_width=width, k_max=4096))
                    <= max(1, group_size // 2)
                    for r in recs
                )


def test_every_group_of_four_3bit_weights_exhaustively_skips_half_and_round_trips():
    groups = np.array(list(itertools.product(range(-4, 4), repeat=4)))  # 4096 groups
    assert effectual_counts(bit_columns(groups, 3)).max() <= 2
    t = encode_bbs(groups, group_size=4, width=3)
    assert np.array_equal(decode_bbs(t), groups)


@pytest.mark.parametrize("width, group_size", [(8, 8), (8, 16), (4, 5), (2, 2), (16, 32)])
def test_packed_encoding_round_trips_exactly(width, group_size):
    rng = np.random.default_rng(7)
    for w in _adversarial(width, group_size, rng):
        t = encode_bbs(w, group_size, width)
        assert np.array_equal(decode_bbs(t), w)
    # a corrupted stream does not decode to the same weights (or does not decode at all)
    w = rng.integers(-(1 << (width - 1)), 1 << (width - 1), (3, 2 * group_size))
    t = encode_bbs(w, group_size, width)
    bad = t.bits.copy()
    bad[len(bad) // 2] ^= 1
    try:
        assert not np.array_equal(decode_bbs(dataclasses.replace(t, bits=bad)), w)
    except (ValueError, IndexError):
        pass


def test_packed_encoding_size_follows_its_definition():
    # G = 8, n = 8: 3 bits of sign run + per column 2 bits (constant) or 9 bits (raw)
    assert encode_bbs(np.full((1, 8), -1)).bits.size == 3 + 2  # one merged all-ones column
    assert encode_bbs(np.zeros((1, 8), dtype=np.int64)).bits.size == 3 + 2
    assert encode_bbs(np.full((1, 8), 1)).bits.size == 3 + 2 + 2  # run 6: merged zeros, then ones
    w = np.array([[3, -4, 1, 0, 2, -1, 1, 0]])  # range -4..3: 5 sign-run columns
    assert sign_run(bit_columns(w.reshape(1, 8), 8))[0] == 5
    assert encode_bbs(w).bits.size == 3 + 3 * 9
    dense = np.array([[-128, 127, 1, -2, 64, -65, 3, 0]])
    assert encode_bbs(dense).bits_per_weight == (3 + 8 * 9) / 8


def test_sign_column_merging_is_exact_and_counted_once():
    p = BitVertParams()
    g = np.array([5, -3, 0, 7, -8, 1, -1, 2])  # 4-bit values: run of 4 below sign
    recs = group_records(g, 8)
    assert recs[0].negative and recs[0].shift == 3 and recs[-1].group_last
    assert [r.shift for r in recs[1:]] == [2, 1, 0]
    a = np.arange(-4, 4) * 17
    assert sum(record_value(r, a, p) for r in recs) == int(g @ a)


def test_column_stats_count_merged_sign_extension_columns_as_skipped():
    rng = np.random.default_rng(4)
    w = rng.integers(-4, 4, (4, 64))  # 3-bit values in 8-bit weights
    stats = column_stats(w, 8)
    assert stats["merged_skipped_per_bit"][2:7] == [1.0] * 5  # bits 2..6 extend the sign
    assert stats["merged_skipped_per_bit"][:2] == stats["bbs_skipped_per_bit"][:2]
    assert stats["merged_skipped"] > stats["bbs_skipped"] >= 0.5 and stats["min_column_skipped"] >= 0.5
    ones = bit_columns(group_weights(w, 8), 8).sum()
    assert stats["zero_skipped"] == pytest.approx(1 - ones / w.size / 8)


def test_record_value_uses_the_complement_identity():
    """S = A - sum of the activations at the zero bits, when ones are the majority."""
    p = BitVertParams()
    a = np.array([3, -5, 7, 11, -13, 17, 19, -23])
    record = Record(bits=0b11110111, shift=2, negative=False, group_last=True)  # 7 ones: inverted
    assert record_value(record, a, p) == 4 * (int(a.sum()) - int(a[3]))
    assert record_cycles(record, p) == 1
    assert record_cycles(Record(0b00001111, 0, False, True), p) == 2  # tie: 4 ones processed


def test_golden_equals_torch_matmul_on_the_decoded_weights():
    rng = np.random.default_rng(3)
    for p in (
        BitVertParams(),
        BitVertParams(group_size=16, lanes=4, a_signed=False),
        BitVertParams(group_size=5, lanes=2, w_width=4, a_width=4),
    ):
        for w in _adversarial(p.w_width, p.group_size, rng):
            lo, hi = p.a_range
            x = rng.integers(lo, hi + 1, (3, w.shape[1]))
            decoded = decode_bbs(encode_bbs(w, p.group_size, p.w_width))
            y = bitvert_golden(p, decoded, x)
            reference = torch.matmul(torch.as_tensor(x), torch.as_tensor(decoded).T).numpy()
            assert np.array_equal(y, reference)
    with pytest.raises(ParameterError, match="x values"):
        bitvert_golden(BitVertParams(), np.zeros((1, 8), dtype=np.int64), np.full((1, 8), 128))
    with pytest.raises(ParameterError, match="weights values"):
        bitvert_golden(BitVertParams(), np.full((1, 8), 128), np.zeros((1, 8), dtype=np.int64))


def test_golden_is_not_a_plain_matmul_of_the_wrong_weights():
    """The record arithmetic depends on every bit: one flipped weight bit changes the result."""
    p = BitVertParams()
    w = np.array([[5, -3, 100, 7, -8, 1, -1, 2]])
    a = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    records = row_records(p, w[0])
    flipped = row_records(p, w[0] ^ np.array([0, 0, 4, 0, 0, 0, 0, 0]))
    assert bitvert_dot(p, records, a) == int(w[0] @ a) != bitvert_dot(p, flipped, a)


# --- pruning --------------------------------------------------------------------------------------


def test_rounded_averaging_makes_the_low_columns_constant_and_errs_less_than_their_weight():
    rng = np.random.default_rng(5)
    w = rng.integers(-128, 128, (6, 64))
    for low in range(5):
        pruned = prune_rounded_average(w, 8, low)
        cols = bit_columns(group_weights(pruned, 8), 8)
        assert np.all(effectual_counts(cols)[..., :low] == 0)
        assert np.abs(pruned - w).max() < max(1, 1 << low)
        assert np.array_equal(pruned >> low, w >> low)  # high bits untouched
        # the group's low parts average to what they were, within half a step
        lows = (group_weights(w, 8) & ((1 << low) - 1)).mean(-1)
        new = (group_weights(pruned, 8) & ((1 << low) - 1)).mean(-1)
        assert np.abs(lows - new).max() <= 0.5
    assert np.array_equal(prune_rounded_average(w, 8, 0), w)


def test_column_budget_caps_effectual_bits_below_the_sign_run_and_reduces_cycles():
    rng = np.random.default_rng(6)
    w = np.clip(np.round(rng.normal(0, 25, (8, 64))), -128, 127).astype(np.int64)
    p = BitVertParams(lanes=1)
    cycles = []
    for budget in (4, 2, 1, 0):
        pruned = prune_column_budget(w, 8, budget)
        cols = bit_columns(group_weights(w, 8), 8)
        runs = sign_run(cols)
        new = effectual_counts(bit_columns(group_weights(pruned, 8), 8))
        for index in np.ndindex(runs.shape):
            assert new[index][: 7 - runs[index]].max(initial=0) <= budget
        assert pruned.min() >= -128 and pruned.max() <= 127
        cycles.append(sum(bbs_cycles(p, row) for row in pruned))
    assert np.array_equal(prune_column_budget(w, 8, 4), w)  # G/2: nothing to prune
    assert cycles == sorted(cycles, reverse=True) and cycles[-1] < cycles[0]


# --- cycle model ----------------------------------------------------------------------------------


def test_cycle_model_by_hand():
    p = BitVertParams(lanes=2)
    # group 1: -1s: one merged all-ones column (1 cycle). group 2: zeros: one empty record (1 cycle).
    # group 3: 0b0101_0111 = 87 in every weight: columns 0, 1, 2, 4, 6 all ones (1 cycle each)
    w = np.concatenate([np.full(8, -1), np.zeros(8, dtype=np.int64), np.full(8, 87)])
    assert [len(r) for r in row_records(p, w)] == [1, 1, 5]
    assert bbs_cycles(p, w) == 7
    assert zero_skip_cycles(p, w) == 8 * 4 + 1 + 5 * 4  # every one bit, two per cycle
    assert dense_cycles_per_group(p) == 32
    x = np.ones((2, 24), dtype=np.int64)
    plan = plan_gemv(p, w[None, :], x)
    assert plan.pass_cycles == [7, 7]
    assert bitvert_schedule(p, plan) == [7 + OUTPUT_LATENCY_CYCLES, 14 + OUTPUT_LATENCY_CYCLES]
    assert bitvert_cycles(p, w[None, :], x) == 14 + OUTPUT_LATENCY_CYCLES + 1


def test_array_pes_do_not_wait_for_each_other_per_group():
    """Each PE reads the activation queue at its own pace: two PEs whose work falls in different groups take
    as long as the slower one alone (17), not the sum over groups of the slowest (32, the old group barrier)."""
    p = BitVertParams(pes=2, lanes=1)
    heavy = np.array([0b0101_0101, 0] * 4)  # columns 0, 2, 4, 6 half ones: 4 cycles each
    first = np.concatenate([heavy, np.zeros(8, dtype=np.int64)])
    second = np.concatenate([np.zeros(8, dtype=np.int64), heavy])
    assert group_cycles(first, p).tolist() == [16, 1] and group_cycles(second, p).tolist() == [1, 16]
    plan = plan_gemv(p, np.stack([first, second]), np.ones((2, 16), dtype=np.int64))
    assert plan.pass_cycles == [17, 17]  # the second pass starts after the first's end
    assert bitvert_schedule(p, plan) == [17 + OUTPUT_LATENCY_CYCLES, 34 + OUTPUT_LATENCY_CYCLES]


def test_a_pe_a_pass_ahead_waits_for_its_previous_result_to_leave():
    """By hand, 3 passes of one group, 2 PEs: pass 0 ends in cycle 6 (PE 0) and leaves the result register
    in 6 + 2; PE 1's last issue of pass 1 (ready in cycle 2) waits until 6 + 3 = 9, so its 6-cycle pass 2
    starts at 10 and ends at 15 (without the wait: 8)."""
    assert array_pass_ends(np.array([[[6, 1]], [[1, 1]], [[1, 6]]]), 8) == [6, 9, 15]


def test_queue_depth_bounds_how_far_a_pe_runs_ahead():
    """PE 0 has 4-cycle groups then 1-cycle ones, PE 1 the reverse: with a queue of D groups, PE 1 can run at
    most D groups ahead; the pass takes longer with D = 2 than with D = 8, and never less than either PE."""
    cycles = np.array([[[4, 1]] * 8 + [[1, 4]] * 8])  # (1 pass, 16 groups, 2 PEs)
    deep, shallow = array_pass_ends(cycles, 16)[0], array_pass_ends(cycles, 2)[0]
    assert deep == 8 * 4 + 8 * 1 + 0  # each PE alone: 40 (first issue in cycle 1)
    assert shallow > deep
    # by hand for D = 2: group h is accepted once every PE finished group h - 2
    assert array_pass_ends(np.array([[[3, 1], [3, 1], [1, 1]]]), 2) == [7]
    assert array_pass_ends(np.array([[[1, 3], [1, 3], [1, 1]]]), 2) == [7]


def test_vectorised_cycles_and_encoded_size_equal_the_records_and_the_encoder():
    rng = np.random.default_rng(8)
    for p in (BitVertParams(), BitVertParams(lanes=1, group_size=5, w_width=4), BitVertParams(group_size=16, lanes=3)):
        for w in _adversarial(p.w_width, p.group_size, rng) + [
            prune_rounded_average(rng.integers(-100, 100, (3, 40)) >> (8 - p.w_width), p.group_size, 2, p.w_width)
        ]:
            expected = [[sum(record_cycles(r, p) for r in recs) for recs in row_records(p, row)] for row in w]
            assert np.array_equal(group_cycles(w, p), expected)
            assert encoded_bits(w, p.group_size, p.w_width) == len(encode_bbs(w, p.group_size, p.w_width).bits)


# --- generation, determinism, lint, CLI -----------------------------------------------------------


def test_generated_verilog_is_byte_identical_across_processes():
    script = (
        "from hardwire.gen import registry; from hardwire.gen.bitvert import BitVertParams; "
        "print(registry.to_verilog(registry.get('bitvert'), BitVertParams(pes=2, group_size=6, lanes=3))[1])"
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
    assert runs[0] == runs[1] and "module bitvert_p2_g6_l3_w8_a8s" in runs[0]


@pytest.mark.parametrize(
    "params",
    [BitVertParams(), BitVertParams(pes=3, group_size=16, lanes=4, w_width=4, a_width=5, a_signed=False)],
    ids=lambda p: p.top_name,
)
def test_generated_verilog_is_lint_clean(params, tmp_path):
    from hardwire.flows.lint import lint

    meta = registry.generate("bitvert", params, tmp_path)
    report = lint([meta["verilog"]], meta["top"])
    assert report.clean, [w for w in report.warnings if not w["waived"]][:5]


def test_cli_gen_writes_the_bitvert_verilog(tmp_path):
    from hardwire.cli import main

    assert main(["gen", "bitvert", "--pes", "2", "--lanes", "3", "--no-a-signed", "-o", str(tmp_path)]) == 0
    top = "bitvert_p2_g8_l3_w8_a8u"
    assert f"module {top}" in (tmp_path / f"{top}.v").read_text()
    assert main(["gen", "bitvert", "--lanes", "5", "-o", str(tmp_path)]) == 2


# --- RTL simulation -------------------------------------------------------------------------------

SIM_CONFIGS = [
    BitVertParams(),
    # three PEs that must wait for each other, odd group, three lanes, unsigned 5-bit activations, 6-bit weights
    BitVertParams(pes=3, group_size=7, lanes=3, w_width=6, a_width=5, a_signed=False),
    # the shallowest queue: a fast PE is held back when it runs two groups ahead of the slowest
    BitVertParams(pes=2, group_size=4, lanes=1, w_width=4, a_width=4, queue_depth=2),
    pytest.param(BitVertParams(pes=4, group_size=16, lanes=1, w_width=4, a_width=8, k_max=256), marks=pytest.mark.slow),
    pytest.param(
        BitVertParams(pes=2, group_size=2, lanes=1, w_width=2, a_width=1, a_signed=False, k_max=32),
        marks=pytest.mark.slow,
    ),
]


def _id(p):
    return (p.values[0] if hasattr(p, "values") else p).top_name


@pytest.mark.parametrize("params", SIM_CONFIGS, ids=_id)
def test_bitvert_matches_golden_bit_exactly_with_cycles_equal_to_the_model(params):
    result = verify_block("bitvert", params)
    assert result.ok, result.table()
    assert len(result.cases) == len(default_cases(params))
    for name, case in result.cases.items():
        assert case["exact"] and case["golden_equals_matmul"] and case["extra_beats"] == 0, (name, case)
        if case["full_rate"]:
            assert case["result_cycles"] == case["model_result_cycles"], (name, case)
    # data-dependent: different weights took different times
    assert len({case["cycles"] for case in result.cases.values() if case["full_rate"]}) > 3


def test_testbench_fails_when_hardware_and_claim_disagree():
    """The checks can fail: the default hardware (lanes = 2, signed activations) checked as if it had one
    lane (cycle model) and as if its activations were unsigned (values); the compiled model is reused."""
    built = SIM_CONFIGS[0]
    top, verilog, _ = registry.to_verilog(registry.get("bitvert"), built)
    cases = [c for c in default_cases(built) if c["name"] == "random"]
    one_lane = dataclasses.replace(built, lanes=1)
    with pytest.raises(SimulationError, match="cycle model says"):
        simulate(
            verilog, top, "hardwire.sim.tb_bitvert", config={"params": one_lane.to_dict(), "cases": cases, "seed": 1}
        )
    unsigned_claim = dataclasses.replace(built, a_signed=False)  # same accumulator width
    assert unsigned_claim.acc_width == built.acc_width
    cases = [c for c in default_cases(unsigned_claim) if c["name"] == "random"]
    with pytest.raises(SimulationError, match="differ from the golden model"):
        simulate(
            verilog,
            top,
            "hardwire.sim.tb_bitvert",
            config={"params": unsigned_claim.to_dict(), "cases": cases, "seed": 1},
        )
