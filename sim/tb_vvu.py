"""cocotb testbench of the vector-vector-threshold unit (depthwise convolution): windows streamed back to back,
every output checked bit-exactly against `vvu_golden`, every handshake cycle against `vvu_schedule`.

Like sim/tb_mvu.py: the parameters and cases come through the run's config; the hardware's content is the
standalone block's, `vvu_random_content(params)`, recomputed here from the same parameters. Checks: (a) every
output bit-exact under the case's bubbles and back-pressure; (b) with an always-ready sink, every input and
output handshake cycle equals `vvu_schedule(params, offer cycles)`; (c) at full rate the latency and total
cycles of `vvu_cycles`.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.gen.vvu import (
    VvuParams,
    clamp_thresholds,
    vvu_cycles,
    vvu_golden,
    vvu_random_content,
    vvu_schedule,
    vvu_threshold_probes,
    window_beats,
)
from hardwire.sim.runner import load_config, write_results
from hardwire.sim.streams import StreamSink, StreamSource, pack_lanes, reset, transfer_span_cycles, unpack_lanes

from hardwire.params import int_range

CLOCK_NS = 10


def default_cases(p: VvuParams, seed: int = 1) -> list[dict]:
    """Random windows, all-min, all-max, zeros, mixed extremes, the probe windows that hit thresholds exactly,
    and random windows under bubbles and back-pressure; several windows back to back in every case."""
    rng = np.random.default_rng([seed, p.channels, p.kernel_elements, p.pe, p.simd])
    lo, hi = int_range(p.in_width, p.in_signed)
    shape = (p.kernel_elements, p.channels)

    def rand(frames):
        return rng.integers(lo, hi + 1, size=(frames, *shape), dtype=np.int64)

    cases = [
        ("random_full_rate", rand(6), 1.0, 1.0),
        ("all_min", np.full((2, *shape), lo), 1.0, 1.0),
        ("all_max", np.full((2, *shape), hi), 1.0, 1.0),
        ("zeros", np.zeros((2, *shape), dtype=np.int64), 1.0, 1.0),
        ("mixed_extremes", rng.choice([lo, hi, 0], size=(4, *shape)), 1.0, 1.0),
        ("threshold_boundary", vvu_threshold_probes(p)[:8], 1.0, 1.0),
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


def _threshold_hits(p: VvuParams, weights, thresholds, x) -> int:
    if thresholds is None:
        return 0
    acc = np.einsum("vkc,ck->vc", np.asarray(x, dtype=np.int64), weights)
    stored = clamp_thresholds(p, thresholds)
    return int((acc[:, :, None] == stored[None, :, :]).any(axis=2).sum())


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def vvu_matches_golden(dut, case):
    assert case in CASES, "run through hardwire.sim.verify (no cases in the config)"
    spec = CASES[case]
    p = VvuParams.from_dict(CONFIG["params"])
    weights, thresholds = vvu_random_content(p)
    x = np.array(spec["x"], dtype=np.int64).reshape(-1, p.kernel_elements, p.channels)
    frames = len(x)
    vp, rp = spec["valid_probability"], spec["ready_probability"]
    cf = p.channel_folds

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await reset(dut, dut.clk, sources=("inp",), sinks=("out",))
    seed = CONFIG.get("seed", 1)
    source = StreamSource(dut, "inp", dut.clk, valid_probability=vp, seed=seed)
    sink = StreamSink(dut, "out", dut.clk, ready_probability=rp, seed=seed + 1)
    source.send_all(pack_lanes(beat, p.in_width) for v in range(frames) for beat in window_beats(p, x[v]))

    summary = vvu_cycles(p, frames)
    budget_ns = int((20 * summary["total_cycles"] + 1000) / min(vp, rp)) * CLOCK_NS
    raw = await with_timeout(sink.take(frames * cf), budget_ns, "ns")
    for _ in range(2 * p.output_delay + 2 * p.beats_per_window + 4):
        await RisingEdge(dut.clk)
    extra = len(sink.received) - frames * cf

    out_shape = p.out_shape
    beats = [unpack_lanes(beat, out_shape.width, p.pe, signed=out_shape.signed) for beat in raw]
    y_hw = np.asarray(beats, dtype=np.int64).reshape(frames, p.channels)
    y_golden = vvu_golden(p, weights, thresholds, x)
    mismatches = int(np.count_nonzero(y_hw != y_golden))

    accepted, produced = vvu_schedule(p, source.offer_cycles)
    check_schedule = rp == 1.0
    schedule_ok = accepted == source.transfer_cycles and produced == sink.transfer_cycles
    full_rate = vp == 1.0 and rp == 1.0
    measured_latency = sink.transfer_cycles[0] - source.transfer_cycles[0]
    span = transfer_span_cycles([source], [sink])
    write_results(
        {
            case: {
                "shape": [frames, p.kernel_elements, p.channels],
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
                "utilization": frames * p.beats_per_window / span,
            }
        }
    )

    if mismatches:
        v, c = (int(i) for i in np.argwhere(y_hw != y_golden)[0])
        raise AssertionError(
            f"{mismatches}/{y_golden.size} outputs differ from the golden model; first at "
            f"window {v}, channel {c}: hardware {y_hw[v, c]}, golden {y_golden[v, c]}"
        )
    assert extra == 0, f"{extra} output beats beyond the {frames * cf} expected"
    if case == "threshold_boundary" and p.thresholds_mode:
        assert _threshold_hits(p, weights, thresholds, x) > 0, "no accumulator hit a threshold exactly"
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
        assert measured_latency == summary["latency_cycles"], (
            f"latency {measured_latency} cycles, vvu_cycles says {summary['latency_cycles']}"
        )
        assert span == summary["total_cycles"], f"{span} cycles in total, vvu_cycles says {summary['total_cycles']}"
