"""Example testbench: a stream block that must deliver every beat unchanged and in order.

The DUT has an `In` stream `a` and an `Out` stream `y`, both carrying
`StructLayout({"data": ArrayLayout(signed(lane_width), lanes), "last": 1})`, plus Amaranth's `clk`/`rst`.
The testbench sends the corner vectors and then random ones, with random bubbles on `a.valid` and random
back-pressure on `y.ready` as configured, checks every output beat against the input, and reports the
transfer cycles through `write_results`.

Config (all optional): lanes, lane_width, beats, valid_probability, ready_probability, seed.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, with_timeout
from hardwire.sim.runner import load_config, write_results
from hardwire.sim.streams import (
    StreamSink,
    StreamSource,
    pack_fields,
    pack_lanes,
    transfer_span_cycles,
    unpack_fields,
    unpack_lanes,
)

CLOCK_PERIOD_NS = 10


def corner_vectors(lanes: int, width: int) -> list[list[int]]:
    """Zeros, both extremes, all-ones (-1), alternating bit patterns, and the extremes interleaved."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    alternating = int("01" * width, 2) & ((1 << width) - 1)
    as_signed = lambda bits: bits - (1 << width) if bits >> (width - 1) else bits
    return [
        [0] * lanes,
        [lo] * lanes,
        [hi] * lanes,
        [-1] * lanes,
        [as_signed(alternating)] * lanes,
        [as_signed(alternating ^ ((1 << width) - 1))] * lanes,
        [lo if i % 2 else hi for i in range(lanes)],
    ]


@cocotb.test()
async def passthrough_delivers_every_beat_unchanged_and_in_order(dut):
    config = load_config()
    lanes = config.get("lanes", 4)
    lane_width = config.get("lane_width", 8)
    beats = config.get("beats", 200)
    valid_probability = config.get("valid_probability", 1.0)
    ready_probability = config.get("ready_probability", 1.0)
    seed = config.get("seed", 0)
    fields = {"data": lanes * lane_width, "last": 1}

    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
    dut.rst.value = 1
    dut.a__valid.value = 0
    dut.y__ready.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0

    source = StreamSource(dut, "a", dut.clk, valid_probability=valid_probability, seed=seed)
    sink = StreamSink(dut, "y", dut.clk, ready_probability=ready_probability, seed=seed + 1)

    rng = random.Random(seed)
    lo, hi = -(1 << (lane_width - 1)), (1 << (lane_width - 1)) - 1
    vectors = corner_vectors(lanes, lane_width)
    vectors += [[rng.randint(lo, hi) for _ in range(lanes)] for _ in range(max(0, beats - len(vectors)))]
    vectors = vectors[:beats]
    sent = [
        pack_fields({"data": pack_lanes(vector, lane_width), "last": int(index % 8 == 7 or index == beats - 1)}, fields)
        for index, vector in enumerate(vectors)
    ]
    source.send_all(sent)

    worst_case_cycles = int(20 * beats / (valid_probability * ready_probability)) + 100
    received = await with_timeout(sink.take(len(sent)), worst_case_cycles * CLOCK_PERIOD_NS, "ns")

    for index, (want, got) in enumerate(zip(sent, received)):
        if want != got:
            want_fields, got_fields = unpack_fields(want, fields), unpack_fields(got, fields)
            raise AssertionError(
                f"beat {index}: sent data={unpack_lanes(want_fields['data'], lane_width, lanes, signed=True)} "
                f"last={want_fields['last']}, received data="
                f"{unpack_lanes(got_fields['data'], lane_width, lanes, signed=True)} last={got_fields['last']}"
            )

    # Nothing extra may follow: a duplicated beat would show up within a few idle cycles.
    await ClockCycles(dut.clk, 8)
    assert len(sink.received) == len(sent), f"received {len(sink.received)} beats, sent {len(sent)}"

    write_results(
        {
            "beats": len(sent),
            "input_cycles": source.transfer_cycles,
            "output_cycles": sink.transfer_cycles,
            "first_beat_latency_cycles": sink.transfer_cycles[0] - source.transfer_cycles[0],
            "span_cycles": transfer_span_cycles([source], [sink]),
        }
    )
