"""cocotb testbench of the sparse DSP chain engine: GEMV/GEMM jobs (a pattern, pruned integer weights, activation
vectors) compressed with the pruning tool, planned into beats, streamed; every output checked bit-exactly
against `sparse_golden` (from the encoding) and against torch's dense matmul on the pruned weights, and every
handshake cycle against `sparse_schedule`.

The caller (pytest, `hardwire sim sparse`) passes the parameters and the cases through the run's config; each
case becomes one cocotb test. A case lists jobs that run back to back on the stream (several jobs with
different patterns show the run-time switch) and the probabilities of input valid and output ready.
Checks: (a) every output bit-exact under the case's bubbles and back-pressure; (b) with an always-ready sink,
every input and output handshake cycle equals `sparse_schedule(params, offer cycles)`; (c) at full rate the
total cycles equal `sparse_cycles` (beats of all jobs + latency).
"""

from __future__ import annotations

import cocotb
import numpy as np
import torch
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.gen.sparse import (
    A_WIDTH,
    SparseParams,
    assemble,
    beat_fields,
    compress,
    decompress,
    plan,
    prune_nm,
    sparse_cycles,
    sparse_golden,
    sparse_schedule,
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

from hardwire.params import int_range

CLOCK_NS = 10


def _job(p: SparseParams, pattern: str, weights: np.ndarray, x: np.ndarray) -> dict:
    """A job with its weights pruned to `pattern` (pairs of rows share a mask with int4_packing)."""
    pruned = prune_nm(np.asarray(weights, dtype=np.int64), pattern, row_group=p.pack)
    return {"pattern": pattern, "weights": pruned.tolist(), "x": np.asarray(x, dtype=np.int64).tolist()}


def default_cases(p: SparseParams, seed: int = 1) -> list[dict]:
    """Per pattern one case of three jobs: random, extreme (-128/127 activations, the weight extremes) and
    zero-heavy operands. Then all patterns back to back (run-time switching), one-beat rows back to back
    (result credits), and random jobs under input bubbles and output back-pressure."""
    rng = np.random.default_rng([seed, p.lanes, p.chains, p.w_width, p.m_max])
    a_lo, a_hi = int_range(A_WIDTH, True)
    w_lo, w_hi = int_range(p.w_width, True)
    rows = 2 * p.chains + p.pack  # a partly filled last row group
    k = 2 * p.act_lanes + 3  # not a whole number of blocks nor of beats

    def weights(r=rows, kk=k):
        return rng.integers(w_lo, w_hi + 1, size=(r, kk))

    def acts(v, kk=k):
        return rng.integers(a_lo, a_hi + 1, size=(v, kk))

    cases = []
    for pattern in p.pattern_names:
        tag = pattern.replace(":", "of")
        extreme_w = rng.choice([w_lo, w_hi, 0], size=(rows, k), p=[0.45, 0.45, 0.1])
        extreme_w[0] = w_lo  # with x = -128: the largest sum
        extreme_w[1] = w_hi
        extreme_x = np.stack(
            [np.full(k, a_lo), np.full(k, a_hi), np.resize([a_lo, a_hi], k), rng.choice([a_lo, a_hi], size=k)]
        )
        zero_w = weights()
        zero_w[rng.random(zero_w.shape) < 0.5] = 0
        zero_w[-1] = 0
        zero_x = acts(3)
        zero_x[0] = 0
        zero_x[zero_x % 3 == 0] = 0
        # random, extreme and zero operands back to back: one test per pattern
        cases.append(
            (
                f"pattern_{tag}",
                [
                    _job(p, pattern, weights(), acts(3)),
                    _job(p, pattern, extreme_w, extreme_x),
                    _job(p, pattern, zero_w, zero_x),
                ],
                1.0,
                1.0,
            )
        )
    switching = [_job(p, pattern, weights(), acts(2)) for pattern in p.pattern_names]
    short_k = p.lanes  # one beat per row for every pattern
    short = [_job(p, pattern, weights(p.chains, short_k), acts(6, short_k)) for pattern in p.pattern_names]
    cases += [
        ("pattern_switch", switching, 1.0, 1.0),
        ("one_beat_rows", short, 1.0, 1.0),
        ("input_bubbles", [_job(p, pattern, weights(), acts(2)) for pattern in p.pattern_names], 0.5, 1.0),
        ("backpressure", [_job(p, pattern, weights(), acts(2)) for pattern in p.pattern_names], 0.6, 0.4),
        ("heavy_backpressure", switching[:2], 1.0, 0.15),
    ]
    return [
        {"name": name, "jobs": jobs, "valid_probability": vp, "ready_probability": rp} for name, jobs, vp, rp in cases
    ]


CONFIG = load_config()
CASES = {case["name"]: case for case in CONFIG.get("cases", [])}


def pack_beat(p: SparseParams, beat: dict) -> int:
    """One planned beat as the integer on `inp__payload`."""
    fields = beat_fields(p)
    return pack_fields(
        {
            "act": pack_lanes(beat["act"], A_WIDTH),
            "w": pack_lanes(beat["w"], p.w_width),
            "idx": pack_lanes(beat["idx"], p.index_bits),
            "pattern": beat["pattern"],
            "last": beat["last"],
        },
        fields,
    )


def torch_reference(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """torch's dense integer matmul on the pruned weights: Y = x @ W^T."""
    return torch.matmul(torch.as_tensor(x, dtype=torch.int64), torch.as_tensor(weights, dtype=torch.int64).T).numpy()


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def sparse_matches_golden(dut, case):
    assert case in CASES, "run through hardwire.sim.verify (no cases in the config)"
    spec = CASES[case]
    p = SparseParams.from_dict(CONFIG["params"])
    vp, rp = spec["valid_probability"], spec["ready_probability"]

    jobs = []
    for job in spec["jobs"]:
        w = np.asarray(job["weights"], dtype=np.int64)
        x = np.asarray(job["x"], dtype=np.int64)
        c = compress(w, job["pattern"], row_group=p.pack)
        assert np.array_equal(decompress(c), w), "compress/decompress does not round-trip"
        jobs.append((w, x, c, plan(p, c, x)))
    beats = [beat for *_, job_plan in jobs for beat in job_plan.beats]
    result_count = sum(len(job_plan.results) for *_, job_plan in jobs)

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await reset(dut, dut.clk, sources=("inp",), sinks=("out",))
    seed = CONFIG.get("seed", 1)
    source = StreamSource(dut, "inp", dut.clk, valid_probability=vp, seed=seed)
    sink = StreamSink(dut, "out", dut.clk, ready_probability=rp, seed=seed + 1)
    source.send_all(pack_beat(p, beat) for beat in beats)

    model_cycles = (
        sum(sparse_cycles(p, c.k, c.pattern, c.rows, x.shape[0])["beats"] for _, x, c, _ in jobs) + p.latency_cycles
    )
    budget_ns = int((20 * model_cycles + 1000) / min(vp, rp)) * CLOCK_NS
    raw = await with_timeout(sink.take(result_count), budget_ns, "ns")
    for _ in range(2 * p.latency_cycles + 4):  # nothing may come beyond the expected results
        await RisingEdge(dut.clk)
    extra = len(sink.received) - result_count

    lanes = [unpack_lanes(beat, p.acc_width, p.chains, signed=True) for beat in raw]
    mismatches, golden_vs_torch, outputs, multiplies = 0, True, 0, 0
    first_error = None
    start = 0
    for w, x, c, job_plan in jobs:
        y_hw = assemble(p, job_plan, lanes[start : start + len(job_plan.results)])
        start += len(job_plan.results)
        y_golden = sparse_golden(p, c, x)
        y_torch = torch_reference(w, x)
        golden_vs_torch &= bool(np.array_equal(y_golden, y_torch))
        bad = np.argwhere(y_hw != y_torch)
        mismatches += len(bad)
        outputs += y_torch.size
        multiplies += sparse_cycles(p, c.k, c.pattern, c.rows, x.shape[0])["multiplies"]
        if len(bad) and first_error is None:
            v, r = (int(i) for i in bad[0])
            first_error = (
                f"{c.pattern}: Y[{v},{r}] hardware {y_hw[v, r]}, torch {y_torch[v, r]}, golden {y_golden[v, r]}"
            )

    lasts = [beat["last"] for beat in beats]
    accepted, produced = sparse_schedule(p, source.offer_cycles, lasts)
    check_schedule = rp == 1.0
    schedule_ok = accepted == source.transfer_cycles and produced == sink.transfer_cycles
    full_rate = vp == 1.0 and rp == 1.0
    span = transfer_span_cycles([source], [sink])
    write_results(
        {
            case: {
                "patterns": [c.pattern for _, _, c, _ in jobs],
                "shape": list(jobs[0][3].shape),
                "exact": mismatches == 0,
                "mismatches": mismatches,
                "outputs": outputs,
                "golden_equals_torch": golden_vs_torch,
                "extra_beats": extra,
                "beats": len(beats),
                "check_schedule": check_schedule,
                "schedule_ok": schedule_ok,
                "cycles": span,
                "model_cycles": model_cycles,
                "check_cycles": full_rate,
                "utilization": multiplies / (p.lanes * p.chains * span),
            }
        }
    )

    assert golden_vs_torch, "golden model disagrees with torch.matmul on the pruned weights"
    assert mismatches == 0, f"{mismatches}/{outputs} outputs differ; first: {first_error}"
    assert extra == 0, f"{extra} result beats beyond the {result_count} expected"
    if check_schedule:
        for what, model, seen in (
            ("input", accepted, source.transfer_cycles),
            ("output", produced, sink.transfer_cycles),
        ):
            if model != seen:
                i = next((i for i, (a, b) in enumerate(zip(model, seen)) if a != b), min(len(model), len(seen)))
                raise AssertionError(
                    f"{what} handshake {i}: measured cycle {seen[i : i + 1]}, the schedule "
                    f"model says {model[i : i + 1]} ({len(seen)} measured, {len(model)} modelled)"
                )
    if full_rate:
        assert span == model_cycles, f"{span} cycles in total, sparse_cycles says {model_cycles}"
