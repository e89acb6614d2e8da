"""The softmax unit: its golden model against float64 torch.softmax (error in output LSBs), the cycle model,
parameter errors, lint-clean deterministic Verilog, the CLI, and the RTL in Verilator (cocotb) bit-exact
against the golden model with handshake cycles equal to the schedule model, for every variant."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hardwire.gen import registry
from hardwire.gen.softmax import (
    LANE_PIPELINE_DEPTH,
    VARIANTS,
    SoftmaxParams,
    error_bound_lsb,
    needs_fallback,
    passes_over_input,
    softmax_cycles,
    softmax_golden,
    softmax_golden_details,
    softmax_schedule,
)
from hardwire.sim.runner import simulate
from hardwire.sim.tb_softmax import default_cases
from hardwire.sim.verify import verify_block

from hardwire.errors import ParameterError, PrecisionWarning, SimulationError
from hardwire.params import int_range


def _torch_lsb(p: SoftmaxParams, x) -> np.ndarray:
    real = torch.tensor(np.asarray(x, dtype=np.float64) / 2.0**p.in_frac, dtype=torch.float64)
    return torch.softmax(real, dim=0).numpy() * 2.0**p.out_width


def _vectors(p: SoftmaxParams, count: int, seed: int = 0) -> list[np.ndarray]:
    """Random vectors of random length (a third of them crowded near the top codes), plus the extremes."""
    rng = np.random.default_rng(seed)
    lo, hi = int_range(p.in_width, True)
    out = []
    for i in range(count):
        n = int(rng.integers(1, p.n_max + 1))
        low = lo if i % 3 else hi - 2**p.in_frac * 3
        out.append(rng.integers(low, hi + 1, n))
    for case in default_cases(p, seed=seed):
        out.extend(np.asarray(v) for v in case["vectors"])
    return out


def _errors(p: SoftmaxParams, vectors) -> tuple[np.ndarray, np.ndarray]:
    got = np.concatenate([softmax_golden(p, v) for v in vectors])
    ref = np.concatenate([_torch_lsb(p, v) for v in vectors])
    return np.abs(got - ref), ref


# --- golden model vs float64 -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_golden_is_within_one_lsb_of_float64_softmax_at_8_bits(variant):
    """<= 1 LSB everywhere (the 1 LSB is p = 1.0 saturating to 255/256); <= 0.75 LSB where not saturated."""
    p = SoftmaxParams(variant=variant, n_max=32)
    error, ref = _errors(p, _vectors(p, 300))
    assert error.max() <= 1.0
    unsaturated = ref < 2**p.out_width - 1
    assert error[unsaturated].max() <= 0.75, error[unsaturated].max()
    assert error.mean() < 0.25


def _adversarial(p: SoftmaxParams, seed: int = 0) -> list[np.ndarray]:
    """Length 1 and 2, all equal, one dominant, two tied maxima, ramps (one code apart: online rescales at every
    element), alternating extremes, one dominant over n - 1 equal elements at gaps that put their exp near
    the sum's LSB (where truncation costs most), Gaussians of several widths and uniform codes."""
    rng = np.random.default_rng([seed, p.n_max, p.out_width])
    lo, hi = int_range(p.in_width, True)
    n, one = p.n_max, 2**p.in_frac
    index = np.arange(n)
    vectors = [
        np.array([0]),
        np.array([lo]),
        np.array([hi]),
        np.array([hi, lo]),
        np.array([3, 3]),
        np.array([hi, hi - 1]),
        np.full(n, hi),
        np.full(n, lo),
        np.zeros(n, dtype=np.int64),
        np.array([hi] + [lo] * (n - 1)),
        np.array([lo] * (n - 1) + [hi]),
        np.array([hi, hi] + [lo] * (n - 2)),
        np.array([lo] * (n - 2) + [hi, hi]),
        np.clip(lo + index, lo, hi),
        np.clip(hi - index, lo, hi),
        lo + index * (hi - lo) // (n - 1),
        np.where(index % 2 == 0, hi, lo),
    ]
    for gap in np.linspace(1.0, (p.sum_frac + 2) * np.log(2), 12):
        if hi - round(gap * one) >= lo:
            rest = [hi - round(gap * one)] * (n - 1)
            vectors += [np.array([hi] + rest), np.array(rest + [hi])]
    for sd in (0.25, 1.0, 4.0, 16.0):
        vectors += [np.clip(np.round(rng.normal(0, sd * one, n)), lo, hi).astype(np.int64) for _ in range(2)]
    vectors.append(rng.integers(lo, hi + 1, n))
    return vectors


