"""cocotb testbench of the softmax unit: vectors of run-time length streamed back to back, every output checked
bit-exactly against `softmax_golden` (and its `last` flag), every handshake cycle against `softmax_schedule`
(always-ready sink, any input bubbles), and the error against float64 torch.softmax reported in output LSBs.

The caller (pytest, `hardwire sim softmax`) passes the parameters and the cases through the run's config; each
case becomes one cocotb test. A case lists its vectors (input codes) and the valid/ready probabilities.
"""

from __future__ import annotations

import cocotb
import numpy as np
import torch
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.gen.softmax import SoftmaxParams, needs_fallback, softmax_cycles, softmax_golden, softmax_schedule
from hardwire.sim.runner import load_config, write_results
from hardwire.sim.streams import StreamSink, StreamSource, pack_fields, reset, transfer_span_cycles, unpack_fields

from hardwire.params import int_range

CLOCK_NS = 10


def float_reference(p: SoftmaxParams, x) -> np.ndarray:
    """torch.softmax in float64 of the real input values, scaled to output LSBs (not rounded)."""
    real = torch.tensor(np.asarray(x, dtype=np.float64) / 2.0**p.in_frac, dtype=torch.float64)
    return torch.softmax(real, dim=0).numpy() * 2.0**p.out_width


