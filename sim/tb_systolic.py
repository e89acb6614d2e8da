"""cocotb testbench of the systolic array: tiled GEMMs checked bit-exactly against torch.matmul.

The caller (pytest, `hardwire sim systolic`) passes the parameters and the cases through the run's config
(see `hardwire.sim.runner.load_config`); each case becomes one cocotb test. A case lists A and W, the
valid/ready probabilities of the streams, and whether its cycle count must equal the cycle model (only
meaningful at full rate: always-valid sources, always-ready sink).
"""

from __future__ import annotations

import cocotb
import numpy as np
import torch
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.gen.systolic import (
    SystolicParams,
    assemble_results,
    expected_last_flags,
    expected_result_beats,
    gemm_cycles,
    plan_gemm,
    systolic_golden,
)
from hardwire.sim.runner import load_config, write_results
from hardwire.sim.streams import (
    StreamSink,
    StreamSource,
    pack_fields,
    pack_lanes,
    transfer_span_cycles,
    unpack_fields,
    unpack_lanes,
)

from hardwire.params import int_range, wrap

CLOCK_NS = 10


def default_cases(p: SystolicParams, seed: int = 1) -> list[dict]:
    """Random GEMMs that need tiling, extremes, zeros, alternating bits, a 1x1x1 and a back-pressured run."""
    rng = np.random.default_rng(seed)
    a_lo, a_hi = int_range(p.a_width, p.a_signed)
    w_lo, w_hi = int_range(p.w_width, p.w_signed)
    r, c = p.rows, p.cols
    k_deep = min(p.k_max, 3 * r + 1)
    # a shape that needs tiling in every dimension (and chunking of M if acc_depth is small)
    m, k, n = 2 * r + 1, min(p.k_max, 2 * r + 3), 2 * c + 1

    def rand(shape, lo, hi):
        return rng.integers(lo, hi + 1, size=shape, dtype=np.int64)

    def alternating(shape, width, is_signed, phase):
        pattern = int("01" * width, 2) & ((1 << width) - 1)
        if phase:
            pattern ^= (1 << width) - 1
        value = pattern - (1 << width) if is_signed and pattern >> (width - 1) else pattern
        return np.full(shape, value, dtype=np.int64)

    cases = [
        ("random_tiled", rand((m, k), a_lo, a_hi), rand((k, n), w_lo, w_hi), 1.0, 1.0),
        ("all_min", np.full((r, k_deep), a_lo), np.full((k_deep, c), w_lo), 1.0, 1.0),
        ("all_max", np.full((r, k_deep), a_hi), np.full((k_deep, c), w_hi), 1.0, 1.0),
        ("min_times_max", np.full((r, k_deep), a_lo), np.full((k_deep, c), w_hi), 1.0, 1.0),
        ("max_times_min", np.full((r, k_deep), a_hi), np.full((k_deep, c), w_lo), 1.0, 1.0),
        (
            "mixed_extremes",
            rng.choice([a_lo, a_hi, 0], size=(m, k)),
            rng.choice([w_lo, w_hi, 0], size=(k, n)),
            1.0,
            1.0,
        ),
        ("zeros", np.zeros((r, k)), rand((k, c), w_lo, w_hi), 1.0, 1.0),
        (
            "alternating_bits",
            alternating((m, k), p.a_width, p.a_signed, 0),
            alternating((k, n), p.w_width, p.w_signed, 1),
            1.0,
            1.0,
        ),
        ("single_mac", rand((1, 1), a_lo, a_hi), rand((1, 1), w_lo, w_hi), 1.0, 1.0),
        ("backpressure", rand((m, k), a_lo, a_hi), rand((k, n), w_lo, w_hi), 0.6, 0.5),
        # two-row tiles over many K tiles with stalls: rows return to the accumulator as early as allowed
        ("short_tiles_stalled", rand((2, k_deep), a_lo, a_hi), rand((k_deep, n), w_lo, w_hi), 0.5, 0.5),
    ]
    return [
        {
            "name": name,
            "a": np.asarray(a, dtype=np.int64).tolist(),
            "w": np.asarray(w, dtype=np.int64).tolist(),
            "valid_probability": vp,
            "ready_probability": rp,
            "check_cycles": vp == 1.0 and rp == 1.0,
        }
        for name, a, w, vp, rp in cases
    ]


