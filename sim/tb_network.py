"""cocotb testbench of a compiled dataflow network (hls/rtl.py): inferences streamed in, outputs checked.

The caller (hardwire.hls.compile, the tests) passes through the run's config the stream geometry, the input
beats of every inference, the golden model's integer outputs and, for full-rate cases, the handshake cycles the
composed cycle model predicts. Each case is one cocotb test; the received outputs go back in results.json so the
caller can also turn them into the model's float outputs and compare those with qonnx' execution.
"""

from __future__ import annotations

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.sim.runner import load_config, write_results
from hardwire.sim.network_check import check_case
from hardwire.sim.streams import StreamSink, StreamSource, pack_lanes, reset

CLOCK_NS = 10
CONFIG = load_config()
CASES = CONFIG.get("cases", {})


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def network_matches_golden(dut, case):
    assert case in CASES, "run through hardwire.hls.compile (no cases in the config)"
    spec = CASES[case]
    geometry = CONFIG["geometry"]
    inputs = spec["inputs"]  # per inference: list of beats, each a list of lane values
    frames = len(inputs)
    out_beats = geometry["out_beats"]

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await reset(dut, dut.clk, sources=("inp",), sinks=("out",))
    seed = CONFIG.get("seed", 1)
    payloads = [pack_lanes(beat, geometry["in_width"]) for beats in inputs for beat in beats]
    source = StreamSource(
        dut, "inp", dut.clk, valid_probability=spec.get("valid_probability", 1.0), seed=seed, offers=spec.get("offers")
    )
    source.send_all(payloads)
    sink = StreamSink(dut, "out", dut.clk, ready_probability=spec["ready_probability"], seed=seed + 1)
    budget_cycles = spec["budget_cycles"]
    raw = await with_timeout(sink.take(frames * out_beats), budget_cycles * CLOCK_NS, "ns")
    for _ in range(64):  # nothing may follow the expected beats
        await RisingEdge(dut.clk)
    extra = len(sink.received) - frames * out_beats

    results, failure = check_case(spec, geometry, raw, source.transfer_cycles, sink.transfer_cycles, extra)
    write_results({case: results})
    assert failure is None, failure