def default_cases(p: SoftmaxParams, seed: int = 1) -> list[dict]:
    """Random vectors of random lengths, the extremes (all equal, one dominant, very negative, length 1, max
    length, most-negative/most-positive codes), for unified_max vectors on both sides of the fallback, and
    random vectors under bubbles and back-pressure."""
    rng = np.random.default_rng([seed, p.n_max, p.in_width])
    lo, hi = int_range(p.in_width, True)
    n = p.n_max

    def rand(count, low=lo, high=hi):
        return [rng.integers(low, high + 1, int(rng.integers(1, n + 1))).tolist() for _ in range(count)]

    dominant = [lo] * n
    dominant[int(rng.integers(0, n))] = hi
    near_top = [hi - int(v) for v in rng.integers(0, 3, n)]
    cases = [
        ("random_full_rate", rand(6), 1.0, 1.0),
        ("all_equal", [[int(rng.integers(lo, hi + 1))] * n, [lo] * n, [hi] * n, [0] * 3], 1.0, 1.0),
        ("one_dominant", [dominant, [hi] + [lo] * (n - 1), [lo] * (n - 1) + [hi]], 1.0, 1.0),
        ("very_negative", [[lo + int(v) for v in rng.integers(0, 4, n)], [lo, lo + 1]], 1.0, 1.0),
        ("length_1", [[0], [lo], [hi], [int(rng.integers(lo, hi + 1))]], 1.0, 1.0),
        ("max_length", [rng.integers(lo, hi + 1, n).tolist(), near_top], 1.0, 1.0),
        ("extreme_codes", [rng.choice([lo, hi], n).tolist(), [lo, hi] * (n // 2), [hi, lo]], 1.0, 1.0),
        ("input_bubbles", rand(5), 0.5, 1.0),
        ("backpressure", rand(5), 0.6, 0.4),
        ("heavy_backpressure", rand(3), 1.0, 0.15),
    ]
    if p.variant == "unified_max":
        phi, window = p.max_estimate, p.estimate_window
        inside = [
            rng.integers(max(lo, phi - window - 40), phi + 1, int(rng.integers(1, n + 1))).tolist() for _ in range(4)
        ]
        for vector in inside:
            vector[0] = int(rng.integers(max(lo, phi - window), phi + 1))  # the max is within the window
        over = [min(hi, phi + 1)] + rand(1)[0]
        cases.append(
            (
                "estimate_holds_and_falls_back",
                [*inside, over[:n], [phi - window - 1] if phi - window > lo else [phi]],
                1.0,
                1.0,
            )
        )
    if p.variant == "online_pipelined":
        # lengths around multiples of the lane count (lanes left unused, lanes with one more element), short
        # vectors back to back (the combinations wait for the lanes' last updates and for the previous hand-off),
        # and ramps (the max grows in every lane at every element: a rescale per element)
        lanes = p.lanes
        lengths = [length for length in (lanes - 1, lanes, lanes + 1, 2 * lanes - 1, 2 * lanes + 1, n) if length <= n]
        ramp = [min(hi, lo + 3 * i) for i in range(n)]
        cases += [
            ("lane_lengths", [rng.integers(lo, hi + 1, length).tolist() for length in lengths], 1.0, 1.0),
            (
                "short_back_to_back",
                [rng.integers(lo, hi + 1, length).tolist() for length in (1, 2, 1, 3, 1, 1, min(n, lanes + 1), 2)],
                1.0,
                1.0,
            ),
            ("ramps", [ramp, ramp[::-1], [hi] * (n - 1) + [lo]], 1.0, 1.0),
            (
                "short_under_backpressure",
                [rng.integers(lo, hi + 1, length).tolist() for length in (1, 2, 3, 1, min(n, lanes + 1))],
                0.7,
                0.5,
            ),
        ]
    return [
        {
            "name": name,
            "vectors": [list(map(int, v)) for v in vectors],
            "valid_probability": vp,
            "ready_probability": rp,
        }
        for name, vectors, vp, rp in cases
    ]


CONFIG = load_config()
CASES = {case["name"]: case for case in CONFIG.get("cases", [])}


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def softmax_matches_golden(dut, case):
    assert case in CASES, "run through hardwire.sim.verify (no cases in the config)"
    spec = CASES[case]
    p = SoftmaxParams.from_dict(CONFIG["params"])
    vectors = [np.asarray(v, dtype=np.int64) for v in spec["vectors"]]
    vp, rp = spec["valid_probability"], spec["ready_probability"]
    in_widths = {"data": p.in_width, "last": 1}
    out_widths = {"data": p.out_width, "last": 1}

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await reset(dut, dut.clk, sources=("inp",), sinks=("out",))
    seed = CONFIG.get("seed", 1)
    source = StreamSource(dut, "inp", dut.clk, valid_probability=vp, seed=seed)
    sink = StreamSink(dut, "out", dut.clk, ready_probability=rp, seed=seed + 1)
    # a vector of n_max elements ends without `last` on its final beat (the unit ends it by its length)
    source.send_all(
        pack_fields({"data": int(x), "last": int(i == len(v) - 1 and len(v) < p.n_max)}, in_widths)
        for v in vectors
        for i, x in enumerate(v)
    )
    total = sum(len(v) for v in vectors)
    model_budget = sum(softmax_cycles(p, len(v), needs_fallback(p, v))["initiation_interval"] for v in vectors)
    budget_ns = int((4 * model_budget + 1000) / min(vp, rp)) * CLOCK_NS
    raw = await with_timeout(sink.take(total), budget_ns, "ns")
    for _ in range(4 * p.output_delay + 20):
        await RisingEdge(dut.clk)
    extra = len(sink.received) - total

    beats = [unpack_fields(beat, out_widths) for beat in raw]
    got = np.array([b["data"] for b in beats], dtype=np.int64)
    lasts = [b["last"] for b in beats]
    golden = np.concatenate([softmax_golden(p, v) for v in vectors])
    expected_lasts = [int(i == len(v) - 1) for v in vectors for i in range(len(v))]
    mismatches = int(np.count_nonzero(got != golden))
    reference = np.concatenate([float_reference(p, v) for v in vectors])
    error = np.abs(got - reference)

    accepted, produced = softmax_schedule(p, vectors, source.offer_cycles)
    check_schedule = rp == 1.0
    schedule_ok = accepted == source.transfer_cycles and produced == sink.transfer_cycles
    full_rate = vp == 1.0 and rp == 1.0
    write_results(
        {
            case: {
                "shape": [len(vectors), max(len(v) for v in vectors)],
                "exact": mismatches == 0 and lasts == expected_lasts,
                "mismatches": mismatches,
                "last_ok": lasts == expected_lasts,
                "outputs": total,
                "extra_beats": extra,
                "fallbacks": sum(needs_fallback(p, v) for v in vectors),
                "max_error_lsb": float(error.max()),
                "mean_error_lsb": float(error.mean()),
                "check_schedule": check_schedule,
                "schedule_ok": schedule_ok,
                "full_rate": full_rate,
                "cycles": transfer_span_cycles([source], [sink]),
                "model_cycles": produced[-1] - accepted[0] + 1,
                "check_cycles": full_rate,
                "utilization": total / max(1, transfer_span_cycles([source], [sink])),
            }
        }
    )

    if mismatches:
        i = int(np.argwhere(got != golden)[0][0])
        raise AssertionError(
            f"{mismatches}/{total} outputs differ from the golden model; first at output {i}: "
            f"hardware {got[i]}, golden {golden[i]}"
        )
    assert lasts == expected_lasts, f"last flags {lasts} != {expected_lasts}"
    assert extra == 0, f"{extra} output beats beyond the {total} expected"
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