def _numpy_lsb(p: SoftmaxParams, x) -> np.ndarray:
    """float64 softmax in output LSBs (NumPy: the long sweeps call it thousands of times)."""
    real = np.asarray(x, dtype=np.float64) / 2.0**p.in_frac
    e = np.exp(real - real.max())
    return e / e.sum() * 2.0**p.out_width


def _worst_adversarial_error(p: SoftmaxParams) -> float:
    return max(float(np.abs(softmax_golden(p, x) - _numpy_lsb(p, x)).max()) for x in _adversarial(p))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("out_width, n_max", [(8, 2), (12, 1024), (16, 4096), (16, 64)])
def test_default_precisions_meet_one_lsb_on_adversarial_vectors(variant, out_width, n_max):
    """Defaults only (the precisions derive from out_width and n_max): the analytic bound is <= 1 LSB and the
    golden model stays within it on vectors chosen to hurt."""
    p = SoftmaxParams(variant=variant, out_width=out_width, n_max=n_max)
    assert error_bound_lsb(p) <= 1.0
    assert _worst_adversarial_error(p) <= error_bound_lsb(p)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("in_width, in_frac", [(8, 4), (16, 8), (12, 2)])
def test_default_precisions_meet_the_bound_at_every_width_and_length(variant, in_width, in_frac):
    for out_width in range(8, 17):
        for n_max in (2, 16, 256, 1024, 4096):
            p = SoftmaxParams(variant=variant, out_width=out_width, n_max=n_max, in_width=in_width, in_frac=in_frac)
            assert _worst_adversarial_error(p) <= error_bound_lsb(p), p


def test_the_derived_bound_is_one_lsb_for_every_variant_width_and_length():
    """Except online with many fine input codes at 15-16 bits: its bound compounds the exp's error over up to
    (ln n + 1) 2**in_frac rescales, and the exp is then at its widest (mant_frac 30, 12 table bits)."""
    for variant in VARIANTS:
        for out_width in range(8, 17):
            for n_max in (2, 16, 64, 256, 1024, 4096):
                for in_width, in_frac in ((8, 4), (16, 8)):
                    p = SoftmaxParams(
                        variant=variant, out_width=out_width, n_max=n_max, in_width=in_width, in_frac=in_frac
                    )
                    if error_bound_lsb(p) > 1.0:
                        assert variant in ("online", "online_pipelined"), p
                        assert (in_frac, p.mant_frac, p.exp_lut_bits) == (8, 30, 12), p
                        assert error_bound_lsb(p) <= 2.0, p


def test_a_16_bit_output_is_accepted_with_default_precisions():
    p = SoftmaxParams(out_width=16, n_max=1024, in_width=16, in_frac=8)
    assert p.recip_frac > 16 and p.mant_frac > 16


def test_old_fixed_precisions_break_the_bound_at_16_bits_and_warn():
    """The adversarial check has teeth: the precisions that were the defaults before they derived from the
    output width (mant_frac 16, 6 table bits, no guard bits) miss 1 LSB at 16 bits, and the warning says so."""
    old = {
        "mant_frac": 16,
        "exp_lut_bits": 6,
        "recip_frac": 24,
        "recip_lut_bits": 8,
        "log2e_frac": 18,
        "sum_guard_bits": 0,
    }
    with pytest.warns(PrecisionWarning, match=r"the error bound is [\d.e+]+ output LSB"):
        p = SoftmaxParams(variant="online", out_width=16, n_max=256, **old)
    assert error_bound_lsb(p) > 1.0
    assert _worst_adversarial_error(p) > 1.0


def test_a_more_accurate_user_precision_is_taken_without_a_warning(recwarn):
    p = SoftmaxParams(out_width=8, recip_frac=28)
    assert p.recip_frac == 28 and error_bound_lsb(p) <= 1.0
    assert not [w for w in recwarn if issubclass(w.category, PrecisionWarning)]
    assert SoftmaxParams.from_dict(SoftmaxParams(out_width=12).to_dict()) == SoftmaxParams(out_width=12)


