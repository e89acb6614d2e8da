"""cocotb testbench: yosys' own ECP5 multiplier mapping (synth_ecp5 of `a * b`, which sets MULT18X18D's
SIGNEDA/SIGNEDB and wires its A/B/P bits) simulated with our MULT18X18D model (gen/models/MULT18X18D.v): the
netlist must multiply exactly. The DUT (`mul_check`, from tests/test_dsp.py) has a signed x zero-extended,
a signed x signed and an 18-bit unsigned x unsigned product."""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import Timer
from hardwire.sim.runner import load_config, write_results


def _signed(value: int, width: int) -> int:
    return value - (1 << width) if value >> (width - 1) else value


@cocotb.test()
async def yosys_mapped_products_are_exact_with_the_model(dut):
    rng = random.Random(load_config().get("seed", 1))
    top = (1 << 18) - 1
    corners = [
        (-2048, 1023, -256, -256, top, top),
        (2047, 1023, 255, -256, top, 1),
        (-2048, 0, -256, 255, 1 << 17, top),
        (0, 1, 0, 0, 0, 0),
        (-1, 1023, -1, -1, 1, 1),
        (2047, 1, 255, 255, 1 << 17, 1 << 17),
    ]
    cases = corners + [
        (
            rng.randint(-2048, 2047),
            rng.randint(0, 1023),
            rng.randint(-256, 255),
            rng.randint(-256, 255),
            rng.randint(0, top),
            rng.randint(0, top),
        )
        for _ in range(2000)
    ]
    bad = []
    for a, b, c, d, e, f in cases:
        dut.a.value, dut.b.value = a & 0xFFF, b
        dut.c.value, dut.d.value = c & 0x1FF, d & 0x1FF
        dut.e.value, dut.f.value = e, f
        await Timer(1, unit="ns")
        got = (_signed(int(dut.y_su.value), 23), _signed(int(dut.y_ss.value), 18), int(dut.y_uu.value))
        if got != (a * b, c * d, e * f):
            bad.append(((a, b, c, d, e, f), got))
    write_results({"checked": len(cases), "wrong": len(bad)})
    assert not bad, f"{len(bad)}/{len(cases)} wrong; first: {bad[0]}"
