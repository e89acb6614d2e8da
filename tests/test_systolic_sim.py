"""The systolic array's RTL in Verilator (cocotb), every output compared bit for bit with torch.matmul,
and measured cycles compared with the cycle model. Each configuration runs the testbench's default cases:
a random GEMM that needs tiling in M, K and N, all-min / all-max / min x max / max x min extremes at
K = 3R + 1, mixed extremes, zeros, alternating bits, a 1x1x1 product and a back-pressured random run."""

from __future__ import annotations

import pytest
from hardwire.gen import registry
from hardwire.gen.systolic import SystolicParams
from hardwire.sim.runner import simulate
from hardwire.sim.tb_systolic import default_cases
from hardwire.sim.verify import verify_block

from hardwire.errors import SimulationError

CONFIGS = [
    SystolicParams(rows=1, cols=1),
    SystolicParams(rows=1, cols=1, dataflow="output_stationary"),
    SystolicParams(rows=2, cols=3, dataflow="output_stationary", a_signed=False, pipeline=1),
    SystolicParams(rows=3, cols=2, w_signed=False, acc_depth=4, pipeline=1),  # M chunked by acc_depth
    SystolicParams(rows=4, cols=4, a_width=4, w_width=4),  # INT4
    SystolicParams(rows=4, cols=4, a_width=4, w_width=4, dataflow="output_stationary"),
    SystolicParams(rows=2, cols=2, a_width=16, w_width=2, a_signed=False, w_signed=False),
    SystolicParams(rows=2, cols=2, acc_width=17),  # narrow accumulator: wraps
    SystolicParams(rows=8, cols=8),
    SystolicParams(rows=8, cols=8, dataflow="output_stationary"),
    SystolicParams(rows=16, cols=16),
    pytest.param(SystolicParams(rows=16, cols=16, dataflow="output_stationary"), marks=pytest.mark.slow),
    pytest.param(SystolicParams(rows=16, cols=16, pipeline=1, a_width=16, w_width=16), marks=pytest.mark.slow),
    # hard DSP PEs (gen.dsp), simulated with the primitives' models: MULT18X18D with its four registers,
    # DSP48E1 with the column sums cascaded PCOUT -> PCIN
    SystolicParams(rows=3, cols=2, dsp="ecp5", acc_depth=4),
    pytest.param(
        SystolicParams(rows=2, cols=2, a_width=16, w_width=2, a_signed=False, w_signed=False, dsp="ecp5"),
        marks=pytest.mark.slow,
    ),
    SystolicParams(rows=3, cols=2, w_signed=False, acc_width=56, dsp="dsp48e1"),  # P sign-extended past 48
    pytest.param(SystolicParams(rows=2, cols=3, acc_width=17, dsp="dsp48e1"), marks=pytest.mark.slow),
    # INT8 packing on DSP48E2: two columns per DSP sharing the activation, up to the 8-row limit
    SystolicParams(rows=4, cols=4, dsp="dsp48e2"),
    # unsigned activations: 4 rows at most
    pytest.param(SystolicParams(rows=4, cols=2, a_signed=False, acc_depth=4, dsp="dsp48e2"), marks=pytest.mark.slow),
    pytest.param(SystolicParams(rows=8, cols=8, dsp="dsp48e2"), marks=pytest.mark.slow),
    pytest.param(SystolicParams(rows=2, cols=2, w_width=4, acc_width=18, dsp="dsp48e2"), marks=pytest.mark.slow),
    pytest.param(SystolicParams(rows=8, cols=8, dsp="ecp5"), marks=pytest.mark.slow),
    pytest.param(SystolicParams(rows=8, cols=8, dsp="dsp48e1"), marks=pytest.mark.slow),
]


def _id(p):
    return (p.values[0] if hasattr(p, "values") else p).top_name


@pytest.mark.parametrize("params", CONFIGS, ids=_id)
def test_systolic_matches_torch_matmul_bit_exactly_with_modelled_cycles(params):
    result = verify_block("systolic", params)
    assert result.ok, result.table()
    for name, case in result.cases.items():
        assert case["exact"] and case["mismatches"] == 0, (name, case)
        assert case["golden_equals_torch"] and case["last_flags_ok"] and case["extra_beats"] == 0, (name, case)
        if case["check_cycles"]:
            assert case["cycles"] == case["model_cycles"], (name, case)


def test_testbench_fails_when_hardware_and_reference_disagree():
    """The check can fail: hardware built with unsigned weights, checked as if they were signed."""
    built = SystolicParams(rows=2, cols=2, w_signed=False)
    claimed = SystolicParams(rows=2, cols=2, w_signed=True)
    top, verilog, _ = registry.to_verilog(registry.get("systolic"), built)
    cases = [c for c in default_cases(claimed) if c["name"] in ("all_min", "random_tiled")]
    config = {"params": claimed.to_dict() | {"name": top}, "cases": cases, "seed": 1}
    with pytest.raises(SimulationError):
        simulate(verilog, top, "hardwire.sim.tb_systolic", config=config)