def test_a_coarse_exp_table_breaks_the_one_lsb_bound():
    """The error check has teeth: a 3-bit midpoint exp table misses the 1-LSB target."""
    with pytest.warns(PrecisionWarning):
        p = SoftmaxParams(variant="three_pass", n_max=32, exp_lut_bits=3, exp_interp="none")
    error, _ = _errors(p, _vectors(p, 200))
    assert error.max() > 1.5
    assert error.max() <= error_bound_lsb(p)


def test_golden_sums_sit_on_the_documented_formats():
    p = SoftmaxParams(variant="three_pass", n_max=16)
    x = np.array([16, 0, -16, -128])
    details = softmax_golden_details(p, x)
    assert details["reference"] == 16
    assert details["exponent"][0] == 0 and details["mantissa"][0] == 1 << p.mant_frac  # exp(0) = 1 exactly
    s = details["sum"] / 2**p.sum_frac
    assert s == pytest.approx(float(np.exp((x - 16) / 16).sum()), rel=1e-4)
    # two_pass: no max, (Macc, K) holds the sum as Macc * 2**(K - mant_frac)
    q = dataclasses.replace(p, variant="two_pass")
    two = softmax_golden_details(q, x)
    assert two["sum"] * 2.0 ** (int(two["exponent"].max()) - q.sum_frac) == pytest.approx(
        float(np.exp(x / 16).sum()), rel=1e-4
    )


def test_two_pass_and_online_sums_never_overflow_at_the_extremes():
    lo, hi = int_range(8, True)
    for variant in ("two_pass", "online", "three_pass"):
        p = SoftmaxParams(variant=variant, n_max=1024)
        for x in (np.full(1024, hi), np.full(1024, lo), np.arange(1024) % 256 - 128, 127 - np.arange(1024) % 256):
            details = softmax_golden_details(p, x)  # asserts 0 < sum < 2**sum_width inside
            assert details["sum"] < 1 << p.sum_width
            assert abs(int(details["out"].sum()) - 256) <= 1024  # each output within 1 LSB of the true share


def test_online_rescaling_is_exercised_and_changes_the_sum_only_by_truncation():
    p = SoftmaxParams(variant="online", n_max=16)
    q = dataclasses.replace(p, variant="three_pass")
    x = np.arange(-64, 64, 8)  # increasing: the max grows at every element
    online, three = softmax_golden_details(p, x), softmax_golden_details(q, x)
    assert online["sum"] != three["sum"]
    assert abs(online["sum"] - three["sum"]) <= len(x) * 2
    assert np.abs(online["out"] - three["out"]).max() <= 1


def test_unified_max_falls_back_outside_the_window_only():
    p = SoftmaxParams(variant="unified_max", max_estimate=48, estimate_window=32)
    assert not needs_fallback(p, np.array([48, -100]))
    assert not needs_fallback(p, np.array([16, 0]))
    assert needs_fallback(p, np.array([49, 0]))
    assert needs_fallback(p, np.array([15, 0]))
    assert softmax_golden_details(p, np.array([20, 3]))["reference"] == 48
    assert softmax_golden_details(p, np.array([60, 3]))["reference"] == 60


# --- cycle model -----------------------------------------------------------------------------------


def test_cycle_model_counts_passes_and_pipeline_delays():
    for variant in VARIANTS:
        if variant == "online_pipelined":  # its own test below
            continue
        p = SoftmaxParams(variant=variant, n_max=16)
        x_delay, recip = p.exp_delay, p.recip_spec.latency
        acc_delay = p.acc_delay
        # fixmath: exp 3 (linear), reciprocal 7 (newton), scale-and-round 3; the sum's pre-stage 1
        assert (x_delay, acc_delay, recip, p.output_delay) == (5, 6, 7, 8)
        c = softmax_cycles(p, 16)
        passes = passes_over_input(p)
        assert c["passes"] == passes == (3 if variant == "three_pass" else 2)
        # one vector: load n, (sum pass n), drain X_acc, reciprocal, output delay
        sum_pass = 16 if passes == 3 else 0
        assert c["latency_cycles"] == 15 + sum_pass + acc_delay + 1 + recip + p.output_delay
        # back to back, double-buffered: the front end takes load (+ sum pass) + drain per vector; with two
        # banks a vector's load also waits for the vector two before to finish normalizing, which binds when
        # the front end is faster than reciprocal + normalize (two_pass, online, unified_max: 22 or 23 cycles)
        front = 16 + sum_pass + acc_delay
        banks = (16 + acc_delay + recip + 16) / 2
        assert c["initiation_interval"] == max(front, banks)
        assert c["elements_per_cycle"] == 16 / c["initiation_interval"]
        assert c["buffer_bits"] == 2 * 16 * 8
    fallback = softmax_cycles(SoftmaxParams(variant="unified_max"), 16, fallback=True)
    assert fallback["passes"] == 3
    assert fallback["initiation_interval"] == softmax_cycles(SoftmaxParams(), 16)["initiation_interval"]


