"""cocotb testbench of the branching blocks (gen/branch.py): the duplicator (one source, two sinks) and the
elementwise add (two sources, one sink). Frames back to back; every output beat checked bit-exactly against
the block's golden model; with always-ready sinks every handshake cycle checked against its schedule model
(the sources may have bubbles: the schedule takes their recorded offer cycles).

The config (see `hardwire.sim.runner.load_config`) carries the block's parameters (their names say which
block it is) and the cases: frames (dup: a list of frames; add: a list of [a frame, b frame]), the valid and ready
probabilities per stream, and whether to check the schedule.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.gen.branch import AddParams, DupParams, add_golden, add_schedule, dup_golden, dup_schedule
from hardwire.sim.runner import load_config, write_results
from hardwire.sim.streams import StreamSink, StreamSource, pack_lanes, reset, unpack_lanes

from hardwire.params import int_range

CLOCK_NS = 10


def default_cases(p, seed: int = 1) -> list[dict]:
    """Random frames under bubbles and back-pressure (independent per stream), under bubbles with ready sinks
    (schedule checked), at full rate (schedule checked), and the extremes."""
    block = "dup" if isinstance(p, DupParams) else "addstreams"
    rng = np.random.default_rng(seed)
    size = p.frame_elements

    def frame(width, is_signed, kind="random"):
        lo, hi = int_range(width, is_signed)
        if kind == "random":
            return rng.integers(lo, hi + 1, size=size).tolist()
        return rng.choice([lo, hi, 0], size=size).tolist() if kind == "corner" else [lo if kind == "lo" else hi] * size

    if block == "dup":

        def frames(kind="random", n=3):
            return [frame(p.elem_width, p.elem_signed, kind) for _ in range(n)]
    else:

        def frames(kind="random", n=3):
            return [[frame(p.a_width, p.a_signed, kind), frame(p.b_width, p.b_signed, kind)] for _ in range(n)]

    extremes = frames("lo", 1) + frames("hi", 1) + frames("corner", 2)
    if block == "addstreams":  # the lowest a with the highest b and back
        extremes += [
            [frame(p.a_width, p.a_signed, "lo"), frame(p.b_width, p.b_signed, "hi")],
            [frame(p.a_width, p.a_signed, "hi"), frame(p.b_width, p.b_signed, "lo")],
        ]
    return [
        {"name": "backpressure", "frames": frames(), "valid": [0.6, 0.4], "ready": [0.5, 0.7], "check_schedule": False},
        {
            "name": "bubbles_schedule",
            "frames": frames(),
            "valid": [0.5, 0.8],
            "ready": [1.0, 1.0],
            "check_schedule": True,
        },
        {"name": "full_rate", "frames": frames(), "valid": [1.0, 1.0], "ready": [1.0, 1.0], "check_schedule": True},
        {"name": "extremes", "frames": extremes, "valid": [0.8, 0.9], "ready": [0.7, 0.6], "check_schedule": False},
    ]


CONFIG = load_config()
CASES = {case["name"]: case for case in CONFIG.get("cases", [])}


def _params():
    """The block's parameters from the config (the parameter names say which block it is)."""
    if "elem_width" in CONFIG["params"]:
        return DupParams(**CONFIG["params"])
    return AddParams(**CONFIG["params"])


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def frames_match_golden_and_schedule(dut, case):
    assert case in CASES, "run through hardwire.sim.verify (no cases in the config)"
    spec = CASES[case]
    p = _params()
    block = "dup" if isinstance(p, DupParams) else "addstreams"
    seed = CONFIG.get("seed", 1)
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    if block == "dup":
        ins, outs = ["inp"], ["out_a", "out_b"]
        inputs = [np.concatenate([np.asarray(f).reshape(-1, p.lanes) for f in spec["frames"]]).tolist()]
        golden = [dup_golden(p, f) for f in spec["frames"]]
        expected = [np.concatenate([g[k] for g in golden]).tolist() for k in range(2)]
        in_widths, out_fields = [p.elem_width], [(p.elem_width, p.elem_signed)] * 2
    else:
        ins, outs = ["inp_a", "inp_b"], ["out"]
        inputs = [
            np.concatenate([np.asarray(f[k]).reshape(-1, p.lanes) for f in spec["frames"]]).tolist() for k in range(2)
        ]
        expected = [np.concatenate([add_golden(p, a, b) for a, b in spec["frames"]]).tolist()]
        in_widths, out_fields = [p.a_width, p.b_width], [(p.out_shape.width, p.out_shape.signed)]
    await reset(dut, dut.clk, sources=tuple(ins), sinks=tuple(outs))
    sources = [
        StreamSource(dut, name, dut.clk, valid_probability=spec["valid"][k], seed=seed + k)
        for k, name in enumerate(ins)
    ]
    sinks = [
        StreamSink(dut, name, dut.clk, ready_probability=spec["ready"][k], seed=seed + 10 + k)
        for k, name in enumerate(outs)
    ]
    for source, beats, width in zip(sources, inputs, in_widths):
        source.send_all(pack_lanes(beat, width) for beat in beats)
    slowest = min(spec["valid"] + spec["ready"])
    budget_ns = CLOCK_NS * int((4 * len(inputs[0]) + 200) / slowest**2)
    got = []
    for sink, want, (width, is_signed) in zip(sinks, expected, out_fields):
        raw = await with_timeout(sink.take(len(want)), budget_ns, "ns")
        got.append([unpack_lanes(beat, width, p.lanes, signed=is_signed) for beat in raw])
    for _ in range(16):  # nothing may follow the expected beats
        await RisingEdge(dut.clk)
    extra = sum(len(s.received) for s in sinks) - sum(len(w) for w in expected)
    wrong = [(k, i) for k, (g, e) in enumerate(zip(got, expected)) for i, (x, y) in enumerate(zip(g, e)) if x != y]
    result = {
        "exact": not wrong,
        "mismatches": len(wrong),
        "extra_beats": extra,
        "beats": len(inputs[0]),
        "check_schedule": spec["check_schedule"],
    }
    problem = None
    if spec["check_schedule"]:
        first = min(s.offer_cycles[0] for s in sources)
        offered = [[t - first for t in s.offer_cycles] for s in sources]
        accepted = [[t - first for t in s.transfer_cycles] for s in sources]
        produced = [[t - first for t in s.transfer_cycles] for s in sinks]
        if block == "dup":
            model_accepted, model_produced = dup_schedule(p, offered[0])
        else:
            model_accepted, model_produced = add_schedule(p, offered[0], offered[1])
        accepted_ok = all(a == model_accepted for a in accepted)
        produced_ok = all(q == model_produced for q in produced)
        result |= {
            "schedule_accepted_ok": accepted_ok,
            "schedule_produced_ok": produced_ok,
            "total_cycles": max(q[-1] for q in produced) - min(a[0] for a in accepted) + 1,
        }
        if not accepted_ok:
            problem = f"input handshakes differ from the schedule: measured {accepted}, schedule {model_accepted}"
        elif not produced_ok:
            problem = f"output handshakes differ from the schedule: measured {produced}, schedule {model_produced}"
    write_results({case: result})
    if wrong:
        k, i = wrong[0]
        raise AssertionError(
            f"{len(wrong)} output beats differ from {block}'s golden model; first on {outs[k]} "
            f"beat {i}: hardware {got[k][i]}, golden {expected[k][i]}"
        )
    assert extra == 0, f"{extra} output beats beyond the expected"
    assert problem is None, problem
