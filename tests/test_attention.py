"""The attention head: golden model against float64 scaled_dot_product_attention, cycle model, Verilog
(determinism, lint, CLI) and the RTL bit-exact against the golden model with cycles equal to the model."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
from hardwire.gen import registry
from hardwire.gen.attention import (
    AttentionParams,
    attend_golden,
    attention_cycles,
    attention_golden,
    attention_schedule,
    decode_golden,
    error_bound_lsb,
    exp_fixed,
    q_layout,
    query_cycles,
    query_groups,
    reference_float,
    steady_state_utilization,
)
from hardwire.sim.runner import simulate
from hardwire.sim.tb_attention import default_cases
from hardwire.sim.verify import verify_block

from hardwire.errors import ParameterError, PrecisionWarning, SimulationError
from hardwire.params import int_range

# The default configuration's error against float64 SDPA, in output LSBs (8-bit output): its analytic bound
# (`error_bound_lsb`) is below one LSB.
ERROR_BOUND_LSB = 1.0

CAUSAL = AttentionParams(head_dim=3, tile=3, seq_max=10, causal=True, causal_offset=2)


def _random_inputs(p: AttentionParams, rng, n: int, scale: int = 1):
    q_lo, q_hi = int_range(p.q_width, True)
    k_lo, k_hi = int_range(p.k_width, True)
    v_lo, v_hi = int_range(p.v_width, True)
    return (
        rng.integers(q_lo // scale, q_hi // scale + 1, (n, p.head_dim)),
        rng.integers(k_lo // scale, k_hi // scale + 1, (n, p.head_dim)),
        rng.integers(v_lo, v_hi + 1, (n, p.head_dim)),
    )


# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, name",
    [
        ({"head_dim": 0}, "head_dim"),
        ({"tile": 17}, "tile"),
        ({"seq_max": 0}, "seq_max"),
        ({"q_width": 1}, "q_width"),
        ({"score_width": 40}, "score_width"),
        ({"causal_offset": 1}, "causal_offset"),
        ({"exp_interp": "cubic"}, "interp"),
        ({"recip_method": "magic"}, "method"),
        ({"out_frac": 40}, "out_frac"),
        ({"seq_max": 4096, "tile": 64, "exp_frac": 20}, "o accumulator width"),
        ({"queries": 0}, "queries"),
        ({"queries": 17}, "queries"),
        ({"queries": 2.0}, "queries"),
    ],
)
def test_bad_parameters_are_named(bad, name):
    with pytest.raises(ParameterError, match=name):
        AttentionParams(**bad)


def test_scaling_by_one_over_sqrt_d_is_folded_into_the_exp_constant():
    """One fixed-point multiply: the exp's log2(e) constant is log2(e)/sqrt(d), so exp_fixed(diff) is
    2**(diff * 2**-score_frac * log2(e) / sqrt(d)) to the table's accuracy."""
    for d in (1, 4, 9, 64):
        p = AttentionParams(head_dim=d, seq_max=16)
        spec = p.exp_spec
        assert abs(spec.log2e / 2**spec.log2e_bits - math.log2(math.e) / math.sqrt(d)) <= 2**-spec.log2e_bits
        diff = -np.arange(0, 1 << 12, 37)
        exact = np.exp(diff / 2**p.score_frac / math.sqrt(d)) * 2**p.exp_frac
        table = spec.max_relative_error(float(-diff.min()) / 2**p.score_frac / math.sqrt(d)) * 2**p.exp_frac
        assert np.max(np.abs(exp_fixed(p, diff) - exact)) <= 2.0 + table
    assert exp_fixed(AttentionParams(), 0) == 1 << AttentionParams().exp_frac


def test_buffers_do_not_grow_with_the_sequence_length():
    sizes = {seq: AttentionParams(seq_max=seq, tile=4).buffer_bits for seq in (16, 64, 256, 1024)}
    # only l and o widen by a few bits (their sums grow as log2 of the length; three copies each: R, D and
    # their combination); the tiles and the query do not
    for key in ("query", "scores", "v_tile", "output"):
        assert len({s[key] for s in sizes.values()}) == 1, key
    assert sizes[1024]["state"] - sizes[16]["state"] <= 3 * 6 * (4 + 1)


