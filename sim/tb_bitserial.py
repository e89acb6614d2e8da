"""cocotb testbench of the bit-serial array: tiled GEMMs checked bit-exactly against torch.matmul.

The caller (pytest, `hardwire sim bitserial`) passes the parameters and the cases through the run's config
(see `hardwire.sim.runner.load_config`); each case becomes one cocotb test. A case lists A, W, the
precision of its dot products (None: the fewest bits each block of rows needs; an int; or one per block of
rows), the valid/ready probabilities of the streams, and whether its cycle count must equal the cycle
model (only meaningful at full rate: always-valid sources, always-ready sink).
"""

from __future__ import annotations

import cocotb
import numpy as np
import torch
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.gen.bitserial import (
    BitSerialParams,
    assemble_results,
    bitserial_golden,
    jobs_cycles,
    plan_gemm,
)
from hardwire.sim.runner import load_config, write_results
from hardwire.sim.streams import (
    StreamSink,
    StreamSource,
    pack_fields,
    pack_lanes,
    reset,
    transfer_span_cycles,
    unpack_lanes,
)

from hardwire.params import int_range, wrap

CLOCK_NS = 10
# Cases whose full-rate run would exceed this many cycles are left out of the defaults (k_max extremes).
MAX_DEFAULT_CASE_CYCLES = 20000


def _alternating(shape, width: int, is_signed: bool, phase: int) -> np.ndarray:
    pattern = int("01" * width, 2) & ((1 << width) - 1)
    if phase:
        pattern ^= (1 << width) - 1
    value = pattern - (1 << width) if is_signed and pattern >> (width - 1) else pattern
    return np.full(shape, value, dtype=np.int64)


