"""The checks of one compiled-network simulation case, shared by both drivers: the cocotb testbench
(sim/tb_network.py) and the C++ harness (sim/fastsim.py) hand what they recorded at the stream ports to
`check_case`, so a verdict means the same whichever driver produced it.

A case (built by hardwire.hls.compile.simulate_network) gives the input beats of every inference, the golden
model's integer outputs and, for the paced case, the handshake cycles the composed cycle model predicts.
"""

from __future__ import annotations

from hardwire.sim.streams import unpack_lanes


def check_case(
    spec: dict, geometry: dict, raw: list[int], in_cycles: list[int], out_cycles: list[int], extra: int
) -> tuple[dict, str | None]:
    """(the case's results, the first failure as one message or None).

    `raw`: the output payloads taken, in order (the expected count of them); `in_cycles` / `out_cycles`: the
    cycles of the input and output transfers in one cycle count; `extra`: output beats after the expected ones.
    """
    expected = spec["expected"]  # per inference: list of output integers
    frames = len(spec["inputs"])
    out_beats = geometry["out_beats"]
    lanes = [
        unpack_lanes(beat, geometry["out_width"], geometry["out_lanes"], signed=geometry["out_signed"]) for beat in raw
    ]
    outputs = [[value for beat in lanes[f * out_beats : (f + 1) * out_beats] for value in beat] for f in range(frames)]
    mismatched = [f for f in range(frames) if outputs[f] != expected[f]]
    origin = in_cycles[0] if in_cycles else 0
    measured_in = [c - origin for c in in_cycles]
    measured_out = [c - origin for c in out_cycles[: frames * out_beats]]
    timing_ok = model_out = None
    if spec.get("model_accepted") is not None:
        model_in = [c - spec["model_accepted"][0] for c in spec["model_accepted"]]
        model_out = [c - spec["model_accepted"][0] for c in spec["model_produced"]]
        timing_ok = measured_in == model_in and measured_out == model_out
    results = {
        "frames": frames,
        "outputs": outputs,
        "mismatched_frames": len(mismatched),
        "extra_beats": extra,
        "first_input_to_last_output_cycles": measured_out[-1] + 1 if measured_out else None,
        "first_output_cycles": measured_out[0] if measured_out else None,
        "timing_matches_model": timing_ok,
        "input_cycles": measured_in,  # every transfer's cycle, counted from the first input's
        "output_cycles": measured_out,
    }
    if mismatched:
        f = mismatched[0]
        return results, (
            f"{len(mismatched)}/{frames} inferences differ from the golden model; first: "
            f"inference {f}: hardware {outputs[f]}, golden {expected[f]}"
        )
    if extra:
        return results, f"{extra} output beats beyond the {frames * out_beats} expected"
    if timing_ok is False:
        first_bad = next((i for i, (a, b) in enumerate(zip(measured_out, model_out)) if a != b), None)
        where = ("-", "-") if first_bad is None else (measured_out[first_bad], model_out[first_bad])
        return results, (
            f"handshake cycles differ from the network cycle model: inputs equal="
            f"{measured_in == model_in}, first differing output beat {first_bad}: measured {where[0]}"
            f", model {where[1]}"
        )
    return results, None