# --- golden model ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p",
    [
        AttentionParams(),
        AttentionParams(head_dim=8, tile=5, seq_max=32),
        CAUSAL,
        AttentionParams(
            head_dim=4,
            tile=2,
            seq_max=8,
            exp_interp="none",
            exp_lut_bits=8,
            recip_method="divider",
            out_width=10,
            out_frac=8,
        ),
    ],
    ids=lambda p: p.top_name,
)
def test_golden_is_within_one_lsb_of_float64_sdpa(p):
    rng = np.random.default_rng(3)
    worst = 0.0
    for trial in range(12):
        n = int(rng.integers(1, p.seq_max + 1)) if trial else p.seq_max
        q, k, v = _random_inputs(p, rng, n, scale=1 + trial % 4)
        positions = np.arange(n) if p.causal else None
        out = attention_golden(p, q, k, v)
        ref = reference_float(p, q, k, v, positions)
        worst = max(worst, float(np.abs(out - ref).max()))
    assert worst <= error_bound_lsb(p)
    assert worst > 0.25  # the comparison sees the rounding at all


def test_error_bound_of_the_default_configuration_is_below_one_lsb():
    assert error_bound_lsb(AttentionParams()) < ERROR_BOUND_LSB
    # a coarser exp table costs accuracy, the bound says so, and so does the warning
    with pytest.warns(PrecisionWarning, match="attention exp_lut_bits=4: the error bound is"):
        coarse = AttentionParams(exp_interp="none", exp_lut_bits=4)
    assert error_bound_lsb(coarse) > 1


def _adversarial_heads(p: AttentionParams, rng) -> list[tuple]:
    """(q, k, v) with score patterns chosen to hurt: all keys equal, one dominant key over n - 1 at a gap
    near the exp's LSB (their p truncate), two tied maxima, a ramp, Gaussian scores of several widths;
    lengths 1, 2 and seq_max; v at alternating extremes or random."""
    d, n = p.head_dim, p.seq_max
    q_hi, k_lo, k_hi = int_range(p.q_width, True)[1], *int_range(p.k_width, True)
    v_lo, v_hi = int_range(p.v_width, True)
    q = np.zeros(d, dtype=np.int64)
    q[0] = q_hi
    # scores s_j = q_hi * c_j; in real exp units (s / 2**score_frac / sqrt(d)) one code of c is this much:
    unit = q_hi / 2**p.score_frac / math.sqrt(d)

    def keys(codes):
        k = np.zeros((len(codes), d), dtype=np.int64)
        k[:, 0] = np.clip(codes, k_lo, k_hi)
        return k

    patterns = [
        [0],
        [k_hi],
        [k_hi, k_lo],
        [5, 5],
        [0] * n,
        [k_hi] + [k_lo] * (n - 1),
        [k_hi, k_hi] + [k_lo] * (n - 2),
        list(range(k_lo, k_lo + n)),
        list(range(k_hi, k_hi - n, -1)),
    ]
    for gap in np.linspace(1.0, (p.exp_frac + 2) * math.log(2), 6):
        patterns.append([k_hi] + [k_hi - round(gap / unit)] * (n - 1))
    for sd in (0.5, 2.0, 8.0):
        patterns.append(np.round(rng.normal(0, sd / unit, n)).astype(np.int64).tolist())
    heads = []
    for codes in patterns:
        m = len(codes)
        alternating = np.where((np.arange(m)[:, None] + np.arange(d)) % 2 == 0, v_hi, v_lo)
        for v in (alternating, np.full((m, d), v_lo), rng.integers(v_lo, v_hi + 1, (m, d))):
            heads.append((q, keys(codes), v))
    return heads


@pytest.mark.parametrize(
    "out_width, out_frac, seq_max", [(8, 6, 16), (8, 6, 64), (12, 9, 16), (16, 11, 64), (16, 13, 16), (8, 6, 256)]
)
def test_default_precisions_meet_the_bound_on_adversarial_heads(out_width, out_frac, seq_max):
    """The golden model stays within the stated bound (<= 1 LSB where `test_the_derived_bound_is_one_lsb_...`
    says so) on score patterns chosen to hurt."""
    p = AttentionParams(out_width=out_width, out_frac=out_frac, seq_max=seq_max, tile=4)
    rng = np.random.default_rng(seq_max)
    worst = 0.0
    for q, k, v in _adversarial_heads(p, rng):
        worst = max(worst, float(np.abs(attend_golden(p, q, k, v) - reference_float(p, [q], k, v)[0]).max()))
    assert worst <= error_bound_lsb(p)


