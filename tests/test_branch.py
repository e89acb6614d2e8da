"""The branching blocks (gen/branch.py: dup, addstreams): parameters, golden models against plain NumPy
arithmetic written here, schedule models on hand-worked cases, and the RTL in Verilator through cocotb (every
output bit-exact against the golden model under bubbles and back-pressure on each stream independently,
every handshake cycle equal to the schedule model with ready sinks), lint-clean Verilog, and a testbench
that can fail."""

from __future__ import annotations

import numpy as np
import pytest
from hardwire.gen import registry
from hardwire.gen.branch import AddParams, DupParams, add_cycles, add_golden, add_schedule, dup_golden, dup_schedule
from hardwire.sim.runner import simulate
from hardwire.sim.tb_branch import default_cases
from hardwire.sim.verify import verify_block

from hardwire.errors import ParameterError, SimulationError


@pytest.mark.parametrize(
    "cls, changes, field",
    [
        (DupParams, {"lanes": 0}, "lanes"),
        (DupParams, {"frame_elements": 6}, "frame_elements"),
        (DupParams, {"elem_width": 33}, "elem_width"),
        (AddParams, {"a_shift": 17}, "a_shift"),
        (AddParams, {"thresholds": (3, 1), "out_width": 2}, "thresholds"),
        (AddParams, {"thresholds": (1, 2, 3, 4), "out_width": 2}, "out_base"),
        (AddParams, {"out_width": 3}, "out_width"),
    ],
)
def test_bad_parameter_names_itself(cls, changes, field):
    with pytest.raises(ParameterError) as error:
        cls(**changes)
    assert error.value.name == field


def test_golden_models_are_the_plain_arithmetic():
    rng = np.random.default_rng(0)
    x = rng.integers(-8, 8, 16)
    a_out, b_out = dup_golden(DupParams(4, 4, True, 16), x)
    assert a_out.tolist() == b_out.tolist() == x.reshape(4, 4).tolist()
    p = AddParams(
        lanes=2,
        a_width=3,
        a_signed=False,
        b_width=4,
        b_signed=True,
        a_shift=1,
        b_shift=0,
        thresholds=(-3, 0, 4),
        out_width=2,
        out_base=0,
        frame_elements=8,
    )
    a, b = rng.integers(0, 8, 8), rng.integers(-8, 8, 8)
    total = [2 * int(u) + int(v) for u, v in zip(a, b)]
    want = [sum(s >= t for t in (-3, 0, 4)) for s in total]
    assert add_golden(p, a, b).reshape(-1).tolist() == want
    raw = AddParams(lanes=2, a_width=3, a_signed=False, b_width=4, b_signed=True, b_shift=2, frame_elements=8)
    assert add_golden(raw, a, b).reshape(-1).tolist() == [int(u) + 4 * int(v) for u, v in zip(a, b)]
    assert raw.sum_range == (-32, 7 + 28)
    with pytest.raises(ParameterError, match="values of b"):
        add_golden(raw, a, np.full(8, 8))


def test_schedules_on_hand_worked_cases():
    assert dup_schedule(DupParams(), [0, 0, 3, 3]) == ([0, 1, 3, 4], [1, 2, 4, 5])
    # beat i is taken when both are presented: a at 0, 0, 5; b at 2, 2, 2 -> 2, 3, 5
    assert add_schedule(AddParams(), [0, 0, 5], [2, 2, 2]) == ([2, 3, 5], [3, 4, 6])
    assert add_cycles(AddParams(lanes=4, frame_elements=16), frames=2) == {
        "latency_cycles": 1,
        "initiation_interval": 4,
        "total_cycles": 9,
        "buffer_bits": 4 * 6,
    }  # sum -8..22: 6 signed bits


SIM_CONFIGS = [
    ("dup", DupParams(lanes=3, elem_width=4, elem_signed=True, frame_elements=12)),
    (
        "addstreams",
        AddParams(
            lanes=2,
            a_width=3,
            a_signed=False,
            b_width=4,
            b_signed=True,
            a_shift=1,
            thresholds=(-5, -1, 0, 2, 3, 3, 9),
            out_width=3,
            out_base=-4,
            frame_elements=8,
        ),
    ),
    (
        "addstreams",
        AddParams(lanes=3, a_width=2, a_signed=True, b_width=5, b_signed=False, b_shift=2, frame_elements=9),
    ),
]


@pytest.mark.parametrize("name, params", SIM_CONFIGS, ids=lambda v: v if isinstance(v, str) else v.top_name)
def test_block_matches_golden_bit_exactly_and_schedule_cycle_exactly(name, params):
    result = verify_block(name, params)
    assert result.ok, (result.failure or "")[-3000:]
    assert set(result.cases) == {"backpressure", "bubbles_schedule", "full_rate", "extremes"}
    for case_name, case in result.cases.items():
        assert case["exact"] and case["mismatches"] == 0 and case["extra_beats"] == 0, (case_name, case)
        if case["check_schedule"]:
            assert case["schedule_accepted_ok"] and case["schedule_produced_ok"], (case_name, case)
    full = result.cases["full_rate"]
    assert full["total_cycles"] == registry.get(name).cycles(params, frames=3)["total_cycles"]


def test_testbench_fails_when_hardware_and_golden_disagree():
    """The check can fail: an add built with a_shift=0 checked as if a_shift were 1."""
    built = AddParams(lanes=2, a_width=3, a_signed=False, b_width=4, b_signed=True, frame_elements=8)
    claimed = AddParams(lanes=2, a_width=3, a_signed=False, b_width=4, b_signed=True, a_shift=1, frame_elements=8)
    top, verilog, _ = registry.to_verilog(registry.get("addstreams"), built)
    cases = [c for c in default_cases(claimed) if c["name"] == "extremes"]
    with pytest.raises(SimulationError, match="differ from addstreams' golden model|golden model"):
        simulate(
            verilog, top, "hardwire.sim.tb_branch", config={"params": claimed.to_dict(), "cases": cases, "seed": 1}
        )


@pytest.mark.parametrize("name, params", SIM_CONFIGS[:2], ids=["dup", "addstreams"])
def test_verilog_is_lint_clean(name, params, tmp_path):
    from hardwire.flows.lint import lint

    top, verilog, _ = registry.to_verilog(registry.get(name), params)
    path = tmp_path / f"{top}.v"
    path.write_text(verilog)
    result = lint([path], top)
    assert result.clean, result
