"""The N:M sparse DSP chain engine: parameters, the pruning and compression tool (against a brute-force
reference), the golden model against torch, the INT4 packing arithmetic (exhaustively), the cycle model,
deterministic lint-clean Verilog, the CLI, then the RTL in Verilator through cocotb for every pattern of the
run-time set (bit-exact against the golden model and torch, cycles equal to the model), with INT8 weights and
with packed INT4 weights, and a run that shows the testbench fails when hardware and encoding disagree."""

from __future__ import annotations

import itertools
import json
from math import ceil

import numpy as np
import pytest
import torch
from hardwire.flows.lint import lint
from hardwire.gen import registry
from hardwire.gen.sparse import (
    SparseParams,
    assemble,
    compress,
    decompress,
    nm_mask,
    packed_beat_sums,
    parse_pattern,
    plan,
    prune_nm,
    row_beats,
    sparse_cycles,
    sparse_golden,
    sparse_schedule,
)
from hardwire.sim.runner import simulate
from hardwire.sim.tb_sparse import default_cases
from hardwire.sim.verify import verify_block

from hardwire.cli import main
from hardwire.errors import ParameterError, SimulationError
from hardwire.params import int_range

ALL = ("dense", "1:2", "2:4", "1:4", "2:8", "4:8")

# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, name, allowed",
    [
        ({"lanes": 0}, "lanes", "1..64"),
        ({"chains": 65}, "chains", "1..64"),
        ({"m_max": 6}, "m_max", "2 or 4 or 8 or 16"),
        ({"w_width": 6}, "w_width", "4 or 8"),
        ({"k_max": 0}, "k_max", "1..1048576"),
        ({"patterns": "dense,3-4"}, "patterns", "'dense' or N:M"),
        ({"patterns": "4:4"}, "patterns", "1 <= N < M"),
        ({"patterns": "1:3"}, "patterns", "M one of 2, 4, 8, 16"),
        ({"patterns": "1:16"}, "patterns", "M <= m_max=8"),
        ({"patterns": "dense,dense"}, "patterns", "each pattern once"),
        ({"patterns": ""}, "patterns", "a comma-separated list"),
        ({"lanes": 6}, "patterns", "N dividing lanes=6"),
        ({"int4_packing": True}, "int4_packing", "False unless w_width=4"),
        ({"int4_packing": True, "w_width": 4, "chains": 3}, "chains", "an even number"),
        ({"int4_packing": 1}, "int4_packing", "True or False"),
    ],
)
def test_bad_parameter_names_itself_its_value_and_the_range(changes, name, allowed):
    with pytest.raises(ParameterError) as error:
        SparseParams(**changes)
    assert error.value.name == name and allowed in str(error.value)


def test_params_round_trip_and_every_hardware_change_shows_in_the_name():
    p = SparseParams(lanes=8, chains=4, patterns="dense,2:4", m_max=4, w_width=4, int4_packing=True, k_max=512)
    assert SparseParams.from_dict(p.to_dict()) == p
    assert (p.act_lanes, p.index_bits, p.groups, p.multipliers) == (16, 2, 2, 16)
    names = {
        SparseParams(**c).top_name
        for c in (
            {},
            {"lanes": 8},
            {"chains": 3},
            {"patterns": "dense"},
            {"m_max": 16},
            {"w_width": 4},
            {"w_width": 4, "int4_packing": True},
            {"k_max": 100},
        )
    }
    assert len(names) == 8


@pytest.mark.parametrize("w_width, k_max", list(itertools.product((4, 8), (1, 7, 4096))))
def test_acc_width_holds_the_extreme_dot_products_and_not_one_bit_less(w_width, k_max):
    p = SparseParams(w_width=w_width, k_max=k_max)
    products = [a * w for a in int_range(8, True) for w in int_range(w_width, True)]
    lo, hi = k_max * min(products), k_max * max(products)
    fits = lambda width: int_range(width, True)[0] <= lo and hi <= int_range(width, True)[1]
    assert fits(p.acc_width) and not fits(p.acc_width - 1)


# --- pruning and compression ----------------------------------------------------------------------