def test_the_derived_bound_is_one_lsb_while_the_accumulators_allow_it():
    """<= 1 LSB for 8..16-bit outputs while max|v| (Q1.6) is at most 2**12 output LSBs at seq_max 16 (2**9
    at 64). Beyond, the o accumulator's 32 bits cap exp_frac (20 at seq_max 16, 18 at 64) and the bound
    states what that meets: the truncation of seq_max probabilities to exp_frac bits dominates (seq_max
    4096: hundreds of LSBs)."""
    for out_width in range(8, 17):
        for seq_max, most_frac in ((16, 11), (64, 8)):
            p = AttentionParams(out_width=out_width, out_frac=min(out_width - 2, most_frac), seq_max=seq_max)
            assert error_bound_lsb(p) <= 1.0, p
    for capped in (AttentionParams(out_width=16, out_frac=14), AttentionParams(seq_max=4096, tile=64)):
        assert capped.o_magnitude_width == 32 and error_bound_lsb(capped) > 1


def test_golden_corner_cases_against_float64():
    p = AttentionParams()
    rng = np.random.default_rng(5)
    n, d = p.seq_max, p.head_dim
    v = rng.integers(-128, 128, (n, d))
    k_equal = np.repeat(rng.integers(-128, 128, (1, d)), n, axis=0)
    q = rng.integers(-128, 128, d)
    uniform = attend_golden(p, q, k_equal, v)
    assert np.abs(uniform - reference_float(p, [q], k_equal, v)[0]).max() <= ERROR_BOUND_LSB
    # one dominant key: the output is (almost exactly) its value row
    k = rng.integers(-20, 21, (n, d))
    k[7] = 127
    out = attend_golden(p, np.full(d, 127), k, v)
    assert np.abs(out - v[7]).max() <= 1
    # very negative scores everywhere: still a proper average
    k_neg = np.full((n, d), -128)
    out = attend_golden(p, np.full(d, 127), k_neg, v)
    assert np.abs(out - reference_float(p, [np.full(d, 127)], k_neg, v)[0]).max() <= ERROR_BOUND_LSB
    # one key: its value row exactly; extreme value rows saturate to the output range, not wrap
    assert np.array_equal(attend_golden(p, q, k[:1], v[:1]), v[0])
    assert np.array_equal(attend_golden(p, q, k, np.full((n, d), -128)), np.full(d, -128))
    assert np.array_equal(attend_golden(p, q, k, np.full((n, d), 127)), np.full(d, 127))


def test_causal_mask_and_decode():
    p = CAUSAL
    rng = np.random.default_rng(9)
    q, k, v = _random_inputs(p, rng, p.seq_max)
    full = attention_golden(p, q, k, v)
    for i in range(p.seq_max):
        visible = min(p.seq_max, i + p.causal_offset + 1)
        # masking keys beyond i + offset is the same as not having them
        assert np.array_equal(full[i], attend_golden(p, q[i], k[:visible], v[:visible], visible - 1))
        # decode: the newest query against a cache of its visible keys
        assert np.array_equal(full[i], decode_golden(p, q[i], k[:visible], v[:visible]))
    non_causal = dataclasses.replace(p, causal=False, causal_offset=0)
    assert not np.array_equal(full, attention_golden(non_causal, q, k, v))


def test_tiling_changes_the_result_by_at_most_one_lsb():
    """Online softmax over tiles rescales partial sums (with rounding); any tile size agrees with one tile."""
    rng = np.random.default_rng(11)
    one_tile = AttentionParams(tile=16)
    q, k, v = _random_inputs(one_tile, rng, 16, scale=2)
    reference = attention_golden(one_tile, q, k, v)
    for tile in (1, 3, 4, 7):
        assert np.abs(attention_golden(dataclasses.replace(one_tile, tile=tile), q, k, v) - reference).max() <= 1


def test_golden_rejects_inputs_out_of_range():
    p = AttentionParams()
    with pytest.raises(ParameterError, match="k values"):
        attend_golden(p, np.zeros(4), np.full((2, 4), 128), np.zeros((2, 4)))
    with pytest.raises(ParameterError, match="length"):
        attend_golden(p, np.zeros(4), np.zeros((17, 4)), np.zeros((17, 4)))


# --- cycle model ----------------------------------------------------------------------------------