def test_back_to_back_length_64_vectors_reach_0_9_elements_per_cycle():
    """The issue's target: >= 0.9 elements per cycle for the single-sweep variants at n = 64 (the three-pass
    ones are bound by their second pass over the input: about half)."""
    for variant in ("two_pass", "online", "unified_max", "online_pipelined"):
        assert softmax_cycles(SoftmaxParams(variant=variant, n_max=64))["elements_per_cycle"] >= 0.9
    assert softmax_cycles(SoftmaxParams(variant="three_pass", n_max=64))["elements_per_cycle"] > 0.45


def test_schedule_waits_for_late_inputs_and_for_the_bank_it_loads_into():
    p = SoftmaxParams(variant="online", n_max=4)
    accepted, produced = softmax_schedule(p, [[0, 0], [0], [0, 0, 0]], [5, 9, 9, 9, 9, 9])
    assert accepted[:2] == [5, 9]
    handoff = 9 + p.acc_delay
    start = handoff + 1 + p.recip_spec.latency
    assert produced[:2] == [start + p.output_delay, start + 1 + p.output_delay]
    # the second vector loads into the other bank while the first is in the reciprocal and normalizing
    assert accepted[2] == handoff + 1 < produced[0]
    # the third goes into the first's bank: after the second's hand-off and the first's last normalize issue
    # (the first's reciprocal is done at `start`; its last normalize issue is start + 1, which binds here)
    second_handoff = max(accepted[2] + p.acc_delay, start)
    assert accepted[3] == start + 1 + 1 > second_handoff + 1
    with pytest.raises(ValueError, match="non-decreasing"):
        softmax_schedule(p, [[0, 0]], [3, 2])


# --- online_pipelined: lanes, their combination, its cycle model -----------------------------------


def _pipelined_vectors(p: SoftmaxParams, seed: int = 0) -> list[np.ndarray]:
    """The adversarial vectors, plus every length around the lane count's multiples and the extremes at each:
    all equal, one huge (at each lane's position), all minimum."""
    rng = np.random.default_rng([seed, p.lanes, p.n_max])
    lo, hi = int_range(p.in_width, True)
    vectors = _adversarial(p, seed)
    for n in sorted({1, 2, p.lanes - 1, p.lanes, p.lanes + 1, 2 * p.lanes - 1, 2 * p.lanes + 1, p.n_max}):
        if n > p.n_max:
            continue
        vectors += [rng.integers(lo, hi + 1, n), np.full(n, hi), np.full(n, lo), np.full(n, 0)]
        for position in range(min(n, p.lanes + 1)):
            huge = np.full(n, lo)
            huge[position] = hi
            vectors.append(huge)
    return vectors


@pytest.mark.parametrize(
    "lanes, n_max, out_width", [(LANE_PIPELINE_DEPTH, 64, 8), (7, 20, 8), (13, 64, 12), (6, 1024, 16)]
)
def test_online_pipelined_golden_is_within_its_bound_of_float64_softmax(lanes, n_max, out_width):
    """The stated bound (`error_bound_lsb`: each lane's rescales plus the one combining rescale and the
    per-lane truncation) is 1 LSB with the derived precisions, and the golden model keeps it on adversarial
    vectors, extremes and lengths that are no multiple of the lane count."""
    p = SoftmaxParams(variant="online_pipelined", n_max=n_max, lanes=lanes, out_width=out_width)
    assert error_bound_lsb(p) <= 1.0
    worst = max(float(np.abs(softmax_golden(p, x) - _numpy_lsb(p, x)).max()) for x in _pipelined_vectors(p))
    assert worst <= error_bound_lsb(p), worst