def _brute_force_mask(w: np.ndarray, n: int, m: int, row_group: int) -> np.ndarray:
    """Per block: the N positions of largest (group-summed) |w|, lower index first among equals, by
    sorting Python tuples; K padded with zeros."""
    rows, k = w.shape
    blocks = ceil(k / m)
    padded = np.zeros((rows, blocks * m))
    padded[:, :k] = np.abs(w)
    keep = np.zeros_like(padded, dtype=bool)
    for r0 in range(0, rows, row_group):
        for b in range(blocks):
            score = padded[r0 : r0 + row_group, b * m : (b + 1) * m].sum(axis=0)
            ranked = sorted(range(m), key=lambda i: (-score[i], i))[:n]
            keep[r0 : r0 + row_group, [b * m + i for i in ranked]] = True
    return keep[:, :k]


@pytest.mark.parametrize("pattern", ALL)
@pytest.mark.parametrize("row_group", (1, 2))
def test_nm_mask_matches_a_brute_force_reference_with_many_ties(pattern, row_group):
    n, m = parse_pattern(pattern)
    rng = np.random.default_rng(7)
    w = rng.integers(-3, 4, size=(6, 45))  # few distinct magnitudes: ties everywhere
    mask = nm_mask(w, pattern, row_group)
    assert np.array_equal(mask, _brute_force_mask(w, n, m, row_group) if m > 1 else np.ones_like(mask))
    # the same from a torch tensor, and prune_nm keeps the tensor type
    assert np.array_equal(nm_mask(torch.as_tensor(w, dtype=torch.float32), pattern, row_group), mask)
    pruned = prune_nm(torch.as_tensor(w, dtype=torch.float32), pattern, row_group)
    assert isinstance(pruned, torch.Tensor) and np.array_equal(pruned.numpy(), np.where(mask, w, 0))
    if m > 1:
        whole = mask[:, : (45 // m) * m].reshape(6, -1, m)
        assert np.all(whole.sum(axis=2) == n)


def test_ties_keep_the_lower_in_block_index():
    w = np.array([[5, -5, 5, 5, 0, 0, 0, 0]])
    assert nm_mask(w, "2:4").tolist() == [[True, True, False, False, True, True, False, False]]
    assert nm_mask(w, "1:2").tolist() == [[True, False, True, False, True, False, True, False]]


@pytest.mark.parametrize("pattern", ALL)
def test_compress_round_trips_and_indices_fit_log2_m_bits(pattern):
    n, m = parse_pattern(pattern)
    rng = np.random.default_rng(3)
    for k in (1, m, 3 * m + 1, 40):
        w = prune_nm(rng.integers(-128, 128, size=(5, k)), pattern)
        c = compress(w, pattern)
        assert c.values.shape == c.indices.shape == (5, ceil(k / m) * n)
        assert np.array_equal(decompress(c), w)
        assert c.indices.min() >= 0 and c.indices.max() < max(m, 1)
        # indices increase inside a block
        if n > 1:
            assert np.all(np.diff(c.indices.reshape(5, -1, n), axis=2) > 0)


def test_compress_refuses_weights_that_are_not_nm_sparse():
    w = np.array([[1, 2, 0, 0], [1, 0, 0, 3]])
    with pytest.raises(ParameterError, match="at most N=1 non-zeros per block of M=2"):
        compress(w, "1:2")
    pairs = prune_nm(w, "2:4")
    with pytest.raises(ParameterError, match="shared by 2 rows"):
        compress(pairs, "2:4", row_group=2)
    assert np.array_equal(decompress(compress(prune_nm(w, "2:4", 2), "2:4", 2)), prune_nm(w, "2:4", 2))


# --- golden model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ALL)
@pytest.mark.parametrize("w_width", (4, 8))
def test_golden_equals_torch_dense_matmul_on_the_pruned_weights(pattern, w_width):
    p = SparseParams(w_width=w_width)
    lo, hi = int_range(w_width, True)
    rng = np.random.default_rng(11)
    w = prune_nm(rng.integers(lo, hi + 1, size=(7, 53)), pattern)
    x = rng.integers(-128, 128, size=(4, 53))
    x[0], w[0] = -128, np.where(w[0] != 0, lo, 0)
    expected = torch.matmul(torch.as_tensor(x), torch.as_tensor(w).T).numpy()
    assert np.array_equal(sparse_golden(p, compress(w, pattern), x), expected)


def test_golden_validates_operands():
    p = SparseParams(w_width=4, patterns="dense,2:4", k_max=16)
    with pytest.raises(ParameterError, match="weights values"):
        sparse_golden(p, compress(np.array([[8, 0, 0, 0]]), "dense"), np.zeros((1, 4)))
    with pytest.raises(ParameterError, match="x values"):
        sparse_golden(p, compress(np.zeros((1, 4), dtype=int), "dense"), np.full((1, 4), 128))
    with pytest.raises(ParameterError, match="pattern='1:4'"):
        sparse_golden(p, compress(np.zeros((1, 4), dtype=int), "1:4"), np.zeros((1, 4)))
    with pytest.raises(ParameterError, match="K=17"):
        sparse_golden(p, compress(np.zeros((1, 17), dtype=int), "dense"), np.zeros((1, 17)))


@pytest.mark.parametrize("lanes", (1, 4, 8))
def test_int4_packing_recovers_both_sums_exactly_for_every_operand_pair(lanes):
    """Every (w_lo, w_hi, a) of one stage, exhaustively, with the other L-1 stages at both extremes of the
    low and the high field: P = lo + hi * 2^G unpacks to exactly the two separate sums."""
    p = SparseParams(lanes=lanes, w_width=4, int4_packing=True, patterns="dense")
    w = np.arange(-8, 8)
    a = np.arange(-128, 128)
    w_lo, w_hi, act = (v.reshape(-1) for v in np.meshgrid(w, w, a, indexing="ij"))
    lo_p, hi_p = w_lo * act, w_hi * act
    extremes = [min(p.product_range), max(p.product_range), 0]
    for rest_lo, rest_hi in itertools.product(extremes, extremes):
        lo_products = np.stack([lo_p] + [np.full_like(lo_p, rest_lo)] * (lanes - 1), axis=-1)
        hi_products = np.stack([hi_p] + [np.full_like(hi_p, rest_hi)] * (lanes - 1), axis=-1)
        total, lo, hi = packed_beat_sums(p, lo_products, hi_products)
        assert np.array_equal(lo, lo_products.sum(axis=-1)) and np.array_equal(hi, hi_products.sum(axis=-1))
        assert int(np.abs(total).max()) < 1 << (p.chain_width - 1)
    # one guard bit fewer would not do: the extreme low sum would spill into the high field
    low = lanes * max(p.product_range)
    assert not int_range(p.guard_bits - 1, True)[0] <= low <= int_range(p.guard_bits - 1, True)[1]


# --- cycle model and driver -----------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ALL)
def test_sparse_rows_take_k_n_over_m_multiplies_and_keep_95_percent_of_multipliers_busy(pattern):
    p = SparseParams(lanes=8, chains=4)
    n, m = parse_pattern(pattern)
    k = 4096
    # a 64 x 4096 layer: 16 row groups of the 4 chains, the pipeline fills once
    sparse, dense = sparse_cycles(p, k, pattern, rows=64), sparse_cycles(p, k, "dense", rows=64)
    assert sparse["multiplies"] == 64 * k * n // m
    assert sparse["beats"] == 16 * ceil(k * n / m / p.lanes) == dense["beats"] * n // m
    assert sparse["total_cycles"] == sparse["beats"] + p.latency_cycles
    assert sparse["utilization"] >= 0.95
    assert sparse["multiplies"] / (sparse["total_cycles"] * p.lanes * p.chains) >= 0.95


def test_a_partial_last_beat_costs_a_whole_beat():
    p = SparseParams(lanes=4)
    assert row_beats(p, 9, "dense") == 3 and row_beats(p, 9, "2:4") == 2 and row_beats(p, 8, "1:2") == 1
    assert sparse_cycles(p, 9, "dense", rows=2)["utilization"] == 9 / 12


def test_plan_and_assemble_place_every_result():
    p = SparseParams()
    rng = np.random.default_rng(5)
    w = prune_nm(rng.integers(-128, 128, size=(5, 20)), "2:8")
    x = rng.integers(-128, 128, size=(3, 20))
    c = compress(w, "2:8")
    beats = plan(p, c, x)
    assert len(beats.beats) == sparse_cycles(p, 20, "2:8", rows=5, vectors=3)["beats"]
    assert sum(b["last"] for b in beats.beats) == len(beats.results) == 3 * 3
    y = sparse_golden(p, c, x)
    chunks = [list(y[v, r0 : r0 + 2]) + [0] * (2 - len(y[v, r0 : r0 + 2])) for v, r0 in beats.results]
    assert np.array_equal(assemble(p, beats, chunks), y)
    with pytest.raises(ValueError, match="got 2 result beats"):
        assemble(p, beats, chunks[:2])
    accepted, produced = sparse_schedule(p, [0, 0, 5, 5], [0, 1, 0, 1])
    assert accepted == [0, 1, 5, 6] and produced == [1 + p.latency_cycles, 6 + p.latency_cycles]


# --- Verilog --------------------------------------------------------------------------------------


def test_verilog_is_deterministic_lint_clean_and_the_cli_generates_it(tmp_path):
    p = SparseParams(lanes=4, chains=2, w_width=4, int4_packing=True)
    block = registry.get("sparse")
    first = registry.to_verilog(block, p)[1]
    assert registry.to_verilog(block, SparseParams.from_dict(p.to_dict()))[1] == first
    assert (
        main(
            ["gen", "sparse", "--lanes", "4", "--chains", "2", "--w-width", "4", "--int4-packing", "-o", str(tmp_path)]
        )
        == 0
    )
    top = p.top_name
    text = (tmp_path / f"{top}.v").read_text()
    assert text == first
    meta = json.loads((tmp_path / f"{top}.json").read_text())
    assert meta["params"]["int4_packing"] is True and meta["params"]["multipliers"] == 4
    report = lint([tmp_path / f"{top}.v"], top)
    assert report.clean, report.unwaived
    for changes in ({"patterns": "dense"}, {}):
        q = SparseParams(**changes)
        meta = registry.generate("sparse", q, tmp_path)
        assert lint([meta["verilog"]], q.top_name).clean, q.top_name


@pytest.mark.slow
def test_synth_xilinx_infers_one_dsp48_per_stage_with_the_partial_sums_cascaded(tmp_path):
    """Per chain of L stages: L DSP48E1s, L-1 of them with PCIN wired (PCOUT -> PCIN); ecp5: L MULT18X18D.
    With int4_packing two chains share one multiplier chain: half the DSP48E1s (on ecp5 the packed operand is
    wider than the 18x18 multiplier; what yosys makes of it is measured in bench/sparse.py, not asserted)."""
    from hardwire.flows.synth import cascaded_dsp_count, synth

    for q, dsps in (
        (SparseParams(lanes=4, chains=2), 8),
        (SparseParams(lanes=4, chains=2, w_width=4, int4_packing=True), 4),
    ):
        meta = registry.generate("sparse", q, tmp_path)
        xilinx = synth([meta["verilog"]], q.top_name, "xilinx")
        assert xilinx.cells.get("DSP48E1") == dsps
        assert cascaded_dsp_count(xilinx.netlist_json) == dsps - q.groups
        ecp5 = synth([meta["verilog"]], q.top_name, "ecp5")
        if not q.int4_packing:
            assert ecp5.cells.get("MULT18X18D") == dsps


def test_hard_dsp_chain_parameters_name_what_does_not_fit():
    with pytest.raises(ParameterError, match="dsp"):
        SparseParams(dsp="dsp48e9")
    with pytest.raises(ParameterError, match="int4_packing"):
        SparseParams(w_width=4, int4_packing=True, dsp="ecp5")
    assert SparseParams(dsp="ecp5").latency_cycles == SparseParams().latency_cycles + 1  # MULT18X18D output reg
    assert SparseParams(dsp="dsp48e1").latency_cycles == SparseParams().latency_cycles


def test_hard_dsp_chains_map_to_registered_primitives_and_the_dsp48e1_cascade(tmp_path):
    """dsp=ecp5: one MULT18X18D per stage with its input, pipeline and output registers; dsp=dsp48e1: one
    DSP48E1 per stage with A/B/M/P registered and L-1 PCIN inputs cascaded per chain."""
    from hardwire.flows.synth import cascaded_dsp_count, dsp_registers, synth

    q = SparseParams(lanes=4, chains=2, dsp="ecp5")
    meta = registry.generate("sparse", q, tmp_path)
    ecp5 = synth([meta["verilog"]], q.top_name, "ecp5")
    assert ecp5.cells.get("MULT18X18D") == q.multipliers
    assert set(dsp_registers(ecp5.netlist_json).values()) == {frozenset({"INPUTA", "INPUTB", "PIPELINE", "OUTPUT"})}
    q = SparseParams(lanes=4, chains=2, w_width=4, int4_packing=True, dsp="dsp48e1")
    meta = registry.generate("sparse", q, tmp_path)
    xilinx = synth([meta["verilog"]], q.top_name, "xilinx")
    assert xilinx.cells.get("DSP48E1") == q.multipliers == 4
    assert cascaded_dsp_count(xilinx.netlist_json) == q.multipliers - q.groups
    assert all({"A", "B", "M", "P"} <= regs for regs in dsp_registers(xilinx.netlist_json).values())


# --- RTL in Verilator -----------------------------------------------------------------------------

SIM_CONFIGS = [
    pytest.param(SparseParams(), id="int8_all_patterns"),
    pytest.param(SparseParams(w_width=4, int4_packing=True), id="int4_packed_all_patterns"),
    pytest.param(
        SparseParams(lanes=3, chains=3, patterns="1:4,dense,1:2", m_max=4, w_width=4),
        id="int4_l3_c3",
        marks=pytest.mark.slow,
    ),
    pytest.param(SparseParams(lanes=8, chains=2, patterns="4:8,2:4,dense", m_max=16), id="l8", marks=pytest.mark.slow),
    # hard DSP stages (gen.dsp) with the primitives' simulation models
    pytest.param(SparseParams(dsp="ecp5"), id="int8_mult18x18d"),
    pytest.param(SparseParams(w_width=4, int4_packing=True, dsp="dsp48e1"), id="int4_packed_dsp48e1"),
    pytest.param(
        SparseParams(lanes=3, chains=1, patterns="dense,1:2", m_max=2, dsp="dsp48e1"),
        id="l3_dsp48e1",
        marks=pytest.mark.slow,
    ),
]


@pytest.mark.parametrize("params", SIM_CONFIGS)
def test_rtl_is_bit_exact_against_golden_and_torch_with_cycles_equal_to_the_model(params):
    result = verify_block("sparse", params)
    assert result.ok, result.table()
    cases = result.cases
    assert set(cases) == {c["name"] for c in default_cases(params)}
    for name, case in cases.items():
        assert case["exact"] and case["golden_equals_torch"] and case["extra_beats"] == 0, name
        if case["check_schedule"]:
            assert case["schedule_ok"], name
        if case["check_cycles"]:
            assert case["cycles"] == case["model_cycles"], name
    assert cases["pattern_switch"]["patterns"] == params.pattern_names


def test_testbench_fails_when_the_encoding_does_not_match_the_hardware():
    """The hardware of one pattern order driven with another's pattern ids: the outputs must be caught."""
    p = SparseParams()
    block = registry.get("sparse")
    top, verilog, _ = registry.to_verilog(block, p)
    wrong = SparseParams(patterns="1:2,dense,2:4,1:4,2:8,4:8")
    case = next(c for c in default_cases(wrong) if c["name"] == "pattern_1of2")
    with pytest.raises(SimulationError) as error:
        simulate(verilog, top, block.testbench, config={"params": wrong.to_dict() | {"name": top}, "cases": [case]})
    result = error.value.result
    assert result.failed == 1 and not result.results["pattern_1of2"]["exact"]
