"""cocotb testbench of the BitVert PE array: GEMVs checked bit-exactly against the golden model and x @ W.T,
every result handshake cycle against the cycle model computed from the encoded weights.

The caller (pytest, `hardwire sim bitvert`) passes the parameters and the cases through the run's config. A
case lists W (N, K) and the input vectors x (V, K) and the probabilities of input valid (every source) and
output ready. `plan_gemv` turns them into the activation beats and each PE's record stream; V x ceil(N/pes)
passes run back to back. With always-valid sources and an always-ready sink, result j must leave exactly
`bitvert_schedule(params, plan)[j]` cycles after the first input handshake.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.gen.bitvert import (
    BitVertParams,
    assemble_results,
    bitvert_golden,
    bitvert_schedule,
    plan_gemv,
    prune_column_budget,
    prune_rounded_average,
)
from hardwire.sim.runner import load_config, write_results
from hardwire.sim.streams import StreamSink, StreamSource, pack_fields, pack_lanes, reset, unpack_lanes

CLOCK_NS = 10


def default_cases(p: BitVertParams, seed: int = 1) -> list[dict]:
    """Random and adversarial weights (all ones = -1, zeros, alternating bits, extremes, exact half-ones
    columns, small magnitudes with long sign runs, rows whose work falls in different groups so that the PEs
    wait for each other, one PE with all the work, pruned), extreme activations, bubbles and back-pressure."""
    rng = np.random.default_rng([seed, p.group_size, p.lanes, p.pes, p.w_width])
    g = p.group_size
    k = min(p.k_max, 3 * g + g // 2 + 1)  # several groups and a partial last one
    n = 2 * p.pes + 1  # several passes and a partial last one
    w_lo, w_hi = p.w_range
    a_lo, a_hi = p.a_range
    alt_a = int("01" * p.w_width, 2) & ((1 << p.w_width) - 1)
    alt_b = alt_a ^ ((1 << p.w_width) - 1)
    to_signed = lambda u: u - (1 << p.w_width) if u >> (p.w_width - 1) else u

    def rand_w(lo=w_lo, hi=w_hi):
        return rng.integers(lo, hi + 1, (n, k))

    def rand_x(v=2):
        return rng.integers(a_lo, a_hi + 1, (v, k))

    half = np.zeros((n, k), dtype=np.int64)  # every column of every group exactly half ones (ties)
    half[:, ::2] = -1
    small = max(1, 1 << max(0, p.w_width - 4))
    imbalanced = np.zeros((n, k), dtype=np.int64)  # row j dense only in group j % groups: PEs wait
    groups = -(-k // g)
    for row in range(n):
        start = (row % groups) * g
        imbalanced[row, start : start + g] = rng.integers(w_lo, w_hi + 1, min(g, k - start))
    cases = [
        ("random", rand_w(), rand_x(3), 1.0, 1.0),
        ("all_ones_weights", np.full((n, k), -1), rand_x(), 1.0, 1.0),
        ("zero_weights", np.zeros((n, k), dtype=np.int64), rand_x(), 1.0, 1.0),
        (
            "alternating_bits",
            np.where((np.arange(k) + np.arange(n)[:, None]) % 2, to_signed(alt_a), to_signed(alt_b)),
            rand_x(),
            1.0,
            1.0,
        ),
        ("extremes", rng.choice([w_lo, w_hi, 0, -1], (n, k)), np.array([[a_lo] * k, [a_hi] * k]), 1.0, 1.0),
        ("half_ones_columns", half, rand_x(), 1.0, 1.0),
        ("small_weights", rand_w(-small, small - 1), rand_x(), 1.0, 1.0),
        (
            "mixed_rows",
            np.stack([rand_w()[0], np.zeros(k, int), np.full(k, w_lo), *rand_w(-2, 1)[: n - 3]]),
            rand_x(),
            1.0,
            1.0,
        ),
        ("imbalanced_pes", imbalanced, rand_x(), 1.0, 1.0),
        # PE 0 gets every dense row, the others zero rows: they run a pass ahead and wait for their results
        ("one_pe_behind", np.where((np.arange(n) % p.pes == 0)[:, None], rand_w(), 0), rand_x(3), 1.0, 1.0),
        # dense rows 1 (PE 1, pass 0) and 2 pes (PE 0, pass 2): PE 0 runs ahead through passes 0 and 1 and its
        # last issue of pass 1 waits for pass 0's result to leave before it starts its dense pass
        (
            "pass_ahead_waits",
            np.where(np.isin(np.arange(n), [1 % p.pes, 2 * p.pes])[:, None], rand_w(), 0),
            rand_x(2),
            1.0,
            1.0,
        ),
        (
            "pruned",
            prune_column_budget(
                prune_rounded_average(rand_w(), g, min(2, p.w_width - 1), p.w_width), g, min(1, g // 2), p.w_width
            ),
            rand_x(),
            1.0,
            1.0,
        ),
        ("input_bubbles", rand_w(), rand_x(), 0.5, 1.0),
        ("backpressure", rand_w(), rand_x(), 0.7, 0.3),
    ]
    return [
        {
            "name": name,
            "w": np.asarray(w, dtype=np.int64).tolist(),
            "x": np.asarray(x, dtype=np.int64).tolist(),
            "valid_probability": vp,
            "ready_probability": rp,
        }
        for name, w, x, vp, rp in cases
    ]


CONFIG = load_config()
CASES = {case["name"]: case for case in CONFIG.get("cases", [])}


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def bitvert_matches_golden(dut, case):
    assert case in CASES, "run through hardwire.sim.verify (no cases in the config)"
    spec = CASES[case]
    p = BitVertParams.from_dict(CONFIG["params"])
    w = np.array(spec["w"], dtype=np.int64)
    x = np.array(spec["x"], dtype=np.int64)
    vp, rp = spec["valid_probability"], spec["ready_probability"]
    plan = plan_gemv(p, w, x)

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    weight_ports = tuple(f"weights__{j}" for j in range(p.pes))
    await reset(dut, dut.clk, sources=("activations", *weight_ports), sinks=("results",))
    seed = CONFIG.get("seed", 1)
    act_source = StreamSource(dut, "activations", dut.clk, valid_probability=vp, seed=seed)
    act_source.send_all(
        pack_fields(
            {"data": pack_lanes(beat["data"], p.a_width), "last": beat["last"]},
            {"data": p.a_width * p.group_size, "last": 1},
        )
        for beat in plan.activations
    )
    record_widths = {"bits": p.group_size, "shift": p.shift_width, "negative": 1, "group_last": 1}
    sources = [act_source]
    for j, port in enumerate(weight_ports):
        source = StreamSource(dut, port, dut.clk, valid_probability=vp, seed=seed + 10 + j)
        source.send_all(pack_fields(r.payload(), record_widths) for r in plan.records[j])
        sources.append(source)
    sink = StreamSink(dut, "results", dut.clk, ready_probability=rp, seed=seed + 1)

    schedule = bitvert_schedule(p, plan)
    budget_ns = int((4 * (schedule[-1] + 10) + 1000) / min(vp, rp)) * CLOCK_NS
    raw = await with_timeout(sink.take(len(plan.passes)), budget_ns, "ns")
    for _ in range(2 * len(plan.activations) + 10):
        await RisingEdge(dut.clk)
    extra = len(sink.received) - len(plan.passes)

    beats = [unpack_lanes(beat, p.acc_width, p.pes, signed=True) for beat in raw]
    y_hw = assemble_results(p, plan, beats)
    y_golden = bitvert_golden(p, w, x)
    y_matmul = x @ w.T
    mismatches = int(np.count_nonzero(y_hw != y_golden))

    full_rate = vp == 1.0 and rp == 1.0
    start = min(s.transfer_cycles[0] for s in sources if s.transfer_cycles)
    measured = [c - start for c in sink.transfer_cycles[: len(plan.passes)]]
    write_results(
        {
            case: {
                "shape": list(plan.shape),
                "exact": mismatches == 0,
                "mismatches": mismatches,
                "golden_equals_matmul": bool(np.array_equal(y_golden, y_matmul)),
                "outputs": int(y_golden.size),
                "extra_beats": extra,
                "full_rate": full_rate,
                "check_cycles": full_rate,
                "result_cycles": measured,
                "model_result_cycles": schedule,
                "cycles": measured[-1] + 1,
                "model_cycles": schedule[-1] + 1,
                "pass_cycles": plan.pass_cycles,
                "utilization": sum(plan.pass_cycles) / (measured[-1] + 1),
            }
        }
    )

    if mismatches:
        v, row = (int(i) for i in np.argwhere(y_hw != y_golden)[0])
        raise AssertionError(
            f"{mismatches}/{y_golden.size} outputs differ from the golden model; first at "
            f"vector {v}, row {row}: hardware {y_hw[v, row]}, golden {y_golden[v, row]}"
        )
    assert np.array_equal(y_golden, y_matmul), "the golden model differs from x @ W.T"
    assert extra == 0, f"{extra} result beats beyond the {len(plan.passes)} expected"
    if full_rate:
        assert measured == schedule, f"result handshake cycles {measured}, the cycle model says {schedule}"
