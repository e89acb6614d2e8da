"""cocotb testbench of the dataflow blocks (swg, maxpool, dwc): frames back to back, every output beat
checked bit-exactly against the block's golden model, and every handshake cycle against its schedule model.

The caller (pytest, `hardwire sim NAME`) passes the parameters and the cases through the run's config
(see `hardwire.sim.runner.load_config`); the parameter names say which block it is. A case lists its
frames (each the flat element sequence of one input frame in stream order), the valid/ready probabilities,
and whether the handshake cycles must equal `<block>_schedule` (only with an always-ready sink: the
schedule assumes one). The source records the cycle it first presented each beat (`offer_cycles`); given
those, the schedule must reproduce every recorded input and output handshake.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.gen.dwc import DwcParams, dwc_golden, dwc_schedule
from hardwire.gen.pool import PoolParams, pool_golden, pool_schedule
from hardwire.gen.swg import SwgParams, swg_golden, swg_schedule
from hardwire.sim.runner import load_config, write_results
from hardwire.sim.streams import StreamSink, StreamSource, pack_lanes, reset, unpack_lanes

from hardwire.params import int_range

CLOCK_NS = 10


# --- what differs between the blocks ---------------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    name: str
    params: type
    golden: Callable
    schedule: Callable
    in_lanes: Callable  # p -> lanes of an input beat
    out_lanes: Callable  # p -> lanes of an output beat
    frame_shape: Callable  # p -> shape of one input frame for the golden model


ADAPTERS = [
    Adapter(
        "swg",
        SwgParams,
        swg_golden,
        swg_schedule,
        lambda p: p.simd,
        lambda p: p.simd,
        lambda p: (p.in_height, p.in_width, p.channels),
    ),
    Adapter(
        "maxpool",
        PoolParams,
        pool_golden,
        pool_schedule,
        lambda p: p.simd,
        lambda p: p.simd,
        lambda p: (p.in_height, p.in_width, p.channels),
    ),
    Adapter(
        "dwc",
        DwcParams,
        dwc_golden,
        dwc_schedule,
        lambda p: p.in_lanes,
        lambda p: p.out_lanes,
        lambda p: (p.frame_elements,),
    ),
]


def adapter_for(params) -> Adapter:
    """The block's adapter, from a params object or from its dict (the config carries no block name)."""
    for adapter in ADAPTERS:
        if isinstance(params, adapter.params):
            return adapter
        names = {f.name for f in dataclasses.fields(adapter.params)}
        if isinstance(params, dict) and set(params) == names:
            return adapter
    raise ValueError(f"parameters {params!r} belong to none of {[a.name for a in ADAPTERS]}")


def expected_beats(p, frames: list[np.ndarray]) -> list[list[int]]:
    """The golden model's output of every frame, as beats of output lanes, frames back to back."""
    adapter = adapter_for(p)
    lanes = adapter.out_lanes(p)
    out = [
        adapter.golden(p, np.asarray(f, dtype=np.int64).reshape(adapter.frame_shape(p))).reshape(-1, lanes)
        for f in frames
    ]
    return np.concatenate(out).tolist()


def input_beats(p, frames: list[np.ndarray]) -> list[list[int]]:
    lanes = adapter_for(p).in_lanes(p)
    return np.concatenate([np.asarray(f, dtype=np.int64).reshape(-1, lanes) for f in frames]).tolist()


# --- cases ------------------------------------------------------------------------------------------


def default_cases(p, seed: int = 1) -> list[dict]:
    """Random frames back to back under bubbles and back-pressure, under bubbles with a ready sink
    (schedule checked), at full rate (schedule checked), and extremes / zeros / alternating bits."""
    adapter = adapter_for(p)
    rng = np.random.default_rng(seed)
    lo, hi = int_range(p.elem_width, p.elem_signed)
    size = int(np.prod(adapter.frame_shape(p)))

    def random_frames(count):
        return [rng.integers(lo, hi + 1, size=size, dtype=np.int64) for _ in range(count)]

    pattern = int("01" * p.elem_width, 2) & ((1 << p.elem_width) - 1)
    alternating = [pattern, pattern ^ ((1 << p.elem_width) - 1)]
    if p.elem_signed:
        alternating = [v - (1 << p.elem_width) if v >> (p.elem_width - 1) else v for v in alternating]
    corner_frames = [
        np.full(size, lo),
        np.full(size, hi),
        np.zeros(size, dtype=np.int64),
        rng.choice([lo, hi, 0, -1 if p.elem_signed else 1], size=size),
        np.resize(np.array(alternating), size),
    ]
    cases = [
        ("backpressure", random_frames(3), 0.6, 0.5, False),
        ("bubbles_schedule", random_frames(3), 0.6, 1.0, True),
        ("full_rate", random_frames(3), 1.0, 1.0, True),
        ("extremes", corner_frames, 0.8, 0.7, False),
        ("extremes_full_rate", corner_frames[:3], 1.0, 1.0, True),
    ]
    return [
        {
            "name": name,
            "frames": [np.asarray(f, dtype=np.int64).tolist() for f in frames],
            "valid_probability": vp,
            "ready_probability": rp,
            "check_schedule": check,
        }
        for name, frames, vp, rp, check in cases
    ]


