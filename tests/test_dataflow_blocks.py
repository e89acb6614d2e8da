"""The dataflow blocks (swg, maxpool, dwc): parameters, golden models against torch, schedule models
(fast, no simulator), then the RTL in Verilator through cocotb: every output bit-exact against the golden
model over frames back to back with bubbles and back-pressure, every handshake cycle equal to the
schedule model, deterministic and lint-clean Verilog, and a testbench that can fail."""

from __future__ import annotations

import subprocess
import sys
from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hardwire.gen import registry
from hardwire.gen.dwc import DwcParams, _gearbox_schedule, dwc_cycles, dwc_golden, dwc_schedule
from hardwire.gen.pool import PoolParams, pool_cycles, pool_golden, pool_schedule
from hardwire.gen.swg import SwgParams, swg_cycles, swg_golden, swg_schedule
from hardwire.sim.runner import simulate
from hardwire.sim.tb_dataflow import default_cases
from hardwire.sim.verify import verify_block

from hardwire.errors import ParameterError, SimulationError
from hardwire.params import int_range

# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, changes, field, allowed",
    [
        (SwgParams, {"in_height": 0}, "in_height", "1..256"),
        (SwgParams, {"in_width": 257}, "in_width", "1..256"),
        (SwgParams, {"kernel_size": 11, "padding": 1}, "kernel_size", "1..10"),
        (SwgParams, {"kernel_size": 3, "padding": 3}, "padding", "0..2"),
        (SwgParams, {"stride": 0}, "stride", "1..256"),
        (SwgParams, {"simd": 3}, "simd", "a divisor of channels=16"),
        (SwgParams, {"elem_width": 17}, "elem_width", "1..16"),
        (SwgParams, {"elem_signed": 1}, "elem_signed", "True or False"),
        (SwgParams, {"channels": 2.0}, "channels", "1..4096"),
        (SwgParams, {"line_buffer": 1}, "line_buffer", "True or False"),
        (PoolParams, {"kernel_size": 7}, "kernel_size", "1..6"),
        (PoolParams, {"kernel_size": 0}, "kernel_size", "1..6"),
        (PoolParams, {"simd": 5}, "simd", "a divisor of channels=16"),
        (PoolParams, {"elem_width": 0}, "elem_width", "1..16"),
        (PoolParams, {"in_height": True}, "in_height", "1..256"),
        (DwcParams, {"in_lanes": 0}, "in_lanes", "1..256"),
        (DwcParams, {"out_lanes": 300}, "out_lanes", "1..256"),
        (DwcParams, {"frame_elements": 8}, "frame_elements", "a multiple of out_lanes=6"),
        (DwcParams, {"frame_elements": 6}, "frame_elements", "a multiple of in_lanes=4"),
        (DwcParams, {"elem_width": 33}, "elem_width", "1..32"),
    ],
)
def test_bad_parameter_names_itself_its_value_and_the_range(cls, changes, field, allowed):
    with pytest.raises(ParameterError) as error:
        cls(**changes)
    assert error.value.name == field
    assert repr(changes[field]) in str(error.value) and allowed in str(error.value)


def test_params_round_trip_through_to_dict_and_name_every_hardware_parameter():
    for p in (
        SwgParams(5, 7, 6, 3, 2, 2, 3, 5, False),
        PoolParams(5, 7, 6, 2, 3, 5, False),
        DwcParams(4, 6, 3, False, 24),
    ):
        assert type(p)(**p.to_dict()) == p
    assert SwgParams(5, 7, 6, 3, 2, 2, 3, 5, False).top_name == "swg_5x7x6_k3_s2_p2_simd3_5u"
    assert SwgParams(5, 7, 6, 3, 2, 2, 3, 5, False, line_buffer=False).top_name == "swg_5x7x6_k3_s2_p2_simd3_5u_db"
    assert PoolParams(5, 7, 6, 2, 3, 5, False).top_name == "maxpool_5x7x6_k2_simd3_5u"
    assert DwcParams(4, 6, 3, False, 24).top_name == "dwc_4to6_3u"
    assert {"swg", "maxpool", "dwc"} <= set(registry.blocks())


