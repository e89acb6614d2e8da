"""The systolic array: parameters, golden model, tiling driver, cycle model (fast, no simulator), then the
RTL in Verilator through cocotb against torch.matmul, lint, synthesis and the CLI."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from hardwire.gen import registry
from hardwire.gen.systolic import (
    SystolicParams,
    assemble_results,
    gemm_cycles,
    gemm_utilization,
    plan_gemm,
    systolic_golden,
)

from hardwire.errors import ParameterError
from hardwire.params import int_range, wrap

# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("rows", 0, "1..64"),
        ("cols", 65, "1..64"),
        ("a_width", 1, "2..16"),
        ("w_width", 17, "2..16"),
        ("dataflow", "row_stationary", "weight_stationary or output_stationary"),
        ("pipeline", 2, "0 or 1"),
        ("acc_width", 8, "16..64"),
        ("k_max", 0, "1..1048576"),
        ("acc_depth", 0, "1..65536"),
        ("dsp", "dsp48e9", "inferred or ecp5 or dsp48e1 or dsp48e2"),
    ],
)
def test_bad_parameter_names_itself_its_value_and_the_range(field, value, allowed):
    with pytest.raises(ParameterError) as error:
        SystolicParams(**{field: value})
    assert error.value.name == field
    assert repr(value) in str(error.value) and allowed in str(error.value)


@pytest.mark.parametrize(
    "a_width, w_width, a_signed, w_signed, k_max",
    list(itertools.product((2, 3, 8), (2, 5), (True, False), (True, False), (1, 3, 100))),
)
def test_derived_acc_width_is_the_narrowest_that_holds_every_k_max_deep_dot_product(
    a_width, w_width, a_signed, w_signed, k_max
):
    p = SystolicParams(a_width=a_width, w_width=w_width, a_signed=a_signed, w_signed=w_signed, k_max=k_max)
    a_lo, a_hi = int_range(a_width, a_signed)
    w_lo, w_hi = int_range(w_width, w_signed)
    products = [a * w for a in (a_lo, a_hi) for w in (w_lo, w_hi)]
    lo, hi = k_max * min(products), k_max * max(products)
    fits = lambda width: int_range(width, p.acc_signed)[0] <= lo and hi <= int_range(width, p.acc_signed)[1]  # noqa
    assert fits(p.acc_bits) and not fits(p.acc_bits - 1)


# --- golden model and tiling driver ---------------------------------------------------------------


def test_golden_matches_torch_matmul_and_rejects_out_of_range_operands():
    rng = np.random.default_rng(0)
    p = SystolicParams(a_width=8, w_width=4, w_signed=False)
    a = rng.integers(-128, 128, (13, 40))
    w = rng.integers(0, 16, (40, 7))
    torch_y = torch.matmul(torch.tensor(a), torch.tensor(w)).numpy()
    assert np.array_equal(systolic_golden(p, a, w), torch_y)
    with pytest.raises(ParameterError, match="W values"):
        systolic_golden(p, a, -w - 1)
    with pytest.raises(ParameterError, match="K"):
        systolic_golden(SystolicParams(k_max=8), a, w)


def test_golden_wraps_like_an_acc_width_register():
    p = SystolicParams(a_width=8, w_width=8, acc_width=16)
    a = np.full((1, 4), -128)
    w = np.full((4, 1), -128)
    assert systolic_golden(p, a, w)[0, 0] == wrap(4 * 128 * 128, 16, True)[()] == 0


def _emulate_beats(p: SystolicParams, plan) -> list[list[int]]:
    """What the array's streams carry, computed beat by beat in Python (no RTL): checks the driver alone."""
    out = []
    if p.weight_stationary:
        acc = {}
        weights = iter(plan.weights)
        tile, row = None, 0
        for beat in plan.activations:
            if tile is None:
                tile = np.array([next(weights) for _ in range(p.rows)])
            partial = np.array(beat["data"]) @ tile
            total = partial + (acc[row] if beat["accumulate"] else 0)
            acc[row] = total
            if beat["emit"]:
                out.append(total.tolist())
            row += 1
            if beat["last"]:
                tile, row = None, 0
    else:
        sums = np.zeros((p.rows, p.cols), dtype=np.int64)
        for beat, w in zip(plan.activations, plan.weights):
            sums += np.outer(beat["data"], w)
            if beat["last"]:
                out.extend(sums.tolist())
                sums[:] = 0
    return out