def test_online_pipelined_lanes_hold_each_lanes_max_and_combine_in_the_order_of_their_last_elements():
    p = SoftmaxParams(variant="online_pipelined", n_max=32, lanes=7)
    rng = np.random.default_rng(5)
    for n in (1, 3, 6, 7, 8, 13, 14, 15, 32):
        x = rng.integers(-128, 128, n)
        details = softmax_golden_details(p, x)
        lanes = details["lanes"]
        used = min(n, 7)
        assert lanes["order"] == [(n - used + q) % 7 for q in range(used)]
        assert lanes["max"] == [int(x[j::7].max()) for j in lanes["order"]]
        assert details["sum"] == sum(lanes["rescaled"]) and details["reference"] == int(x.max())
        # each lane's sum, rescaled to the vector's max, is close to its share of sum exp(x - M)
        for j, rescaled in zip(lanes["order"], lanes["rescaled"]):
            share = float(np.exp((x[j::7] - x.max()) / 16.0).sum())
            assert rescaled / 2**p.sum_frac == pytest.approx(share, rel=1e-5, abs=2.0**-p.mant_frac * n)


def test_online_pipelined_sum_is_the_three_pass_sum_up_to_one_element_per_lane():
    """With at most one element per lane each lane holds exp(0) exactly; rescaled to the max it is the three-pass
    term (m << g) >> -k bit for bit, so the two sums and outputs agree exactly (same precisions)."""
    p = SoftmaxParams(variant="online_pipelined", n_max=16, lanes=9)
    q = SoftmaxParams(
        variant="three_pass",
        n_max=16,
        **{
            name: getattr(p, name)
            for name in ("mant_frac", "exp_lut_bits", "recip_frac", "recip_lut_bits", "log2e_frac", "sum_guard_bits")
        },
    )
    rng = np.random.default_rng(3)
    for n in range(1, 10):
        for x in (rng.integers(-128, 128, n), np.full(n, -128), np.full(n, 127), np.arange(n) * 30 - 128):
            assert softmax_golden_details(p, x)["sum"] == softmax_golden_details(q, x)["sum"]
            assert np.array_equal(softmax_golden(p, x), softmax_golden(q, x))


def test_online_pipelined_parameters_round_trip_and_name_the_lanes():
    p = SoftmaxParams(variant="online_pipelined", n_max=16)
    assert p.lanes == LANE_PIPELINE_DEPTH and p.banks == 3 and p.buffer_bits == 3 * 16 * 8
    assert p.exp_spec.product_stages == 2 and p.scale_spec.product_stages == 2
    seven = SoftmaxParams(variant="online_pipelined", n_max=16, lanes=7)
    assert seven.top_name.endswith("_L7") and SoftmaxParams.from_dict(seven.to_dict()) == seven
    assert SoftmaxParams(variant="online").lanes is None


def test_online_pipelined_cycle_model_overlaps_the_combination_with_the_next_load():
    """Back to back at n = 64 the front end takes n + L cycles per vector (n loads, L combinations), and the
    three banks keep the reciprocal and the normalization off the critical loop: >= 0.9 elements per cycle."""
    p = SoftmaxParams(variant="online_pipelined", n_max=64)
    L, P, acc, recip = p.lanes, LANE_PIPELINE_DEPTH, p.acc_delay, p.recip_spec.latency
    # exp: 3 stages + 1 per split product (d * log2e, the chord); scale-and-round 3 + 1; the back end also
    # registers the buffer's output and the scale-and-round's operands, and queues the output
    assert (p.exp_delay, acc, p.output_delay) == (2 + 5, 7 + 2, 7 + 4 + 3)
    c = softmax_cycles(p, 64)
    assert c["initiation_interval"] == 64 + L and c["elements_per_cycle"] >= 0.9
    # one vector: accepts 0..n-1, combinations n..n+L-1, the last one added at n + L - 1 + acc + P - 1,
    # the hand-off a cycle later, the reciprocal, the normalization
    handoff = 64 + L - 1 + acc + P
    assert c["latency_cycles"] == handoff + 1 + recip + p.output_delay