# --- golden models against torch ------------------------------------------------------------------


SWG_SHAPES = [  # (H, W, C, k, stride, padding)
    (8, 8, 16, 3, 1, 1),
    (5, 7, 3, 3, 2, 2),
    (1, 1, 2, 1, 1, 0),
    (4, 4, 2, 4, 1, 0),
    (6, 5, 1, 1, 2, 0),
    (2, 3, 4, 4, 3, 1),
    (7, 7, 2, 5, 2, 4),
]


@pytest.mark.parametrize("h, w, c, k, stride, pad", SWG_SHAPES)
def test_swg_golden_is_torch_unfold_in_ky_kx_c_order(h, w, c, k, stride, pad):
    rng = np.random.default_rng(h * 100 + w * 10 + k)
    p = SwgParams(h, w, c, k, stride, pad, 1, 6, True)
    image = rng.integers(-32, 32, (h, w, c))
    nchw = torch.tensor(image).permute(2, 0, 1)[None].double()
    cols = F.unfold(nchw, kernel_size=k, stride=stride, padding=pad)[0]  # [C*k*k, L], order (c, ky, kx)
    ref = cols.reshape(c, k, k, -1).permute(3, 1, 2, 0).reshape(p.out_height, p.out_width, k * k * c)
    assert np.array_equal(swg_golden(p, image), ref.long().numpy())


POOL_SHAPES = [(6, 6, 16, 2), (5, 7, 3, 2), (1, 1, 2, 1), (4, 4, 2, 4), (7, 5, 1, 3), (9, 9, 4, 3)]


@pytest.mark.parametrize("h, w, c, k", POOL_SHAPES)
@pytest.mark.parametrize("signed", [True, False])
def test_pool_golden_is_torch_max_pool2d_with_floor(h, w, c, k, signed):
    rng = np.random.default_rng(h * 10 + k)
    p = PoolParams(h, w, c, k, 1, 8, signed)
    lo, hi = int_range(8, signed)
    image = rng.integers(lo, hi + 1, (h, w, c))
    nchw = torch.tensor(image).permute(2, 0, 1)[None].double()
    ref = F.max_pool2d(nchw, kernel_size=k, stride=k, ceil_mode=False)[0].permute(1, 2, 0).long().numpy()
    assert np.array_equal(pool_golden(p, image), ref)


def test_golden_models_reject_values_and_shapes_outside_the_parameters():
    with pytest.raises(ParameterError, match="element values"):
        swg_golden(SwgParams(2, 2, 1, 1, 1, 0, 1, 4, True), np.full((2, 2, 1), 8))
    with pytest.raises(ParameterError, match="element values"):
        pool_golden(PoolParams(2, 2, 1, 1, 1, 4, False), np.full((2, 2, 1), -1))
    with pytest.raises(ParameterError, match="image shape"):
        pool_golden(PoolParams(2, 2, 1, 1, 1, 4, False), np.zeros((2, 3, 1)))
    with pytest.raises(ParameterError, match="frame size"):
        dwc_golden(DwcParams(2, 3, 4, True, 6), np.zeros(12))
    assert dwc_golden(DwcParams(2, 3, 4, True, 6), np.arange(6)).tolist() == [[0, 1, 2], [3, 4, 5]]


# --- schedule models ------------------------------------------------------------------------------


def _random_offers(rng, count, gap):
    return np.cumsum(rng.integers(0, gap + 1, count)).tolist()


def _check_stream_rules(accepted, produced, offered):
    """Handshakes at most one per cycle, in order, never before the beat was offered."""
    assert all(a >= o for a, o in zip(accepted, offered))
    assert all(b > a for a, b in pairwise(accepted))
    assert all(b > a for a, b in pairwise(produced))


