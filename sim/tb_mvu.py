"""cocotb testbench of the matrix-vector-threshold unit: input vectors streamed back to back, every output
checked bit-exactly against `mvu_golden`, every handshake cycle against `mvu_schedule`.

The caller (pytest, `hardwire sim mvu`) passes the parameters and the cases through the run's config (see
`hardwire.sim.runner.load_config`); each case becomes one cocotb test. The hardware's content is the
standalone block's, `mvu_random_content(params)`, fixed when the Verilog was generated; the testbench
recomputes it from the same parameters (a wrong `content_seed` in the config therefore makes the check fail).

A case lists its input vectors and the probabilities of input valid and output ready. Checks, per the
stream contract: (a) every output bit-exact, several vectors back to back, under the case's bubbles and
back-pressure; (b) with an always-ready sink, every input and output handshake cycle equals
`mvu_schedule(params, offer cycles)`, the offer cycle of a beat being when the source first presented it;
(c) at full rate also the latency and total cycles of `mvu_cycles`.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.gen.mvu import (
    MvuParams,
    clamp_thresholds,
    mvu_cycles,
    mvu_golden,
    mvu_random_content,
    mvu_schedule,
    mvu_threshold_probes,
)
from hardwire.sim.runner import load_config, write_results
from hardwire.sim.streams import StreamSink, StreamSource, pack_lanes, reset, transfer_span_cycles, unpack_lanes

from hardwire.params import int_range

CLOCK_NS = 10


def _alternating(width: int, is_signed: bool, phase: int) -> int:
    pattern = int("01" * width, 2) & ((1 << width) - 1)
    if phase:
        pattern ^= (1 << width) - 1
    return pattern - (1 << width) if is_signed and pattern >> (width - 1) else pattern


def default_cases(p: MvuParams, seed: int = 1) -> list[dict]:
    """Random vectors, all-min, all-max, zeros, alternating bits, mixed extremes, the probe vectors that hit
    thresholds exactly, and random vectors under bubbles and back-pressure. Every case streams several
    vectors back to back."""
    rng = np.random.default_rng([seed, p.in_features, p.out_features, p.simd, p.pe])
    lo, hi = int_range(p.in_width, p.in_signed)
    k = p.in_features

    def rand(frames):
        return rng.integers(lo, hi + 1, size=(frames, k), dtype=np.int64)

    even = _alternating(p.in_width, p.in_signed, 0)
    odd = _alternating(p.in_width, p.in_signed, 1)
    alternating = np.array([[even if (i + v) % 2 else odd for i in range(k)] for v in range(4)])
    cases = [
        # name, vectors, valid probability, ready probability
        ("random_full_rate", rand(6), 1.0, 1.0),
        ("all_min", np.full((2, k), lo), 1.0, 1.0),
        ("all_max", np.full((2, k), hi), 1.0, 1.0),
        ("zeros", np.zeros((2, k), dtype=np.int64), 1.0, 1.0),
        ("alternating_bits", alternating, 1.0, 1.0),
        ("mixed_extremes", rng.choice([lo, hi, 0], size=(4, k)), 1.0, 1.0),
        ("threshold_boundary", mvu_threshold_probes(p), 1.0, 1.0),
        ("input_bubbles", rand(6), 0.5, 1.0),
        ("backpressure", rand(6), 0.6, 0.4),
        ("heavy_backpressure", rand(4), 1.0, 0.15),
    ]
    return [
        {"name": name, "x": np.asarray(x, dtype=np.int64).tolist(), "valid_probability": vp, "ready_probability": rp}
        for name, x, vp, rp in cases
    ]


CONFIG = load_config()
CASES = {case["name"]: case for case in CONFIG.get("cases", [])}


def _threshold_hits(p: MvuParams, weights, thresholds, x) -> int:
    """How many (vector, channel) accumulators equal one of the channel's thresholds (clamped, as stored)."""
    if thresholds is None:
        return 0
    acc = np.asarray(x, dtype=np.int64) @ weights.T
    stored = clamp_thresholds(p, thresholds)
    return int((acc[:, :, None] == stored[None, :, :]).any(axis=2).sum())


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def mvu_matches_golden(dut, case):
    assert case in CASES, "run through hardwire.sim.verify (no cases in the config)"
    spec = CASES[case]
    p = MvuParams.from_dict(CONFIG["params"])
    weights, thresholds = mvu_random_content(p)
    x = np.array(spec["x"], dtype=np.int64).reshape(len(spec["x"]), p.in_features)
    frames = x.shape[0]
    vp, rp = spec["valid_probability"], spec["ready_probability"]
    sf, nf = p.synapse_folds, p.neuron_folds

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await reset(dut, dut.clk, sources=("inp",), sinks=("out",))
    seed = CONFIG.get("seed", 1)
    source = StreamSource(dut, "inp", dut.clk, valid_probability=vp, seed=seed)
    sink = StreamSink(dut, "out", dut.clk, ready_probability=rp, seed=seed + 1)
    source.send_all(
        pack_lanes(x[v, s * p.simd : (s + 1) * p.simd], p.in_width) for v in range(frames) for s in range(sf)
    )

    summary = mvu_cycles(p, frames)
    budget_ns = int((20 * summary["total_cycles"] + 1000) / min(vp, rp)) * CLOCK_NS
    raw = await with_timeout(sink.take(frames * nf), budget_ns, "ns")
    # the unit must not emit anything beyond the expected beats
    for _ in range(2 * p.output_delay + 2 * nf * sf + 4):
        await RisingEdge(dut.clk)
    extra = len(sink.received) - frames * nf

    out_shape = p.out_shape
    beats = [unpack_lanes(beat, out_shape.width, p.pe, signed=out_shape.signed) for beat in raw]
    y_hw = np.asarray(beats, dtype=np.int64).reshape(frames, p.out_features)
    y_golden = mvu_golden(p, weights, thresholds, x)
    mismatches = int(np.count_nonzero(y_hw != y_golden))

    accepted, produced = mvu_schedule(p, source.offer_cycles)
    check_schedule = rp == 1.0
    schedule_ok = accepted == source.transfer_cycles and produced == sink.transfer_cycles
    full_rate = vp == 1.0 and rp == 1.0
    measured_latency = sink.transfer_cycles[0] - source.transfer_cycles[0]
    span = transfer_span_cycles([source], [sink])
    write_results(
        {
            case: {
                "shape": [frames, p.in_features, p.out_features],
                "exact": mismatches == 0,
                "mismatches": mismatches,
                "outputs": int(y_golden.size),
                "extra_beats": extra,
                "threshold_hits": _threshold_hits(p, weights, thresholds, x),
                "check_schedule": check_schedule,
                "schedule_ok": schedule_ok,
                "full_rate": full_rate,
                "latency_cycles": measured_latency,
                "model_latency_cycles": summary["latency_cycles"],
                "initiation_interval": summary["initiation_interval"],
                "cycles": span,
                "model_cycles": summary["total_cycles"],
                "check_cycles": full_rate,
                "utilization": frames * nf * sf / span,
            }
        }
    )

    if mismatches:
        v, n = (int(i) for i in np.argwhere(y_hw != y_golden)[0])
        raise AssertionError(
            f"{mismatches}/{y_golden.size} outputs differ from the golden model; first at "
            f"vector {v}, channel {n}: hardware {y_hw[v, n]}, golden {y_golden[v, n]}"
        )
    assert extra == 0, f"{extra} output beats beyond the {frames * nf} expected"
    if case == "threshold_boundary" and p.thresholds_mode:
        assert _threshold_hits(p, weights, thresholds, x) > 0, "no accumulator hit a threshold exactly"
    if check_schedule:
        for what, model, seen in (
            ("input", accepted, source.transfer_cycles),
            ("output", produced, sink.transfer_cycles),
        ):
            if model != seen:
                i = (
                    next(i for i, (a, b) in enumerate(zip(model, seen)) if a != b)
                    if len(model) == len(seen)
                    else min(len(model), len(seen))
                )
                raise AssertionError(
                    f"{what} handshake {i}: measured cycle {seen[i : i + 1]}, the schedule "
                    f"model says {model[i : i + 1]} ({len(seen)} measured, {len(model)} modelled)"
                )
    if full_rate:
        assert measured_latency == summary["latency_cycles"], (
            f"latency {measured_latency} cycles, mvu_cycles says {summary['latency_cycles']}"
        )
        assert span == summary["total_cycles"], f"{span} cycles in total, mvu_cycles says {summary['total_cycles']}"
