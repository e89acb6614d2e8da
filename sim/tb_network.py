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
from hardwire.sim.streams import StreamSink, StreamSource, pack_lanes, reset, unpack_lanes

CLOCK_NS = 10
CONFIG = load_config()
CASES = CONFIG.get("cases", {})


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def network_matches_golden(dut, case):
    assert case in CASES, "run through hardwire.hls.compile (no cases in the config)"
    spec = CASES[case]
    geometry = CONFIG["geometry"]
    inputs = spec["inputs"]                    # per inference: list of beats, each a list of lane values
    expected = spec["expected"]                # per inference: list of output integers
    frames = len(inputs)
    out_beats = geometry["out_beats"]

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await reset(dut, dut.clk, sources=("inp",), sinks=("out",))
    seed = CONFIG.get("seed", 1)
    payloads = [pack_lanes(beat, geometry["in_width"]) for beats in inputs for beat in beats]
    source = StreamSource(dut, "inp", dut.clk, valid_probability=spec.get("valid_probability", 1.0), seed=seed,
                          offers=spec.get("offers"))
    source.send_all(payloads)
    sink = StreamSink(dut, "out", dut.clk, ready_probability=spec["ready_probability"], seed=seed + 1)
    budget_cycles = spec["budget_cycles"]
    raw = await with_timeout(sink.take(frames * out_beats), budget_cycles * CLOCK_NS, "ns")
    for _ in range(64):                        # nothing may follow the expected beats
        await RisingEdge(dut.clk)
    extra = len(sink.received) - frames * out_beats

    lanes = [unpack_lanes(beat, geometry["out_width"], geometry["out_lanes"], signed=geometry["out_signed"])
             for beat in raw]
    outputs = [[value for beat in lanes[f * out_beats:(f + 1) * out_beats] for value in beat] for f in range(frames)]
    mismatched = [f for f in range(frames) if outputs[f] != expected[f]]
    measured_in = [c - source.transfer_cycles[0] for c in source.transfer_cycles]
    measured_out = [c - source.transfer_cycles[0] for c in sink.transfer_cycles[:frames * out_beats]]
    timing_ok = None
    if spec.get("model_accepted") is not None:
        model_in = [c - spec["model_accepted"][0] for c in spec["model_accepted"]]
        model_out = [c - spec["model_accepted"][0] for c in spec["model_produced"]]
        timing_ok = measured_in == model_in and measured_out == model_out
    write_results({case: {
        "frames": frames,
        "outputs": outputs,
        "mismatched_frames": len(mismatched),
        "extra_beats": extra,
        "first_input_to_last_output_cycles": measured_out[-1] + 1 if measured_out else None,
        "first_output_cycles": measured_out[0] if measured_out else None,
        "timing_matches_model": timing_ok,
    }})
    if mismatched:
        f = mismatched[0]
        raise AssertionError(f"{len(mismatched)}/{frames} inferences differ from the golden model; first: "
                             f"inference {f}: hardware {outputs[f]}, golden {expected[f]}")
    assert extra == 0, f"{extra} output beats beyond the {frames * out_beats} expected"
    if timing_ok is False:
        first_bad = next((i for i, (a, b) in enumerate(zip(measured_out, model_out)) if a != b), None)
        raise AssertionError(
            f"handshake cycles differ from the network cycle model: inputs equal={measured_in == model_in}, "
            f"first differing output beat {first_bad}: measured {measured_out[first_bad] if first_bad is not None else '-'}"
            f", model {model_out[first_bad] if first_bad is not None else '-'}")