def test_swg_double_buffer_schedule_overlaps_one_image_with_the_next():
    p = SwgParams(4, 4, 2, 3, 1, 1, 1, 8, True, line_buffer=False)  # 32 beats in, 16 * 9 * 2 = 288 out
    assert (p.beats_in, p.beats_out) == (32, 288)
    accepted, produced = swg_schedule(p, [0] * 3 * 32)
    assert accepted[:32] == list(range(32))
    assert accepted[32:64] == list(range(32, 64))  # image 2 fills the other bank meanwhile
    assert accepted[64] == 32 + 288  # image 3 waits for bank 0: read ends at 32+288-1
    assert produced[0] == 33 and produced[287] == 32 + 288 and produced[288] == 32 + 288 + 1
    cycles = swg_cycles(p, frames=2)
    assert cycles["latency_cycles"] == 33 and cycles["initiation_interval"] == 288
    assert cycles["total_cycles"] == 32 + 2 * 288 + 1 and cycles["buffer_bits"] == 2 * 4 * 4 * 2 * 8
    # a write-bound configuration (k = 1, stride 2: a quarter of the pixels read) runs at the write rate
    q = SwgParams(8, 8, 4, 1, 2, 0, 2, 8, True, line_buffer=False)
    assert swg_cycles(q, 3)["initiation_interval"] == q.beats_in == 128
    rng = np.random.default_rng(0)
    offered = _random_offers(rng, 3 * 32, 3)
    accepted, produced = swg_schedule(p, offered)
    _check_stream_rules(accepted, produced, offered)
    assert len(produced) == 3 * 288


def test_swg_line_buffer_schedule_starts_after_k_minus_padding_rows_and_waits_for_free_slots():
    p = SwgParams(9, 4, 2, 3, 1, 1, 1, 8, True)  # 9 stored rows, 2k + s - p = 6 slots
    assert (p.stored_rows, p.buffer_rows, p.buffer_bits) == (9, 6, 6 * 4 * 2 * 8)
    row_words, row_reads = 4 * 2, p.out_width * 9 * 2
    accepted, produced = swg_schedule(p, [0] * 2 * p.beats_in)
    # output row 0 needs input rows 0 and 1 (row -1 is padding): it starts the cycle after row 1's last write
    assert produced[0] == 2 * row_words - 1 + 1 + 1
    assert produced[:row_reads] == list(range(produced[0], produced[0] + row_reads))
    # rows 0..5 fill the six slots at full rate; row 6 waits for row 0's release, which comes at the end of
    # output row 1 (the first whose successor starts below row 0): the cycle after its last read
    assert accepted[: 6 * row_words] == list(range(6 * row_words))
    assert accepted[6 * row_words] == produced[2 * row_reads - 1]
    assert accepted[7 * row_words] == produced[3 * row_reads - 1]
    _check_stream_rules(accepted, produced, [0] * 2 * p.beats_in)
    assert len(produced) == 2 * p.beats_out


SWEEP = [
    (h, w, k, s, pad)
    for h in (1, 2, 3, 5, 8)
    for w in (1, 4, 7)
    for k in (1, 2, 3, 5)
    for s in (1, 2, 3)
    for pad in (0, 1, 2)
    if pad < k <= min(h, w) + 2 * pad
]


@pytest.mark.parametrize("line_buffer", [True, False])
def test_swg_initiation_interval_is_that_of_the_slower_side_for_every_shape(line_buffer):
    for h, w, k, s, pad in SWEEP:
        p = SwgParams(h, w, 2, k, s, pad, 1, 4, True, line_buffer=line_buffer)
        cycles = swg_cycles(p, frames=5)
        assert cycles["initiation_interval"] == max(p.beats_in, p.beats_out), p.top_name
        if line_buffer:  # the first output needs the first k - padding rows (all rows, if fewer)
            first_rows = min(k - pad, p.stored_rows)
            assert cycles["latency_cycles"] == first_rows * w * 2 + 1, p.top_name