def test_cycle_model_per_tile_query_and_sequence():
    p = AttentionParams()
    # d register + exp pipeline + fixed-point register + scale-and-round (fixmath: exp 3, scale-and-round 3)
    depth = 1 + p.exp_spec.latency + 1 + p.scale_spec.latency
    assert p.exp_depth == depth == 8
    normalize = p.recip_spec.latency + p.scale_spec.latency + 1  # newton reciprocal 7
    assert p.normalize_cycles == normalize == 11
    assert (p.v_read_delay, p.rescale_gap) == (5, 6)
    # by hand, 16 keys in 4 tiles of 4 (q handshake in cycle 0): tile 0 into bank 0, rows 1-4, alpha issued
    # in 4 + 3 = 7 (rows 8-11), bank 0 free again from 7 + 5 + 1 = 13; tile 1 (bank 1) rows 5-8, alpha at
    # max(11, 12, 7 + 6) = 13, bank 1 free from 19; tile 2 waits for bank 0: rows 13-16, alpha 19; tile 3
    # rows 19-22, alpha 25; combine at 25 + 8 + 6 = 39, output register written 11 later, output at 51
    q_acc, kv_acc, out = attention_schedule(p, [(16, None)], [0], [0] * 16)
    assert kv_acc == [1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 15, 16, 19, 20, 21, 22] and out == [51]
    q = query_cycles(p, 16)
    assert q["latency_cycles"] == 51 and q["interval_cycles"] == 52
    # one tile of 5 rows would be one of 4 and one of 1: alpha at 7, then max(5 + 3, 12, 13) = 13, its one row
    # at 14; combine at 13 + 8 + max(2, 6), output 1 + 11 later
    assert query_cycles(p, 5)["latency_cycles"] == 13 + depth + 6 + 1 + normalize
    # back to back: the next q beat is taken once the rows are in (22) and the last tile's max is taken (+ 3);
    # its first alpha waits for the first query's combination (39 + 1), its second for the first output
    # register's write (50 + 1)
    acc_q, _, out = attention_schedule(p, [(16, None), (16, None)], [0, 0], [0] * 32)
    assert acc_q == [0, 25] and out[0] == 51
    whole = attention_cycles(p, 16)
    assert whole["total_cycles"] < 16 * q["interval_cycles"]
    assert whole["total_cycles"] == attention_schedule(p, [(16, None)] * 16, [0] * 16, [0] * 256)[2][-1] + 1
    # causal: tiles beyond position + offset are consumed at one row per cycle and skipped
    c = query_cycles(CAUSAL, 10, 0)
    assert c["tiles"] == [(3, True), (3, False), (3, False), (1, False)]
    # the schedule model waits for late beats
    late = attention_schedule(p, [(5, None)], [0], [0, 0, 0, 0, 40])[1]
    assert late[:4] == [1, 2, 3, 4] and late[4] == 40


def test_long_sequences_with_large_tiles_keep_the_multipliers_busy():
    """Overlapped tiles and queries: at tile 16 and 16 tiles the MACs run at >= 90% of the 2d peak (one tile
    at a time they ran at 37%); small tiles are bound by the per-tile alpha and rescale."""
    p = AttentionParams(head_dim=16, tile=16, seq_max=256)
    c = attention_cycles(p, 256)
    assert c["macs"] / (c["total_cycles"] * 2 * p.head_dim) >= 0.9


# --- query groups ---------------------------------------------------------------------------------

GROUPED = AttentionParams(queries=2)
CAUSAL_GROUPED = dataclasses.replace(CAUSAL, queries=3)


def test_one_query_per_group_is_the_single_query_block():
    """queries = 1 keeps the ports, the name and (a separate code path) the Verilog of the single-query block;
    a group's q beat gains its last bit and the name a _g tag."""
    assert AttentionParams(queries=1).top_name == AttentionParams().top_name
    assert "last" not in q_layout(AttentionParams()).members
    assert q_layout(GROUPED).members["last"].width == 1
    assert GROUPED.top_name.endswith("_g2")
    assert AttentionParams(queries=4).buffer_bits["query"] == 4 * AttentionParams().buffer_bits["query"]


def test_groups_close_at_their_size_or_their_last_flag():
    p = AttentionParams(queries=3)
    queries = [(4, None, False)] * 4 + [(4, None, True)] + [(4, None, False), (4, None, True), (4, None)]
    assert query_groups(p, queries) == [[0, 1, 2], [3, 4], [5, 6], [7]]
    assert query_groups(AttentionParams(), [(4, None)] * 3) == [[0], [1], [2]]