def test_online_pipelined_schedule_waits_for_the_lanes_and_for_the_previous_hand_off():
    p = SoftmaxParams(variant="online_pipelined", n_max=16)
    P, acc, recip = LANE_PIPELINE_DEPTH, p.acc_delay, p.recip_spec.latency
    accepted, produced = softmax_schedule(p, [[0], [0], [0] * 3], [0, 0, 0, 0, 0])
    # length 1: its one lane is read by the combination only after its update is written (P cycles later)
    first_combination = 0 + P
    first_handoff = first_combination + acc + P
    assert produced[0] == first_handoff + 1 + recip + p.output_delay
    # the next vector loads right after the combination, but combines only after the first hand-off
    assert accepted[1] == first_combination + 1
    second_handoff = max(first_handoff + 1 + acc + P, first_handoff + 1 + recip)
    assert produced[1] == max(second_handoff + 1 + recip, produced[0] - p.output_delay + 1) + p.output_delay
    assert accepted[2] == first_handoff + 1 + 1


# --- parameters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, named",
    [
        ({"variant": "four_pass"}, "variant='four_pass'"),
        ({"n_max": 1}, "n_max=1"),
        ({"in_frac": 9}, "in_frac=9"),
        ({"recip_frac": 8}, "recip_frac=8"),
        ({"exp_lut_bits": 16}, "lut_bits=16"),
        ({"recip_method": "srt"}, "recip_method='srt'"),
        ({"sum_guard_bits": 17}, "sum_guard_bits=17"),
        ({"max_estimate": 200}, "max_estimate=200"),
        ({"variant": "unified_max", "estimate_window": 250}, "estimate_window=250"),
        ({"variant": "online_pipelined", "lanes": LANE_PIPELINE_DEPTH - 1}, f"lanes={LANE_PIPELINE_DEPTH - 1}"),
        ({"variant": "online_pipelined", "lanes": 65}, "lanes=65"),
        ({"variant": "online", "lanes": 8}, "lanes=8"),
    ],
)
def test_bad_parameters_are_named(bad, named):
    with pytest.raises(ParameterError, match=named.replace("(", r"\(")):
        SoftmaxParams(**bad)


def test_golden_rejects_bad_vectors():
    p = SoftmaxParams(n_max=4)
    with pytest.raises(ParameterError, match="vector length"):
        softmax_golden(p, np.zeros(5, dtype=np.int64))
    with pytest.raises(ParameterError, match="x=128"):
        softmax_golden(p, np.array([0, 128]))


# --- Verilog: deterministic, lint-clean, CLI -------------------------------------------------------