def default_cases(p: BitSerialParams, seed: int = 1) -> list[dict]:
    """Random GEMMs that need tiling at a_max and at dynamic precision, every precision 1..a_max back to
    back, precision 1, all-ones, extremes (at K = k_max when that is short enough), alternating bits,
    zeros, a 1x1x1 product, one-cycle dot products at full rate, and back-pressured runs."""
    rng = np.random.default_rng(seed)
    r, lanes, s = p.rows, p.lanes, p.simd
    a_lo, a_hi = p.a_range()
    w_lo, w_hi = int_range(p.w_width, p.w_signed)
    k = min(p.k_max, 2 * s + 1)
    k_deep = min(p.k_max, 3 * s + 1)
    m, n = 2 * r + 1, 2 * lanes + 1

    def rand(shape, lo, hi):
        return rng.integers(lo, hi + 1, size=shape, dtype=np.int64)

    def rand_at(precision, shape):
        lo, hi = p.a_range(precision)
        x = rand(shape, lo, hi)
        x.flat[rng.integers(0, x.size)] = lo  # each block reaches its precision's extremes
        x.flat[rng.integers(0, x.size)] = hi
        return x

    every = list(range(1, p.a_max + 1))
    mixed = [p.a_max, 1, max(1, p.a_max // 2)]
    ones = -1 if p.a_signed else a_hi
    w_ones = -1 if p.w_signed else w_hi
    cases = [
        ("random_tiled", rand((m, k), a_lo, a_hi), rand((k, n), w_lo, w_hi), p.a_max, 1.0, 1.0),
        (
            "dynamic_precision",
            np.concatenate([rand_at(q, (r, k)) for q in mixed]),
            rand((k, n), w_lo, w_hi),
            None,
            1.0,
            1.0,
        ),
        (
            "every_precision",
            np.concatenate([rand_at(q, (r, min(p.k_max, s + 1))) for q in every]),
            rand((min(p.k_max, s + 1), lanes), w_lo, w_hi),
            every,
            1.0,
            1.0,
        ),
        ("precision_1", rand_at(1, (m, k_deep)), rand((k_deep, n), w_lo, w_hi), 1, 1.0, 1.0),
        ("all_ones", np.full((r, k_deep), ones), np.full((k_deep, lanes), w_ones), p.a_max, 1.0, 1.0),
        ("all_min", np.full((r, k_deep), a_lo), np.full((k_deep, lanes), w_lo), p.a_max, 1.0, 1.0),
        ("all_max", np.full((r, k_deep), a_hi), np.full((k_deep, lanes), w_hi), p.a_max, 1.0, 1.0),
        ("min_times_max", np.full((r, k_deep), a_lo), np.full((k_deep, lanes), w_hi), p.a_max, 1.0, 1.0),
        ("max_times_min", np.full((r, k_deep), a_hi), np.full((k_deep, lanes), w_lo), p.a_max, 1.0, 1.0),
        (
            "mixed_extremes",
            rng.choice([a_lo, a_hi, 0, -1 if p.a_signed else 1], size=(m, k)),
            rng.choice([w_lo, w_hi, 0], size=(k, n)),
            p.a_max,
            1.0,
            1.0,
        ),
        (
            "alternating_bits",
            _alternating((m, k), p.a_max, p.a_signed, 0),
            _alternating((k, n), p.w_width, p.w_signed, 1),
            p.a_max,
            1.0,
            1.0,
        ),
        ("zeros", np.zeros((r, k), dtype=np.int64), rand((k, lanes), w_lo, w_hi), None, 1.0, 1.0),
        ("single_mac", rand((1, 1), a_lo, a_hi), rand((1, 1), w_lo, w_hi), p.a_max, 1.0, 1.0),
        # one-cycle dot products back to back: the result FIFO's credits must not throttle full rate
        (
            "one_cycle_jobs",
            rand_at(1, (6 * r, min(s, p.k_max))),
            rand((min(s, p.k_max), 2 * lanes), w_lo, w_hi),
            1,
            1.0,
            1.0,
        ),
        ("backpressure", np.concatenate([rand_at(q, (r, k)) for q in mixed]), rand((k, n), w_lo, w_hi), None, 0.6, 0.5),
        (
            "one_cycle_jobs_stalled",
            rand_at(1, (6 * r, min(s, p.k_max))),
            rand((min(s, p.k_max), 2 * lanes), w_lo, w_hi),
            1,
            0.9,
            0.3,
        ),
    ]
    if ceil_div(p.k_max, s) * p.a_max * 2 <= MAX_DEFAULT_CASE_CYCLES:
        # every extreme product k_max deep: the accumulator's width must hold them all
        cases.append(
            (
                "extremes_at_k_max",
                np.array([[a_lo] * p.k_max, [a_hi] * p.k_max]),
                np.array([[w_lo, w_hi]] * p.k_max),
                p.a_max,
                1.0,
                1.0,
            )
        )
    return [
        {
            "name": name,
            "a": np.asarray(a, dtype=np.int64).tolist(),
            "w": np.asarray(w, dtype=np.int64).tolist(),
            "precision": precision,
            "valid_probability": vp,
            "ready_probability": rp,
            "check_cycles": vp == 1.0 and rp == 1.0,
        }
        for name, a, w, precision, vp, rp in cases
    ]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def torch_reference(p: BitSerialParams, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """torch.matmul on int64 tensors, held in the accumulator's width."""
    y = torch.matmul(torch.as_tensor(a, dtype=torch.int64), torch.as_tensor(w, dtype=torch.int64))
    return wrap(y.numpy(), p.acc_bits, p.acc_signed)


CONFIG = load_config()
CASES = {case["name"]: case for case in CONFIG.get("cases", [])}


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def gemm_matches_torch(dut, case):
    assert case in CASES, "run through hardwire.sim.verify (no cases in the config)"
    spec = CASES[case]
    p = BitSerialParams.from_dict(CONFIG["params"])
    a = np.array(spec["a"], dtype=np.int64).reshape(len(spec["a"]), -1)
    w = np.array(spec["w"], dtype=np.int64).reshape(len(spec["w"]), -1)
    plan = plan_gemm(p, a, w, spec["precision"])

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await reset(dut, dut.clk, sources=("weights", "activations"), sinks=("results",))
    seed = CONFIG.get("seed", 1)
    weights = StreamSource(dut, "weights", dut.clk, valid_probability=spec["valid_probability"], seed=seed)
    activations = StreamSource(dut, "activations", dut.clk, valid_probability=spec["valid_probability"], seed=seed + 1)
    results = StreamSink(dut, "results", dut.clk, ready_probability=spec["ready_probability"], seed=seed + 2)

    weights.send_all(pack_lanes(beat, p.w_width) for beat in plan.weights)
    fields = {"bits": p.rows * p.simd, "precision": p.precision_width, "last": 1}
    activations.send_all(
        pack_fields({**beat, "bits": pack_lanes(beat["bits"], p.simd)}, fields) for beat in plan.activations
    )

    model_cycles = jobs_cycles(p, plan.jobs)
    budget_ns = int((20 * model_cycles + 1000) * CLOCK_NS / min(spec["valid_probability"], spec["ready_probability"]))
    raw = await with_timeout(results.take(len(plan.results)), budget_ns, "ns")
    # a few more cycles: the array must not emit anything beyond the expected beats
    for _ in range(2 * p.latency_cycles + 4):
        await RisingEdge(dut.clk)
    extra = len(results.received) - len(plan.results)

    beats = [unpack_lanes(beat, p.acc_bits, p.rows * p.lanes, signed=p.acc_signed) for beat in raw]
    y_hw = assemble_results(p, plan, beats)
    y_torch = torch_reference(p, a, w)
    y_golden = bitserial_golden(p, a, w)
    mismatches = int(np.count_nonzero(y_hw != y_torch))
    cycles = transfer_span_cycles([weights, activations], [results])
    m_total, k_total, n_total = plan.shape
    write_results(
        {
            case: {
                "shape": [m_total, k_total, n_total],
                "precisions": sorted({prec for _, prec in plan.jobs}),
                "exact": mismatches == 0,
                "mismatches": mismatches,
                "outputs": int(y_torch.size),
                "golden_equals_torch": bool(np.array_equal(y_golden, y_torch)),
                "extra_beats": extra,
                "cycles": cycles,
                "model_cycles": model_cycles,
                "check_cycles": spec["check_cycles"],
                "utilization": sum(chunks * prec for chunks, prec in plan.jobs) / cycles,
            }
        }
    )

    assert np.array_equal(y_golden, y_torch), "golden model disagrees with torch.matmul"
    if mismatches:
        i, j = (int(x) for x in np.argwhere(y_hw != y_torch)[0])
        raise AssertionError(
            f"{mismatches}/{y_torch.size} outputs differ from torch.matmul; first at Y[{i},{j}]: "
            f"hardware {y_hw[i, j]}, torch {y_torch[i, j]}"
        )
    assert extra == 0, f"{extra} result beats beyond the {len(plan.results)} expected"
    if spec["check_cycles"]:
        assert cycles == model_cycles, f"measured {cycles} cycles, the cycle model says {model_cycles}"