def test_group_schedule_by_hand():
    """Two queries over 8 keys in tiles of 4 (q beats in cycles 0 and 1): the rows are accepted every 2 cycles
    from 2 (a window of one score per query); tile 0 is ready 2 + 1 cycles after its last row (8): its items
    (row, query) issue in 11..18, tile 1's (rows 10..16, ready 19) in 19..26. Each query's item accumulates
    exp_depth + 1 after its issue; tile 1's row 0 (19, 20) starts a rescale done rescale_gap later; a query's
    sums are final the cycle after its last item (25, 26) and that rescale, the finisher takes query 0 the
    cycle after and query 1 after query 0's output."""
    p = GROUPED
    depth, gap, normalize = p.v_read_delay + 1, p.rescale_gap, p.normalize_cycles
    q_acc, kv_acc, out = attention_schedule(p, [(8, None), (8, None)], [0, 0], [0] * 8)
    assert q_acc == [0, 1] and kv_acc == [2, 4, 6, 8, 10, 12, 14, 16]
    final0 = max(25 + depth + 1, 19 + depth + gap)
    assert out[0] == final0 + 1 + normalize + 1
    assert out[1] == max(max(26 + depth + 1, 20 + depth + gap) + 1, out[0] + 1) + normalize + 1
    # the same two queries one at a time: twice the K/V beats
    single = attention_schedule(AttentionParams(), [(8, None), (8, None)], [0, 0], [0] * 16)
    assert len(single[1]) == 2 * len(kv_acc)


def test_partial_last_group_and_causal_groups_in_the_schedule():
    """Five queries in groups of two: the last group of one streams its keys once more; a causal group's dead
    tiles (beyond every member's position + offset) are consumed at one row per cycle."""
    p = GROUPED
    q_acc, kv_acc, out = attention_schedule(p, [(16, None)] * 5, [0] * 5, [0] * 48)
    assert len(q_acc) == 5 and len(out) == 5 and len(kv_acc) == 48
    assert all(b > a for a, b in zip(out, out[1:]))
    c = attention_schedule(CAUSAL_GROUPED, [(10, 0), (10, 1)], [0, 0], [0] * 10)[1]
    # keys 0..3 live (position 1 + offset 2 = 3: tiles 0 and 1), keys 6..9 dead
    live_rows, dead_rows = c[:6], c[6:]
    assert all(b - a >= 2 for a, b in zip(live_rows, live_rows[1:]))
    assert [b - a for a, b in zip(dead_rows, dead_rows[1:])] == [1, 1, 1]


@pytest.mark.parametrize("d, tile, seq", [(4, 4, 16), (4, 4, 64), (8, 8, 64), (16, 16, 256)])
def test_groups_reach_80_percent_of_the_mac_peak(d, tile, seq):
    """Steady state from the exact schedule: >= 80% of the 2d MAC/cycle peak for 2 and 4 queries per group at
    >= 4 tiles (one query at a time, d4/t4/s16 reaches 53%)."""
    for queries in (2, 4):
        p = AttentionParams(head_dim=d, tile=tile, seq_max=seq, queries=queries)
        steady = steady_state_utilization(p)
        assert steady["utilization"] >= 0.8, (queries, steady)
        assert steady["kv_beats_per_query"] == seq / queries
    assert steady_state_utilization(AttentionParams())["utilization"] < 0.6


def test_groups_do_not_change_the_golden_model():
    """The golden model is per query: a group's outputs are its members' `attend_golden` outputs (the RTL
    tests below check the hardware against exactly these)."""
    rng = np.random.default_rng(4)
    q, k, v = _random_inputs(CAUSAL_GROUPED, rng, CAUSAL_GROUPED.seq_max)
    grouped = attention_golden(CAUSAL_GROUPED, q, k, v)
    assert np.array_equal(grouped, attention_golden(CAUSAL, q, k, v))


# --- Verilog --------------------------------------------------------------------------------------