def test_generated_verilog_is_byte_identical_across_processes():
    script = (
        "from hardwire.gen import registry; from hardwire.gen.softmax import SoftmaxParams; "
        "print(registry.to_verilog(registry.get('softmax'), SoftmaxParams(variant='online', n_max=8))[1])"
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
    assert runs[0] == runs[1] and "module softmax_online_n8" in runs[0]


LINT_CONFIGS = [
    SoftmaxParams(variant="three_pass", n_max=8),
    SoftmaxParams(variant="two_pass", n_max=5, exp_interp="none", recip_method="divider"),
    SoftmaxParams(variant="online", n_max=64, out_width=16),
    SoftmaxParams(variant="unified_max", n_max=2, in_width=6, in_frac=2, max_estimate=-3, estimate_window=8),
    SoftmaxParams(variant="online_pipelined", n_max=64),
    SoftmaxParams(
        variant="online_pipelined", n_max=5, lanes=9, out_width=16, exp_interp="none", recip_method="divider"
    ),
]


@pytest.mark.parametrize("params", LINT_CONFIGS, ids=lambda p: p.top_name)
def test_generated_verilog_is_lint_clean(params, tmp_path):
    from hardwire.flows.lint import lint

    meta = registry.generate("softmax", params, tmp_path)
    report = lint([meta["verilog"]], meta["top"])
    assert report.clean, [w for w in report.warnings if not w["waived"]][:5]


def test_cli_generates_the_online_variant(tmp_path):
    from hardwire.cli import main

    assert main(["gen", "softmax", "--variant", "online", "--n-max", "8", "-o", str(tmp_path)]) == 0
    top = SoftmaxParams(variant="online", n_max=8).top_name
    meta = json.loads((tmp_path / f"{top}.json").read_text())
    assert meta["params"]["variant"] == "online" and meta["params"]["n_max"] == 8
    assert {port["name"] for port in meta["ports"]} >= {"inp__payload", "inp__valid", "out__ready"}
    assert f"module {top}" in (tmp_path / f"{top}.v").read_text()
    assert meta["error_bound_lsb"] == error_bound_lsb(SoftmaxParams(variant="online", n_max=8)) <= 1.0


def test_cli_states_the_error_bound_and_warns_in_one_line(tmp_path, capsys):
    from hardwire.cli import main

    assert main(["gen", "softmax", "--out-width", "16", "--n-max", "1024", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "analytic error bound: <= 1 output LSB vs float64 torch.softmax" in out
    assert main(["gen", "softmax", "--out-width", "16", "--mant-frac", "16", "-o", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith("hardwire: warning: softmax mant_frac=16: the error bound")
    bound = float(warning[0].split("the error bound is ")[1].split()[0])
    assert f"<= {bound:.3g} output LSB" in captured.out and bound > 1


# --- RTL simulation --------------------------------------------------------------------------------


def _coarse(**values) -> SoftmaxParams:
    """A configuration below its derived precision on purpose (its PrecisionWarning is expected)."""
    with pytest.warns(PrecisionWarning):
        return SoftmaxParams(**values)


# the precisions are the derived defaults, except the table-only exp's index bits (8, not the 12 its bound
# would take)
SIM_CONFIGS = [
    SoftmaxParams(variant="three_pass", n_max=8),
    SoftmaxParams(variant="online", n_max=8),
    # table-only exp, divider reciprocal, 12-bit output
    _coarse(variant="two_pass", n_max=6, out_width=12, exp_interp="none", exp_lut_bits=8, recip_method="divider"),
    SoftmaxParams(variant="unified_max", n_max=7, in_width=7, in_frac=3, max_estimate=20, estimate_window=16),
    SoftmaxParams(variant="online_pipelined", n_max=8),
    # seven lanes (a count that is not a power of two), lengths up to 20, a 12-bit output, the divider
    SoftmaxParams(variant="online_pipelined", n_max=20, lanes=7, out_width=12, recip_method="divider"),
    pytest.param(SoftmaxParams(variant="online_pipelined", n_max=64), marks=pytest.mark.slow),
    pytest.param(SoftmaxParams(variant="online", n_max=64, out_width=16), marks=pytest.mark.slow),
    pytest.param(
        SoftmaxParams(variant="three_pass", n_max=33, in_width=12, in_frac=8, recip_method="divider"),
        marks=pytest.mark.slow,
    ),
]


def _id(p):
    return (p.values[0] if hasattr(p, "values") else p).top_name


@pytest.mark.parametrize("params", SIM_CONFIGS, ids=_id)
def test_softmax_rtl_is_bit_exact_with_the_modelled_cycles(params):
    result = verify_block("softmax", params)
    assert result.ok, result.table()
    assert len(result.cases) == len(default_cases(params))
    for name, case in result.cases.items():
        assert case["exact"] and case["mismatches"] == 0 and case["extra_beats"] == 0, (name, case)
        if case["check_schedule"]:
            assert case["schedule_ok"], (name, case)
        if case["full_rate"]:
            assert case["cycles"] == case["model_cycles"], (name, case)
        # <= 1 LSB with the derived precisions; the table-only exp (8 index bits) at 12-bit output measured 1.26
        assert case["max_error_lsb"] <= (1.0 if params.exp_interp == "linear" else 1.5), (name, case)
        assert case["max_error_lsb"] <= error_bound_lsb(params), (name, case)
    if params.variant == "unified_max":
        both = result.cases["estimate_holds_and_falls_back"]
        assert 0 < both["fallbacks"] < both["shape"][0]  # both paths ran


def test_testbench_fails_when_hardware_and_golden_disagree():
    """The check can fail: the three_pass hardware (the first simulated configuration: its model is reused)
    checked against the golden model of a coarser exp table (one chord)."""
    built = SIM_CONFIGS[0]
    with pytest.warns(PrecisionWarning):
        claimed = dataclasses.replace(built, exp_lut_bits=1)
    top, verilog, _ = registry.to_verilog(registry.get("softmax"), built)
    cases = [c for c in default_cases(claimed) if c["name"] == "random_full_rate"]
    assert any(not np.array_equal(softmax_golden(built, v), softmax_golden(claimed, v)) for v in cases[0]["vectors"])
    with pytest.raises(SimulationError, match="differ from the golden model"):
        simulate(
            verilog, top, "hardwire.sim.tb_softmax", config={"params": claimed.to_dict(), "cases": cases, "seed": 1}
        )
