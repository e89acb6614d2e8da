"""Hard DSP primitives (gen/dsp.py): the INT8 packing arithmetic of the DSP48E2 checked exhaustively against
plain integer products, and the primitive models found."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hardwire.gen.dsp import DSP_KINDS, Int8Packing, dsp_for_target, sim_models


def test_every_int8_operand_triple_unpacks_to_its_two_products():
    """One term, every (x, lo, hi) in INT8^3: the DSP's 27-bit pre-adder, 45-bit product and 48-bit P,
    then the unpacking, give exactly x * lo and x * hi."""
    k = Int8Packing(8, True, 8, True, terms=1)
    w = np.arange(-128, 128, dtype=np.int64)
    lo, hi = np.meshgrid(w, w, indexing="ij")
    for x in range(-128, 128):
        s_lo, s_hi = k.unpack(k.cascade(np.full(lo.shape + (1,), x), lo[..., None], hi[..., None]))
        assert np.array_equal(s_lo, x * lo) and np.array_equal(s_hi, x * hi), x


@pytest.mark.parametrize("x_signed, w_signed", [(True, True), (False, True), (True, False), (False, False)])
def test_unpacking_is_exact_over_the_whole_range_of_low_sums(x_signed, w_signed):
    """Every low sum the cascade can hold (all of [terms * min product, terms * max product]) beside the
    extreme and middle high sums: unpack(S_hi * 2^G + S_lo) == (S_lo, S_hi)."""
    terms = Int8Packing.most_terms(8, x_signed, 8, w_signed)
    k = Int8Packing(8, x_signed, 8, w_signed, terms)
    p_lo, p_hi = k.product_range
    s_lo = np.arange(terms * p_lo, terms * p_hi + 1, dtype=np.int64)
    for s_hi in (terms * p_lo, terms * p_lo + 1, -1, 0, 1, terms * p_hi - 1, terms * p_hi):
        got_lo, got_hi = k.unpack(s_hi * (1 << k.guard_bits) + s_lo)
        assert np.array_equal(got_lo, s_lo) and np.all(got_hi == s_hi), s_hi


@pytest.mark.parametrize("x_signed, w_signed", [(True, True), (False, True), (True, False), (False, False)])
def test_full_cascades_of_random_and_extreme_operands_unpack_exactly(x_signed, w_signed):
    terms = Int8Packing.most_terms(8, x_signed, 8, w_signed)
    k = Int8Packing(8, x_signed, 8, w_signed, terms)
    x_lo, x_hi = (-128, 127) if x_signed else (0, 255)
    w_lo, w_hi = (-128, 127) if w_signed else (0, 255)
    rng = np.random.default_rng(14)
    x = rng.integers(x_lo, x_hi + 1, (20000, terms))
    lo = rng.integers(w_lo, w_hi + 1, (20000, terms))
    hi = rng.integers(w_lo, w_hi + 1, (20000, terms))
    # corners: every term at the same extreme pair, so each sum sits at an end of its range
    corners = [(a, b, c) for a in (x_lo, x_hi, 0) for b in (w_lo, w_hi, 0) for c in (w_lo, w_hi, 0)]
    x = np.vstack([x, np.array([[a] * terms for a, _, _ in corners])])
    lo = np.vstack([lo, np.array([[b] * terms for _, b, _ in corners])])
    hi = np.vstack([hi, np.array([[c] * terms for _, _, c in corners])])
    s_lo, s_hi = k.unpack(k.cascade(x, lo, hi))
    assert np.array_equal(s_lo, (x * lo).sum(axis=1)) and np.array_equal(s_hi, (x * hi).sum(axis=1))


def test_packing_limits_follow_the_27_bit_pre_adder():
    # INT8 x INT8: G = 18 holds 8 terms (8 * 32640 < 2^18) and 127 * 2^18 + 127 fits 27 bits; 9 need G = 19
    assert Int8Packing.most_terms(8, True, 8, True) == 8
    assert Int8Packing(8, True, 8, True, 8).guard_bits == 18
    assert not Int8Packing(8, True, 8, True, 9).fits()
    # unsigned weights are twice as wide a range: 4 terms
    assert Int8Packing.most_terms(8, True, 8, False) == 4
    # the check can fail: past the limit the pre-adder overflows (-128 * 2^19 - 128) and the high sum is wrong
    k = Int8Packing(8, True, 8, True, 9)
    ones = np.ones((1, 9), dtype=np.int64)
    s_lo, s_hi = k.unpack(k.cascade(-128 * ones, -128 * ones, -128 * ones))
    assert s_lo[0] == 9 * 128 * 128 and s_hi[0] != 9 * 128 * 128


@pytest.mark.parametrize("kind, module", [("ecp5", "MULT18X18D"), ("dsp48e1", "DSP48E1"), ("dsp48e2", "DSP48E2")])
def test_each_primitive_has_a_simulation_model(kind, module):
    ((name, text),) = sim_models(kind)
    assert f"module {module}" in text and text.rstrip().endswith(("endmodule", "*/"))


def test_each_target_picks_a_primitive_it_has_and_the_rest_stay_inferred():
    from hardwire.flows.synth import TARGETS

    assert {t: dsp_for_target(t) for t in TARGETS} == {
        "ice40": "inferred",
        "ecp5": "ecp5",
        "xilinx": "dsp48e1",
        "xilinx-us": "dsp48e2",
        "xilinx-usp": "dsp48e2",
        "generic": "inferred",
    }
    assert set(map(dsp_for_target, TARGETS)) <= set(DSP_KINDS)


DSP_MODELS_CHECK = """
module dsp_models_check(input clk, input [29:0] a, input [17:0] b, input [24:0] d, input [47:0] pcin,
                        input ce, input use_pcin, output [47:0] p_e1, output [47:0] p_e2);
    wire [2:0] z = use_pcin ? 3'b001 : 3'b000;
    DSP48E1 #(.AREG(1), .ACASCREG(1), .BREG(1), .BCASCREG(1), .DREG(1), .ADREG(0), .MREG(1), .PREG(1),
              .CREG(0), .CARRYINREG(0), .CARRYINSELREG(0), .INMODEREG(0), .OPMODEREG(0), .ALUMODEREG(0),
              .USE_DPORT("TRUE"), .USE_MULT("MULTIPLY")) e1 (
        .CLK(clk), .A(a), .B(b), .D(d), .C(48'd0), .PCIN(pcin), .ACIN(30'd0), .BCIN(18'd0),
        .INMODE(5'b00100), .OPMODE({z, 2'b01, 2'b01}), .ALUMODE(4'd0), .CARRYIN(1'b0), .CARRYINSEL(3'd0),
        .CARRYCASCIN(1'b0), .MULTSIGNIN(1'b0),
        .CEA1(1'b0), .CEA2(ce), .CEB1(1'b0), .CEB2(1'b1), .CED(ce), .CEAD(1'b0), .CEC(1'b0), .CEM(1'b1),
        .CEP(1'b1), .CECARRYIN(1'b0), .CECTRL(1'b0), .CEINMODE(1'b0), .CEALUMODE(1'b0),
        .RSTA(1'b0), .RSTB(1'b0), .RSTC(1'b0), .RSTD(1'b0), .RSTM(1'b0), .RSTP(1'b0), .RSTCTRL(1'b0),
        .RSTALLCARRYIN(1'b0), .RSTALUMODE(1'b0), .RSTINMODE(1'b0),
        .P(p_e1), .PCOUT(), .ACOUT(), .BCOUT(), .CARRYCASCOUT(), .CARRYOUT(), .MULTSIGNOUT(), .OVERFLOW(),
        .PATTERNBDETECT(), .PATTERNDETECT(), .UNDERFLOW());
    DSP48E2 #(.AREG(1), .ACASCREG(1), .BREG(1), .BCASCREG(1), .DREG(1), .ADREG(0), .MREG(1), .PREG(1),
              .CREG(0), .CARRYINREG(0), .CARRYINSELREG(0), .INMODEREG(0), .OPMODEREG(0), .ALUMODEREG(0),
              .AMULTSEL("AD"), .USE_MULT("MULTIPLY")) e2 (
        .CLK(clk), .A(a), .B(b), .D({{2{d[24]}}, d}), .PCIN(pcin), .INMODE(5'b00100),
        .OPMODE({2'b00, z, 2'b01, 2'b01}), .ALUMODE(4'd0), .CARRYIN(1'b0),
        .CEA1(1'b0), .CEA2(ce), .CEB1(1'b0), .CEB2(1'b1), .CED(ce), .CEAD(1'b0), .CEM(1'b1), .CEP(1'b1),
        .RSTA(1'b0), .RSTB(1'b0), .RSTD(1'b0), .RSTM(1'b0), .RSTP(1'b0), .P(p_e2), .PCOUT());
endmodule
"""


def test_dsp48e2_model_agrees_with_yosys_dsp48e1_model_on_their_common_subset():
    """Our DSP48E2 model is hand-written; yosys' DSP48E1 model is not ours. Driven with the same random and
    extreme operands inside the 25-bit pre-adder, they must give the same P every cycle."""
    from hardwire.sim.runner import simulate

    sources = [("check.v", DSP_MODELS_CHECK), *sim_models("dsp48e1"), *sim_models("dsp48e2")]
    result = simulate(sources, "dsp_models_check", "hardwire.sim.tb_dsp_models", config={"cycles": 400, "seed": 3})
    assert result.results["mismatches"] == 0 and result.results["compared"] > 300


MUL_CHECK = """
module mul_check(input signed [11:0] a, input [9:0] b, input signed [8:0] c, input signed [8:0] d,
                 input [17:0] e, input [17:0] f,
                 output signed [22:0] y_su, output signed [17:0] y_ss, output [35:0] y_uu);
    assign y_su = a * $signed({1'b0, b});
    assign y_ss = c * d;
    assign y_uu = e * f;
endmodule
"""


def test_mult18x18d_model_multiplies_yosys_own_ecp5_mapping_exactly(tmp_path):
    """Our MULT18X18D model is hand-written; yosys' synth_ecp5 mapping of `a * b` is not ours (it chooses
    SIGNEDA/SIGNEDB and the bit wiring). Its netlist, simulated with the model, must compute the products."""
    from hardwire.flows.tools import run_tool
    from hardwire.sim.runner import simulate

    (tmp_path / "mul.v").write_text(MUL_CHECK)
    (tmp_path / "s.ys").write_text("read_verilog mul.v\nsynth_ecp5 -top mul_check\nwrite_verilog -noattr net.v\n")
    run_tool("yosys", ["-q", "-s", "s.ys"], cwd=tmp_path, log_path=tmp_path / "yosys.log", timeout_s=600)
    netlist = (tmp_path / "net.v").read_text()
    assert len(re.findall(r"^\s*MULT18X18D\b", netlist, flags=re.M)) == 3
    # yosys leaves the clock, enable and reset pins of its combinational multipliers unconnected
    result = simulate(
        [("net.v", netlist), *sim_models("ecp5")],
        "mul_check",
        "hardwire.sim.tb_mult_model",
        build_args=["-Wno-PINMISSING"],
    )
    assert result.results["wrong"] == 0 and result.results["checked"] > 2000