def test_generated_verilog_is_byte_identical_across_processes():
    script = (
        "from hardwire.gen import registry; from hardwire.gen.attention import AttentionParams; "
        "print(registry.to_verilog(registry.get('attention'), AttentionParams(causal=True))[1])"
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
    assert runs[0] == runs[1] and "module attention_d4_t4_s16" in runs[0]


def test_cli_gen_writes_verilog_and_parameters(tmp_path):
    from hardwire.cli import main

    assert (
        main(
            [
                "gen",
                "attention",
                "--head-dim",
                "3",
                "--tile",
                "3",
                "--seq-max",
                "10",
                "--causal",
                "--causal-offset",
                "1",
                "-o",
                str(tmp_path),
            ]
        )
        == 0
    )
    top = AttentionParams(head_dim=3, tile=3, seq_max=10, causal=True, causal_offset=1).top_name
    assert (tmp_path / f"{top}.v").read_text().count(f"module {top}") == 1
    assert '"causal": true' in (tmp_path / f"{top}.json").read_text()


@pytest.mark.parametrize(
    "p",
    [
        AttentionParams(),
        CAUSAL,
        AttentionParams(head_dim=1, tile=1, seq_max=1),
        AttentionParams(head_dim=5, tile=6, seq_max=20, score_width=12, recip_method="divider", exp_interp="none"),
        GROUPED,
        CAUSAL_GROUPED,
        AttentionParams(head_dim=1, tile=1, seq_max=1, queries=16),
    ],
    ids=lambda p: p.top_name,
)
def test_generated_verilog_is_lint_clean(p, tmp_path):
    from hardwire.flows.lint import lint

    meta = registry.generate("attention", p, tmp_path)
    report = lint([meta["verilog"]], meta["top"])
    assert report.clean, [w for w in report.warnings if not w["waived"]][:5]


# --- RTL simulation -------------------------------------------------------------------------------

SIM_CONFIGS = [
    AttentionParams(),  # d = 4, tile = 4, seq_max = 16: lengths 1..16, partial last tiles
    CAUSAL,  # d = 3, tile = 3 (not a power of two), causal with offset 2, dead tiles
    pytest.param(
        AttentionParams(
            head_dim=8, tile=8, seq_max=64, exp_interp="none", exp_lut_bits=8, recip_method="divider", score_width=16
        ),
        marks=pytest.mark.slow,
    ),
    GROUPED,  # groups of 2 (full, partial, closed by size or by last)
    AttentionParams(queries=4),  # groups of 4, partial groups of 3 and 1
    CAUSAL_GROUPED,  # groups of 3 (not a power of two), causal with offset 2, tile 3
    pytest.param(
        AttentionParams(
            head_dim=8,
            tile=8,
            seq_max=64,
            exp_interp="none",
            exp_lut_bits=8,
            recip_method="divider",
            score_width=16,
            queries=4,
        ),
        marks=pytest.mark.slow,
    ),
]


def _id(p):
    return (p.values[0] if hasattr(p, "values") else p).top_name


@pytest.mark.parametrize("params", SIM_CONFIGS, ids=_id)
def test_attention_matches_golden_bit_exactly_with_cycles_equal_to_the_model(params):
    result = verify_block("attention", params)
    assert result.ok, result.table()
    assert len(result.cases) == len(default_cases(params))
    for name, case in result.cases.items():
        assert case["exact"] and case["mismatches"] == 0 and case["extra_beats"] == 0, (name, case)
        if not params.score_width:  # saturated scores are a different function: no float bound
            assert case["max_error_lsb"] <= error_bound_lsb(params), (name, case)
        if case["check_schedule"]:
            assert case["schedule_ok"], (name, case)
        if case["full_rate"]:
            assert case["cycles"] == case["model_cycles"], (name, case)


@pytest.mark.parametrize("hardware", [CAUSAL, CAUSAL_GROUPED], ids=lambda p: p.top_name)
def test_testbench_fails_when_hardware_and_golden_disagree(hardware):
    """The check can fail: the causal hardware (offset 2) checked against the golden model of offset 1
    (same ports; the compiled model of the simulation test is reused). Equal keys make the softmax uniform,
    so the one key the two masks disagree on moves the average (groups: a group of two, the last flag set)."""
    top, verilog, _ = registry.to_verilog(registry.get("attention"), hardware)
    claimed = dataclasses.replace(hardware, causal_offset=1)
    rng = np.random.default_rng(2)
    n, d = hardware.seq_max, hardware.head_dim
    query = {"q": [20] * d, "k": [[30] * d] * n, "v": rng.integers(-128, 128, (n, d)).tolist(), "position": 0}
    queries = [query] if hardware.queries == 1 else [dict(query, last=False), dict(query, position=1, last=True)]
    cases = [{"name": "uniform", "queries": queries, "valid_probability": 1.0, "ready_probability": 1.0}]
    assert not np.array_equal(
        attend_golden(hardware, query["q"], query["k"], query["v"], 0),
        attend_golden(claimed, query["q"], query["k"], query["v"], 0),
    )
    with pytest.raises(SimulationError, match="differ from the golden model"):
        simulate(
            verilog, top, "hardwire.sim.tb_attention", config={"params": claimed.to_dict(), "cases": cases, "seed": 1}
        )
