"""cocotb testbench: our DSP48E2 subset model (gen/models/DSP48E2.v) against yosys' own DSP48E1 model, cycle by
cycle, on the subset the two slices share (pre-adder D + A with A and D registered and enabled together, B
registered, M and P registered, Z = PCIN or 0). Operands stay inside the DSP48E1's 25-bit pre-adder so both
compute the same integers. The DUT (`dsp_models_check`, written by tests/test_dsp.py) drives both slices with
the same inputs and exposes `p_e1` and `p_e2`.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge
from hardwire.sim.runner import load_config, write_results


def _signed(value: int, width: int) -> int:
    return value - (1 << width) if value >> (width - 1) else value


@cocotb.test()
async def dsp48e2_model_matches_yosys_dsp48e1_model(dut):
    config = load_config()
    rng = random.Random(config.get("seed", 1))
    cycles = config.get("cycles", 400)
    Clock(dut.clk, 10, unit="ns").start()
    extremes_a = [-(1 << 22), (1 << 22) - 1, 0, -1]
    extremes_b = [-(1 << 17), (1 << 17) - 1, 0, -1]
    mismatches, compared, nonzero = 0, 0, 0
    first = None
    for cycle in range(cycles):
        await FallingEdge(dut.clk)
        pick = rng.random() < 0.2
        a = rng.choice(extremes_a) if pick else rng.randint(-(1 << 22), (1 << 22) - 1)
        d = rng.choice(extremes_a) if pick else rng.randint(-(1 << 22), (1 << 22) - 1)
        b = rng.choice(extremes_b) if pick else rng.randint(-(1 << 17), (1 << 17) - 1)
        dut.a.value = a & ((1 << 30) - 1)
        dut.d.value = d & ((1 << 25) - 1)
        dut.b.value = b & ((1 << 18) - 1)
        dut.pcin.value = rng.getrandbits(48)
        dut.ce.value = int(rng.random() < 0.5)
        dut.use_pcin.value = int(rng.random() < 0.5)
        await RisingEdge(dut.clk)
        if cycle >= 4:
            p_e1, p_e2 = int(dut.p_e1.value), int(dut.p_e2.value)
            compared += 1
            nonzero += p_e1 != 0
            if p_e1 != p_e2:
                mismatches += 1
                first = first or (cycle, _signed(p_e1, 48), _signed(p_e2, 48))
    write_results({"compared": compared, "mismatches": mismatches, "nonzero": nonzero, "first": first})
    assert mismatches == 0, f"{mismatches}/{compared} cycles differ; first (cycle, DSP48E1, DSP48E2): {first}"
    assert nonzero > compared // 2, "the check saw too few non-zero results to mean anything"