def test_pool_schedule_outputs_each_window_two_cycles_after_its_last_beat():
    p = PoolParams(4, 5, 4, 2, 2, 8, True)  # 5th column dropped (floor)
    accepted, produced = pool_schedule(p, [0] * p.beats_in)
    assert accepted == list(range(p.beats_in))
    # window (0, 0) ends at pixel (1, 1): beats 2 * (5 + 1) .. + 1
    assert produced[:2] == [12 + 2, 13 + 2] and len(produced) == p.beats_out == 2 * 2 * 2
    cycles = pool_cycles(p, frames=3)
    assert cycles["initiation_interval"] == p.beats_in and cycles["latency_cycles"] == 14
    # the last window ends at pixel (3, 3), channel beat 1 of frame 3
    assert cycles["total_cycles"] == 2 * p.beats_in + (3 * 5 + 3) * 2 + 1 + 2 + 1
    rng = np.random.default_rng(1)
    offered = _random_offers(rng, 2 * p.beats_in, 4)
    accepted, produced = pool_schedule(p, offered)
    _check_stream_rules(accepted, produced, offered)


@pytest.mark.parametrize("lanes", [(4, 2), (2, 4), (8, 2), (1, 5), (5, 1), (4, 6), (6, 4), (3, 5), (7, 3)])
def test_dwc_schedule_closed_forms_agree_with_the_gearbox_count_model(lanes):
    """The divisible cases' closed forms and the general fill-count model describe the same machine (the
    gearbox with in + out - 1 elements behaves, cycle for cycle, like the shift registers)."""
    n_in, n_out = lanes
    p = DwcParams(n_in, n_out, 4, True, n_in * n_out * 2)
    rng = np.random.default_rng(n_in * 10 + n_out)
    for gap in (0, 1, 5):
        offered = _random_offers(rng, 4 * p.beats_in, gap)
        accepted, produced = dwc_schedule(p, offered)
        assert (accepted, produced) == _gearbox_schedule(p, offered)
        _check_stream_rules(accepted, produced, offered)
        assert len(produced) == 4 * p.beats_out
    cycles = dwc_cycles(p, frames=2)
    assert cycles["initiation_interval"] == max(p.beats_in, p.beats_out)  # the slower side sets the rate
    if n_in % n_out == 0:
        assert cycles["latency_cycles"] == 1
    elif n_out % n_in == 0:
        assert cycles["latency_cycles"] == n_out // n_in


def test_dwc_identity_is_one_register_stage():
    p = DwcParams(3, 3, 8, False, 9)
    offered = [0, 0, 4, 4, 9]
    assert dwc_schedule(p, offered) == ([0, 1, 4, 5, 9], [1, 2, 5, 6, 10]) == _gearbox_schedule(p, offered)
    assert dwc_cycles(p)["latency_cycles"] == 1


# --- generation, determinism, lint ----------------------------------------------------------------