# --- the test ---------------------------------------------------------------------------------------

CONFIG = load_config()
CASES = {case["name"]: case for case in CONFIG.get("cases", [])}


def _first_difference(a: list[int], b: list[int]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first at beat {i}: measured {x}, schedule {y}"
    return f"lengths differ: measured {len(a)}, schedule {len(b)}"


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def frames_match_golden_and_schedule(dut, case):
    assert case in CASES, "run through hardwire.sim.verify (no cases in the config)"
    spec = CASES[case]
    adapter = adapter_for(CONFIG["params"])
    p = adapter.params(**CONFIG["params"])
    frames = [np.asarray(f, dtype=np.int64) for f in spec["frames"]]
    beats_in = input_beats(p, frames)
    expected = expected_beats(p, frames)
    in_lanes, out_lanes = adapter.in_lanes(p), adapter.out_lanes(p)

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await reset(dut, dut.clk, sources=("inp",), sinks=("out",))

    seed = CONFIG.get("seed", 1)
    source = StreamSource(dut, "inp", dut.clk, valid_probability=spec["valid_probability"], seed=seed)
    sink = StreamSink(dut, "out", dut.clk, ready_probability=spec["ready_probability"], seed=seed + 1)
    source.send_all(pack_lanes(beat, p.elem_width) for beat in beats_in)

    full_rate_accepted, full_rate_produced = adapter.schedule(p, [0] * len(beats_in))
    span = max(full_rate_produced[-1] if full_rate_produced else 0, full_rate_accepted[-1])
    slowest = min(spec["valid_probability"], spec["ready_probability"])
    budget_ns = CLOCK_NS * int((4 * span + 200) / slowest**2)
    raw = await with_timeout(sink.take(len(expected)), budget_ns, "ns")
    for _ in range(16):  # nothing may follow the expected beats
        await RisingEdge(dut.clk)
    extra = len(sink.received) - len(expected)

    got = [unpack_lanes(beat, p.elem_width, out_lanes, signed=p.elem_signed) for beat in raw]
    wrong = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]

    result = {
        "beats_in": len(beats_in),
        "beats_out": len(expected),
        "frames": len(frames),
        "exact": not wrong,
        "mismatches": len(wrong),
        "extra_beats": extra,
        "check_schedule": spec["check_schedule"],
        "in_lanes": in_lanes,
    }
    schedule_problem = None
    if spec["check_schedule"]:
        first = source.offer_cycles[0]
        offered = [t - first for t in source.offer_cycles]
        accepted = [t - first for t in source.transfer_cycles]
        produced = [t - first for t in sink.transfer_cycles]
        model_accepted, model_produced = adapter.schedule(p, offered)
        result |= {
            "schedule_accepted_ok": accepted == model_accepted,
            "schedule_produced_ok": produced == model_produced,
            "latency_cycles": produced[0] - accepted[0],
            "total_cycles": produced[-1] - accepted[0] + 1,
        }
        if accepted != model_accepted:
            schedule_problem = "input handshakes differ from the schedule: " + _first_difference(
                accepted, model_accepted
            )
        elif produced != model_produced:
            schedule_problem = "output handshakes differ from the schedule: " + _first_difference(
                produced, model_produced
            )
    write_results({case: result})

    if wrong:
        i = wrong[0]
        raise AssertionError(
            f"{len(wrong)}/{len(expected)} output beats differ from {adapter.name}'s golden model;"
            f" first is beat {i}: hardware {got[i]}, golden {expected[i]}"
        )
    assert extra == 0, f"{extra} output beats beyond the {len(expected)} expected"
    assert schedule_problem is None, schedule_problem