def torch_reference(p: SystolicParams, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """torch.matmul on int64 tensors, held in the accumulator's width."""
    y = torch.matmul(torch.as_tensor(a, dtype=torch.int64), torch.as_tensor(w, dtype=torch.int64))
    return wrap(y.numpy(), p.acc_bits, p.acc_signed)


CONFIG = load_config()
CASES = {case["name"]: case for case in CONFIG.get("cases", [])}


async def _reset(dut) -> None:
    dut.rst.value = 1
    dut.weights__valid.value = 0
    dut.activations__valid.value = 0
    dut.results__ready.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


def _activation_fields(p: SystolicParams) -> dict[str, int]:
    fields = {"data": p.rows * p.a_width, "last": 1}
    if p.weight_stationary:
        fields |= {"accumulate": 1, "emit": 1}
    return fields


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def gemm_matches_torch(dut, case):
    assert case in CASES, "run through hardwire.sim.verify (no cases in the config)"
    spec = CASES[case]
    p = SystolicParams(**CONFIG["params"])
    a = np.array(spec["a"], dtype=np.int64).reshape(len(spec["a"]), -1)
    w = np.array(spec["w"], dtype=np.int64).reshape(len(spec["w"]), -1)
    plan = plan_gemm(p, a, w)

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await _reset(dut)
    seed = CONFIG.get("seed", 1)
    weights = StreamSource(dut, "weights", dut.clk, valid_probability=spec["valid_probability"], seed=seed)
    activations = StreamSource(dut, "activations", dut.clk, valid_probability=spec["valid_probability"], seed=seed + 1)
    results = StreamSink(dut, "results", dut.clk, ready_probability=spec["ready_probability"], seed=seed + 2)

    weights.send_all(pack_lanes(beat, p.w_width) for beat in plan.weights)
    act_fields = _activation_fields(p)
    activations.send_all(
        pack_fields({**beat, "data": pack_lanes(beat["data"], p.a_width)}, act_fields) for beat in plan.activations
    )

    expected_beats = expected_result_beats(p, plan)
    model_cycles = gemm_cycles(p, *plan.shape)
    budget_ns = (20 * model_cycles + 1000) * CLOCK_NS / min(spec["valid_probability"], spec["ready_probability"])
    raw = await with_timeout(results.take(expected_beats), budget_ns, "ns")
    # a few more cycles: the array must not emit anything beyond the expected beats
    for _ in range(2 * p.latency_cycles + 4):
        await RisingEdge(dut.clk)
    extra = len(results.received) - expected_beats

    result_fields = {"data": p.cols * p.acc_bits, "last": 1}
    decoded = [unpack_fields(beat, result_fields) for beat in raw]
    lanes = [unpack_lanes(d["data"], p.acc_bits, p.cols, signed=p.acc_signed) for d in decoded]
    lasts = [d["last"] for d in decoded]
    y_hw = assemble_results(p, plan, lanes)
    y_torch = torch_reference(p, a, w)
    y_golden = systolic_golden(p, a, w)

    mismatches = int(np.count_nonzero(y_hw != y_torch))
    cycles = transfer_span_cycles([weights, activations], [results])
    m_total, k_total, n_total = plan.shape
    write_results(
        {
            case: {
                "shape": [m_total, k_total, n_total],
                "exact": mismatches == 0,
                "mismatches": mismatches,
                "outputs": int(y_torch.size),
                "golden_equals_torch": bool(np.array_equal(y_golden, y_torch)),
                "last_flags_ok": lasts == expected_last_flags(p, plan),
                "extra_beats": extra,
                "cycles": cycles,
                "model_cycles": model_cycles,
                "check_cycles": spec["check_cycles"],
                "utilization": (m_total * k_total * n_total) / (p.rows * p.cols * cycles),
            }
        }
    )

    assert np.array_equal(y_golden, y_torch), "golden model disagrees with torch.matmul"
    if mismatches:
        where = np.argwhere(y_hw != y_torch)[0]
        i, j = int(where[0]), int(where[1])
        raise AssertionError(
            f"{mismatches}/{y_torch.size} outputs differ from torch.matmul; first at Y[{i},{j}]: "
            f"hardware {y_hw[i, j]}, torch {y_torch[i, j]}"
        )
    assert extra == 0, f"{extra} result beats beyond the {expected_beats} expected"
    assert lasts == expected_last_flags(p, plan), "result `last` flags are not on the final row of each block"
    if spec["check_cycles"]:
        assert cycles == model_cycles, f"measured {cycles} cycles, the cycle model says {model_cycles}"