@pytest.mark.parametrize("dataflow", ["weight_stationary", "output_stationary"])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (5, 9, 7), (17, 3, 2), (9, 20, 11)])
def test_tiling_driver_covers_any_gemm_shape(dataflow, m, k, n):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    p = SystolicParams(rows=4, cols=3, dataflow=dataflow, acc_depth=6)
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    plan = plan_gemm(p, a, w)
    assert np.array_equal(assemble_results(p, plan, _emulate_beats(p, plan)), systolic_golden(p, a, w))


# --- cycle model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataflow", ["weight_stationary", "output_stationary"])
def test_cycle_model_keeps_an_8x8_array_over_90_percent_busy_on_a_256_cube(dataflow):
    p = SystolicParams(rows=8, cols=8, dataflow=dataflow)
    assert gemm_utilization(p, 256, 256, 256) >= 0.90
    # and never claims more than one MAC per PE per cycle
    for shape in [(1, 1, 1), (8, 8, 8), (3, 100, 5)]:
        assert gemm_utilization(p, *shape) <= 1.0
    assert gemm_cycles(p, 256, 256, 256) > 256**3 // 64


# --- generation, determinism, lint, synthesis -----------------------------------------------------


def test_generated_verilog_is_byte_identical_across_processes(tmp_path):
    script = (
        "from hardwire.gen import registry; from hardwire.gen.systolic import SystolicParams; "
        "import sys; print(registry.to_verilog(registry.get('systolic'), "
        "SystolicParams(rows=3, cols=2, dataflow='output_stationary'))[1])"
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
    assert runs[0] == runs[1] and "module systolic_os_3x2" in runs[0]


LINT_CONFIGS = [
    SystolicParams(rows=1, cols=1),
    SystolicParams(rows=1, cols=1, dataflow="output_stationary"),
    SystolicParams(rows=3, cols=2, dataflow="output_stationary", pipeline=1, a_signed=False),
    SystolicParams(rows=4, cols=4, w_signed=False, a_width=4, w_width=4, acc_depth=5),
    SystolicParams(rows=8, cols=8),
]


@pytest.mark.parametrize("params", LINT_CONFIGS, ids=lambda p: p.top_name)
def test_generated_verilog_is_lint_clean(params, tmp_path):
    from hardwire.flows.lint import lint

    meta = registry.generate("systolic", params, tmp_path)
    report = lint([meta["verilog"]], meta["top"])
    assert report.clean, [w for w in report.warnings if not w["waived"]][:5]


@pytest.mark.parametrize("target, dsp_cell", [("ecp5", "MULT18X18D"), ("xilinx", "DSP48E1"), ("ice40", "SB_MAC16")])
def test_each_pe_multiply_maps_to_one_dsp(target, dsp_cell, tmp_path):
    from hardwire.flows.synth import synth

    p = SystolicParams(rows=2, cols=3, acc_depth=16)
    meta = registry.generate("systolic", p, tmp_path)
    report = synth([meta["verilog"]], meta["top"], target)
    assert report.cells.get(dsp_cell) == p.rows * p.cols
    assert report.dsp == p.rows * p.cols and report.ff > 0


# --- hard DSP primitives --------------------------------------------------------------------------


def test_hard_dsp_pes_are_weight_stationary_with_their_own_pipeline():
    with pytest.raises(ParameterError, match="dsp"):
        SystolicParams(dataflow="output_stationary", dsp="ecp5")
    with pytest.raises(ParameterError, match="pipeline"):
        SystolicParams(dsp="dsp48e1", pipeline=1)


def test_int8_packing_needs_column_pairs_and_at_most_the_rows_the_pre_adder_holds():
    with pytest.raises(ParameterError, match="even"):
        SystolicParams(rows=4, cols=3, dsp="dsp48e2")
    with pytest.raises(ParameterError, match=r"rows.*1\.\.8"):
        SystolicParams(rows=9, cols=4, dsp="dsp48e2")
    with pytest.raises(ParameterError, match=r"rows.*1\.\.4"):
        SystolicParams(rows=5, cols=4, a_signed=False, dsp="dsp48e2")
    p = SystolicParams(rows=8, cols=8, dsp="dsp48e2")
    # two columns per PE column: the skew and the deskew are half as long
    assert p.array_cols == 4 and p.latency_cycles == SystolicParams(rows=8, cols=8).latency_cycles - 4 + 2


# (dsp48e2 packs two columns per PE column: 2 cycles of skew and deskew fewer on a 4-column array)
@pytest.mark.parametrize(
    "dsp, latency, reload", [("inferred", 0, 0), ("ecp5", 3, 1), ("dsp48e1", 2, 1), ("dsp48e2", 2 - 2, 1 - 2)]
)
def test_cycle_model_adds_the_primitives_registers_to_the_latency(dsp, latency, reload):
    p = SystolicParams(rows=4, cols=4, dsp=dsp)
    base = SystolicParams(rows=4, cols=4)
    assert p.latency_cycles == base.latency_cycles + latency
    # the weight lives in the DSP's B register, loaded a cycle after the flip: one more cycle per reload
    assert p.weight_reload_cycles == base.weight_reload_cycles + reload
    assert gemm_cycles(p, 64, 64, 64) == gemm_cycles(base, 64, 64, 64) + latency


def test_ecp5_dsp_array_is_lint_clean_with_the_mult18x18d_model(tmp_path):
    from hardwire.flows.lint import lint
    from hardwire.gen.dsp import MODELS

    meta = registry.generate("systolic", SystolicParams(rows=2, cols=2, dsp="ecp5"), tmp_path)
    report = lint([meta["verilog"], MODELS / "MULT18X18D.v"], meta["top"])
    unwaived = [w for w in report.warnings if not w["waived"]]
    # the only finding allowed: MULT18X18D's C port left unconnected on purpose (see gen.dsp.mult18x18d)
    c_port = re.compile(r"missing pin: 'C([0-9]|1[0-7])'")
    assert unwaived and all(w["rule"] == "PINMISSING" and c_port.search(w["message"]) for w in unwaived), unwaived[:5]
    assert len(unwaived) == 4 * 18


def test_ecp5_dsp_pes_map_to_mult18x18d_with_all_four_registers(tmp_path):
    from hardwire.flows.synth import dsp_registers, synth

    p = SystolicParams(rows=2, cols=3, acc_depth=16, dsp="ecp5")
    meta = registry.generate("systolic", p, tmp_path)
    report = synth([meta["verilog"]], meta["top"], "ecp5")
    assert report.cells.get("MULT18X18D") == report.dsp == p.rows * p.cols
    registers = dsp_registers(report.netlist_json)
    assert len(registers) == p.rows * p.cols
    assert all(regs == {"INPUTA", "INPUTB", "PIPELINE", "OUTPUT"} for regs in registers.values()), registers
    # and the inferred array, for contrast, has yosys' combinational multiplier (issue 14's critical path)
    inferred = SystolicParams(rows=2, cols=3, acc_depth=16)
    meta = registry.generate("systolic", inferred, tmp_path)
    assert set(dsp_registers(synth([meta["verilog"]], meta["top"], "ecp5").netlist_json).values()) == {frozenset()}


def test_dsp48e1_pes_cascade_the_column_sums_rows_minus_one_per_column(tmp_path):
    from hardwire.flows.synth import cascaded_dsp_count, dsp_registers, synth

    p = SystolicParams(rows=3, cols=2, acc_depth=16, dsp="dsp48e1")
    meta = registry.generate("systolic", p, tmp_path)
    report = synth([meta["verilog"]], meta["top"], "xilinx")
    assert report.cells.get("DSP48E1") == p.rows * p.cols
    assert cascaded_dsp_count(report.netlist_json) == (p.rows - 1) * p.cols
    assert all({"A", "B", "M", "P"} <= regs for regs in dsp_registers(report.netlist_json).values())


def test_dsp48e2_packs_two_int8_macs_per_dsp_with_the_pairs_cascaded(tmp_path):
    from hardwire.flows.synth import cascaded_dsp_count, dsp_registers, synth

    p = SystolicParams(rows=4, cols=4, acc_depth=16, dsp="dsp48e2")
    meta = registry.generate("systolic", p, tmp_path)
    report = synth([meta["verilog"]], meta["top"], "xilinx-usp")
    macs = p.rows * p.cols
    assert report.cells.get("DSP48E2") == report.dsp == macs // 2  # 2 INT8 MACs per DSP48E2
    assert cascaded_dsp_count(report.netlist_json) == (p.rows - 1) * p.cols // 2
    assert all({"A", "B", "D", "M", "P"} <= regs for regs in dsp_registers(report.netlist_json).values())