def test_generated_verilog_is_byte_identical_across_processes():
    script = (
        "from hardwire.gen import registry; from hardwire.gen.swg import SwgParams; "
        "from hardwire.gen.pool import PoolParams; from hardwire.gen.dwc import DwcParams; "
        "print(registry.to_verilog(registry.get('swg'), SwgParams(5, 7, 3, 3, 2, 2, 1, 8, False))[1]); "
        "print(registry.to_verilog(registry.get('maxpool'), PoolParams(6, 6, 4, 2, 2, 8, True))[1]); "
        "print(registry.to_verilog(registry.get('dwc'), DwcParams(4, 6, 4, True, 12))[1])"
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
    assert runs[0] == runs[1]
    for top in ("module swg_5x7x3_k3_s2_p2_simd1_8u", "module maxpool_6x6x4_k2_simd2_8s", "module dwc_4to6_4s"):
        assert top in runs[0]


LINT_CONFIGS = [
    ("swg", SwgParams(8, 8, 16, 3, 1, 1, 4, 8, True)),
    ("swg", SwgParams(8, 8, 16, 3, 1, 1, 4, 8, True, line_buffer=False)),
    ("swg", SwgParams(1, 1, 2, 1, 1, 0, 2, 8, True)),
    ("swg", SwgParams(1, 1, 2, 1, 1, 0, 2, 8, True, line_buffer=False)),
    ("swg", SwgParams(5, 7, 3, 3, 2, 2, 1, 1, False)),
    ("swg", SwgParams(6, 5, 2, 1, 2, 0, 1, 4, True)),  # a row past the last window is dropped
    ("maxpool", PoolParams(6, 6, 16, 2, 4, 8, True)),
    ("maxpool", PoolParams(2, 2, 4, 2, 4, 1, True)),  # a one-word running-maximum memory
    ("maxpool", PoolParams(3, 3, 2, 1, 1, 4, False)),  # k = 1: no memory
    ("dwc", DwcParams(4, 6, 4, True, 12)),
    ("dwc", DwcParams(8, 2, 4, True, 8)),
    ("dwc", DwcParams(1, 5, 4, True, 5)),
    ("dwc", DwcParams(3, 3, 4, True, 9)),
]


@pytest.mark.parametrize("name, params", LINT_CONFIGS, ids=lambda v: v if isinstance(v, str) else v.top_name)
def test_generated_verilog_is_lint_clean(name, params, tmp_path):
    from hardwire.flows.lint import lint

    meta = registry.generate(name, params, tmp_path)
    report = lint([meta["verilog"]], meta["top"])
    assert report.clean, [w for w in report.warnings if not w["waived"]][:5]


# --- simulation -----------------------------------------------------------------------------------

# The default run: every structure and the corners, on small images (each config builds one model).
SIM_CONFIGS = [
    ("swg", SwgParams(9, 4, 2, 3, 2, 1, 1, 4, False)),  # line buffer: 9 rows through 7 slots, stride 2,
    # padding, simd 1, unsigned
    ("swg", SwgParams(4, 5, 4, 3, 1, 1, 2, 8, True, line_buffer=False)),  # double buffer, padding
    ("swg", SwgParams(1, 1, 2, 1, 1, 0, 2, 8, True)),  # 1x1 image, k = 1 = H, simd = C
    ("swg", SwgParams(6, 3, 1, 1, 3, 0, 1, 1, False)),  # stride > k: rows released before written
    ("maxpool", PoolParams(5, 7, 3, 2, 1, 5, False)),  # floor: a row and a column dropped, simd 1
    ("maxpool", PoolParams(2, 2, 4, 2, 4, 1, True)),  # k = H: one window, 1-bit signed, simd = C
    ("maxpool", PoolParams(3, 3, 2, 1, 2, 4, True)),  # k = 1: no memory
    ("dwc", DwcParams(4, 6, 4, True, 12)),  # gearbox, output side slower
    ("dwc", DwcParams(6, 4, 4, False, 24)),  # gearbox, input side stalls
    ("dwc", DwcParams(8, 2, 3, True, 16)),  # shift register down
    ("dwc", DwcParams(1, 5, 8, True, 10)),  # shift register up
    ("dwc", DwcParams(3, 3, 4, True, 9)),  # identity (one register stage)
]

SLOW_SIM_CONFIGS = [
    ("swg", SwgParams(4, 5, 4, 3, 1, 1, 2, 8, True)),
    ("swg", SwgParams(5, 7, 3, 3, 2, 2, 1, 4, False, line_buffer=False)),  # stride 2, padding 2
    ("swg", SwgParams(4, 4, 2, 4, 1, 0, 2, 3, True)),  # k = H
    ("swg", SwgParams(4, 4, 2, 4, 1, 0, 2, 3, True, line_buffer=False)),  # k = H, power-of-two bank
    ("swg", SwgParams(2, 2, 2, 4, 1, 1, 1, 8, True)),  # k = H + 2p: one window, mostly padding
    ("swg", SwgParams(6, 5, 2, 1, 2, 0, 1, 4, True)),  # k = 1, stride 2: a row dropped
    ("swg", SwgParams(8, 4, 2, 3, 2, 0, 2, 5, True)),  # floor: the last row dropped; slots wrap
    ("swg", SwgParams(8, 8, 16, 3, 1, 1, 4, 8, True)),
    ("swg", SwgParams(8, 8, 16, 3, 1, 1, 4, 8, True, line_buffer=False)),
    ("swg", SwgParams(7, 6, 4, 5, 3, 4, 4, 16, True)),
    ("swg", SwgParams(12, 3, 2, 3, 1, 1, 1, 8, True)),  # many rows through few slots
    ("maxpool", PoolParams(4, 4, 4, 2, 2, 8, True)),
    ("maxpool", PoolParams(4, 4, 2, 4, 2, 8, True)),  # k = H
    ("maxpool", PoolParams(6, 6, 16, 2, 4, 8, True)),
    ("maxpool", PoolParams(9, 8, 8, 3, 2, 16, True)),
    ("dwc", DwcParams(5, 3, 16, True, 30)),
    ("dwc", DwcParams(16, 4, 1, False, 32)),
    ("dwc", DwcParams(2, 7, 2, True, 28)),
]


def _sim_id(value):
    return value if isinstance(value, str) else value.top_name


def _check(name, params):
    result = verify_block(name, params)
    assert result.ok, (result.failure or "")[-3000:]
    for case_name, case in result.cases.items():
        assert case["exact"] and case["mismatches"] == 0 and case["extra_beats"] == 0, (case_name, case)
        if case["check_schedule"]:
            assert case["schedule_accepted_ok"] and case["schedule_produced_ok"], (case_name, case)
    full = result.cases["full_rate"]
    summary = registry.get(name).cycles(params, frames=full["frames"])
    assert full["latency_cycles"] == summary["latency_cycles"]
    assert full["total_cycles"] == summary["total_cycles"]


@pytest.mark.parametrize("name, params", SIM_CONFIGS, ids=_sim_id)
def test_block_matches_golden_bit_exactly_and_schedule_cycle_exactly(name, params):
    _check(name, params)


@pytest.mark.slow
@pytest.mark.parametrize("name, params", SLOW_SIM_CONFIGS, ids=_sim_id)
def test_larger_blocks_match_golden_and_schedule(name, params):
    _check(name, params)


def test_testbench_fails_when_hardware_and_golden_disagree():
    """The check can fail: max pooling built for unsigned elements, checked as if they were signed
    (max(-1, 0) = 0 but unsigned max(0b1111, 0) = 0b1111)."""
    built = PoolParams(2, 2, 2, 2, 2, 4, False)
    claimed = PoolParams(2, 2, 2, 2, 2, 4, True)
    top, verilog, _ = registry.to_verilog(registry.get("maxpool"), built)
    cases = [c for c in default_cases(claimed) if c["name"] == "extremes"]
    config = {"params": claimed.to_dict(), "cases": cases, "seed": 1}
    with pytest.raises(SimulationError, match="differ from maxpool's golden model"):
        simulate(verilog, top, "hardwire.sim.tb_dataflow", config=config)


def test_schedule_check_fails_when_the_timing_differs_from_the_model():
    """The cycle check can fail too: under output back-pressure the handshakes come later than the
    schedule (which assumes an always-ready sink) says, and the testbench must notice."""
    p = PoolParams(2, 2, 2, 2, 2, 4, True)
    top, verilog, _ = registry.to_verilog(registry.get("maxpool"), p)
    cases = [c | {"check_schedule": True} for c in default_cases(p) if c["name"] == "backpressure"]
    config = {"params": p.to_dict(), "cases": cases, "seed": 1}
    with pytest.raises(SimulationError, match="handshakes differ from the schedule"):
        simulate(verilog, top, "hardwire.sim.tb_dataflow", config=config)
