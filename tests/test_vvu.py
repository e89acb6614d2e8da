"""The vector-vector-threshold unit (depthwise convolution): parameters, the golden model against torch's grouped
conv2d, the schedule model on hand-worked cases, deterministic lint-clean Verilog, and the RTL in Verilator
(bit-exact outputs, handshake cycles equal to the schedule model) on random and extreme windows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hardwire.gen import registry
from hardwire.gen.vvu import (
    VvuParams,
    vvu_cycles,
    vvu_golden,
    vvu_random_content,
    vvu_schedule,
    vvu_threshold_probes,
    window_beats,
)
from hardwire.sim.runner import simulate
from hardwire.sim.tb_vvu import default_cases
from hardwire.sim.verify import verify_block

from hardwire.errors import ParameterError, SimulationError
from hardwire.params import int_range


@pytest.mark.parametrize(
    "changes, name, allowed",
    [
        ({"channels": 0}, "channels", "1..1024"),
        ({"pe": 3}, "pe", "a divisor of channels=8"),
        ({"simd": 2}, "simd", "a divisor of kernel_elements=9"),
        ({"simd": 3}, "simd", "1 unless pe == channels=8"),
        ({"out_width": 9}, "out_width", "0 (raw accumulator) or 1..8"),
        ({"out_base": -3}, "out_base", "out_base..out_base+15"),
    ],
)
def test_bad_parameter_names_itself_its_value_and_the_range(changes, name, allowed):
    with pytest.raises(ParameterError) as error:
        VvuParams(**changes)
    assert error.value.name == name and allowed in str(error.value)


def test_params_round_trip_and_name_every_hardware_change():
    p = VvuParams(channels=6, kernel_elements=4, pe=6, simd=2, in_signed=True, out_base=-8, content_seed=2)
    assert VvuParams.from_dict(p.to_dict()) == p
    names = {
        VvuParams(**c).top_name
        for c in (
            {},
            {"pe": 4},
            {"pe": 8, "simd": 3},
            {"in_width": 3},
            {"out_width": 0},
            {"content_seed": 1},
            {"kernel_elements": 3},
        )
    }
    assert len(names) == 7


GOLDEN_CONFIGS = [
    VvuParams(),
    VvuParams(channels=6, kernel_elements=9, pe=6, simd=3, in_signed=True, out_base=-8),
    VvuParams(channels=4, kernel_elements=25, pe=1, in_width=8, w_width=8, out_width=0),
    VvuParams(channels=3, kernel_elements=4, pe=3, simd=4, in_width=2, w_width=2, out_width=2, out_base=-2),
]


@pytest.mark.parametrize("p", GOLDEN_CONFIGS, ids=lambda p: p.top_name)
def test_golden_is_torch_depthwise_conv2d_then_the_thresholds(p):
    """A (k x k) window's positions in (ky, kx) order: torch's conv2d with groups=C on the window image."""
    k = int(round(p.kernel_elements**0.5))
    weights, thresholds = vvu_random_content(p)
    rng = np.random.default_rng(3)
    lo, hi = int_range(p.in_width, p.in_signed)
    x = np.concatenate(
        [
            rng.integers(lo, hi + 1, (40, p.kernel_elements, p.channels)),
            np.full((1, p.kernel_elements, p.channels), lo),
            np.full((1, p.kernel_elements, p.channels), hi),
            vvu_threshold_probes(p),
        ]
    )
    y = vvu_golden(p, weights, thresholds, x)
    if k * k == p.kernel_elements:
        image = torch.as_tensor(x, dtype=torch.float64).reshape(len(x), k, k, p.channels).permute(0, 3, 1, 2)
        kernel = torch.as_tensor(weights, dtype=torch.float64).reshape(p.channels, 1, k, k)
        acc = torch.nn.functional.conv2d(image, kernel, groups=p.channels).reshape(len(x), p.channels)
    else:
        acc = torch.einsum(
            "vkc,ck->vc", torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(weights, dtype=torch.float64)
        )
    acc = acc.round().to(torch.int64).numpy()
    if thresholds is None:
        assert np.array_equal(y, acc)
    else:
        counts = torch.searchsorted(torch.as_tensor(thresholds), torch.as_tensor(acc).T.contiguous(), right=True).T
        assert np.array_equal(y, counts.numpy() + p.out_base)
        assert len(np.unique(y)) > 2


def test_window_beats_put_positions_outer_and_channels_inner():
    p = VvuParams(channels=4, kernel_elements=2, pe=2)
    window = np.arange(8).reshape(2, 4)  # [position, channel]
    assert window_beats(p, window) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    q = VvuParams(channels=2, kernel_elements=4, pe=2, simd=2)
    assert window_beats(q, np.arange(8).reshape(4, 2)) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_schedule_outputs_the_last_kernel_folds_steps_and_never_stalls_a_ready_sink():
    p = VvuParams(channels=4, kernel_elements=3, pe=2)  # CF = 2, KF = 3: 6 beats per window, 2 outputs
    d = p.output_delay
    accepted, produced = vvu_schedule(p, [0] * 12)
    assert accepted == list(range(12))
    assert produced == [4 + d, 5 + d, 10 + d, 11 + d]
    accepted, produced = vvu_schedule(p, [3, 3, 9, 9, 9, 20])
    assert accepted == [3, 4, 9, 10, 11, 20] and produced == [11 + d, 20 + d]
    summary = vvu_cycles(p, frames=3)
    assert summary["initiation_interval"] == 6 and summary["latency_cycles"] == 4 + d
    assert summary["total_cycles"] == 17 + d + 1
    with pytest.raises(ValueError, match="non-decreasing"):
        vvu_schedule(p, [3, 2])


LINT_CONFIGS = [
    VvuParams(channels=1, kernel_elements=1, pe=1),
    VvuParams(),
    VvuParams(channels=6, kernel_elements=9, pe=6, simd=9, in_signed=True, out_base=-8),
    VvuParams(channels=4, kernel_elements=25, pe=2, in_width=8, w_width=8, out_width=0),
]


@pytest.mark.parametrize("params", LINT_CONFIGS, ids=lambda p: p.top_name)
def test_generated_verilog_is_lint_clean_and_deterministic(params, tmp_path):
    from hardwire.flows.lint import lint

    meta = registry.generate("vvu", params, tmp_path)
    report = lint([meta["verilog"]], meta["top"])
    assert report.clean, [w for w in report.warnings if not w["waived"]][:5]
    assert registry.to_verilog(registry.get("vvu"), params)[1] == registry.to_verilog(registry.get("vvu"), params)[1]


SIM_CONFIGS = [
    # pe = simd = 1: the window generator's one-channel beats, 3 x 3 kernel, unsigned 4-bit thresholds
    VvuParams(channels=3, kernel_elements=9, pe=1),
    # pe = C, simd over the window (whole pixels per beat), signed in and out
    VvuParams(channels=4, kernel_elements=9, pe=4, simd=3, in_signed=True, out_base=-8),
    # one step per window (KF = CF = 1), 2-bit signed outputs
    VvuParams(channels=2, kernel_elements=4, pe=2, simd=4, in_width=2, w_width=2, out_width=2, out_base=-2),
    # raw accumulators, 8-bit operands, a global pool's long window (25 positions), CF = 2
    VvuParams(channels=4, kernel_elements=25, pe=2, in_width=8, in_signed=True, w_width=8, out_width=0),
    # unit weights (average pooling), 1-bit unsigned weights
    pytest.param(
        VvuParams(channels=8, kernel_elements=16, pe=4, w_width=1, w_signed=False, out_width=0), marks=pytest.mark.slow
    ),
]


def _id(p):
    return (p.values[0] if hasattr(p, "values") else p).top_name


@pytest.mark.parametrize("params", SIM_CONFIGS, ids=_id)
def test_vvu_matches_golden_bit_exactly_with_exact_handshake_cycles(params):
    result = verify_block("vvu", params)
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
    built = SIM_CONFIGS[0]
    claimed = dataclasses.replace(built, content_seed=1)
    top, verilog, _ = registry.to_verilog(registry.get("vvu"), built)
    cases = [c for c in default_cases(claimed) if c["name"] == "random_full_rate"]
    with pytest.raises(SimulationError, match="differ from the golden model"):
        simulate(verilog, top, "hardwire.sim.tb_vvu", config={"params": claimed.to_dict(), "cases": cases, "seed": 1})
