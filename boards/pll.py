"""PLLs from a board's oscillator to a requested clock: the divider search and the primitive per family.

iCE40 (SB_PLL40_PAD, the oscillator pin drives the PLL directly as on the iCEBreaker's pin 35):
f_out = f_in (DIVF + 1) / ((DIVR + 1) 2^DIVQ), with the phase detector at 10..133 MHz, the VCO at 533..1066 MHz
and the output at 16..275 MHz (Lattice TN1251; the same limits as icestorm's `icepll`); the loop filter range
follows the phase-detector frequency as `icepll` sets it.
Gowin (rPLL): f_out = f_in (FBDIV_SEL + 1) / (IDIV_SEL + 1), VCO = f_out ODIV_SEL (limits below).
ECP5 (EHXPLLL, feedback from CLKOP): f_out = f_in CLKFB_DIV / CLKI_DIV with the VCO = f_out CLKOP_DIV at
400..800 MHz and the phase detector >= 3.125 MHz, with the loop attributes `ecppll` writes (Lattice TN1263).
nextpnr derives the output clock's constraint from the input's, so the oscillator's constraint suffices.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Instance, Signal

from hardwire.errors import ParameterError

MAX_ERROR = 0.01  # a requested clock the dividers miss by more than 1 % is refused


@dataclass(frozen=True)
class PllSetting:
    family: str
    input_mhz: float
    output_mhz: float
    dividers: dict


def ice40_setting(input_mhz: float, target_mhz: float) -> PllSetting:
    best = None
    for divr in range(16):
        pfd = input_mhz / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                out = vco / (1 << divq)
                if 16 <= out <= 275 and (best is None or abs(out - target_mhz) < abs(best[0] - target_mhz)):
                    best = (out, divr, divf, divq, pfd)
    if best is None:
        raise ParameterError("clock_mhz", target_mhz, "16..275 MHz from the iCE40 PLL")
    out, divr, divf, divq, pfd = best
    filter_range = next(i for i, limit in enumerate((17, 26, 44, 66, 101, float("inf")), 1) if pfd < limit)
    return PllSetting("ice40", input_mhz, out, {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filter_range})


def ecp5_setting(input_mhz: float, target_mhz: float) -> PllSetting:
    best = None
    for clki_div in range(1, 129):
        pfd = input_mhz / clki_div
        if pfd < 3.125:
            break
        for clkfb_div in range(1, 81):
            out = pfd * clkfb_div
            for clkop_div in range(1, 129):
                if 400 <= out * clkop_div <= 800:
                    if best is None or abs(out - target_mhz) < abs(best[0] - target_mhz):
                        best = (out, clki_div, clkfb_div, clkop_div)
                    break
    if best is None:
        raise ParameterError("clock_mhz", target_mhz, "a frequency the ECP5 PLL can make (3.1..400 MHz)")
    out, clki_div, clkfb_div, clkop_div = best
    return PllSetting("ecp5", input_mhz, out, {"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div, "CLKOP_DIV": clkop_div})


# GW1NR-9 C6/I5 (the Tang Nano 9K's part), Gowin DS117: phase detector 3..400 MHz, VCO 400..1200 MHz, output
# 3.125..600 MHz; the output divider takes only these values
GOWIN_ODIV = (2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128)


def gowin_setting(input_mhz: float, target_mhz: float) -> PllSetting:
    best = None
    for idiv in range(64):
        pfd = input_mhz / (idiv + 1)
        if not 3 <= pfd <= 400:
            continue
        for fbdiv in range(64):
            out = pfd * (fbdiv + 1)
            if not 3.125 <= out <= 600:
                continue
            for odiv in GOWIN_ODIV:
                if 400 <= out * odiv <= 1200:
                    if best is None or abs(out - target_mhz) < abs(best[0] - target_mhz):
                        best = (out, idiv, fbdiv, odiv)
                    break
    if best is None:
        raise ParameterError("clock_mhz", target_mhz, "a frequency the Gowin rPLL can make (3.125..600 MHz)")
    out, idiv, fbdiv, odiv = best
    return PllSetting("gowin", input_mhz, out, {"IDIV_SEL": idiv, "FBDIV_SEL": fbdiv, "ODIV_SEL": odiv})


SETTINGS = {"ice40": ice40_setting, "ecp5": ecp5_setting, "gowin": gowin_setting}


def pll_setting(family: str, input_mhz: float, target_mhz: float) -> PllSetting:
    if family not in SETTINGS:
        raise ParameterError(
            "clock_mhz", target_mhz, f"the board's oscillator ({input_mhz:g} MHz): no PLL support for {family} boards"
        )
    setting = SETTINGS[family](input_mhz, target_mhz)
    if abs(setting.output_mhz - target_mhz) > MAX_ERROR * target_mhz:
        raise ParameterError(
            "clock_mhz",
            target_mhz,
            f"a frequency the {family} PLL makes from {input_mhz:g} MHz "
            f"within 1 % (nearest: {setting.output_mhz:.3f} MHz)",
        )
    return setting


def pll_instance(setting: PllSetting, clock_in, clock_out: Signal, locked: Signal) -> Instance:
    """The PLL primitive: `clock_in` is the oscillator's pad (iCE40) or its buffered input (ECP5)."""
    d = setting.dividers
    if setting.family == "ice40":
        return Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=d["DIVR"],
            p_DIVF=d["DIVF"],
            p_DIVQ=d["DIVQ"],
            p_FILTER_RANGE=d["FILTER_RANGE"],
            io_PACKAGEPIN=clock_in,
            i_RESETB=1,
            i_BYPASS=0,
            o_PLLOUTGLOBAL=clock_out,
            o_LOCK=locked,
        )
    if setting.family == "gowin":
        return Instance(
            "rPLL",
            p_FCLKIN=f"{setting.input_mhz:g}",
            p_IDIV_SEL=d["IDIV_SEL"],
            p_FBDIV_SEL=d["FBDIV_SEL"],
            p_ODIV_SEL=d["ODIV_SEL"],
            i_CLKIN=clock_in,
            o_CLKOUT=clock_out,
            o_LOCK=locked,
            i_RESET=0,
            i_RESET_P=0,
            i_CLKFB=0,
            i_FBDSEL=0,
            i_IDSEL=0,
            i_ODSEL=0,
            i_PSDA=0,
            i_DUTYDA=0,
            i_FDLY=0,
        )
    return Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{setting.input_mhz:g}",
        a_FREQUENCY_PIN_CLKOP=f"{setting.output_mhz:g}",
        a_ICP_CURRENT="12",
        a_LPF_RESISTOR="8",
        a_MFG_ENABLE_FILTEROPAMP="1",
        a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED",
        p_INTFB_WAKE="DISABLED",
        p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED",
        p_OUTDIVIDER_MUXA="DIVA",
        p_CLKOP_ENABLE="ENABLED",
        p_CLKOP_DIV=d["CLKOP_DIV"],
        p_CLKOP_CPHASE=d["CLKOP_DIV"] - 1,
        p_CLKOP_FPHASE=0,
        p_FEEDBK_PATH="CLKOP",
        p_CLKFB_DIV=d["CLKFB_DIV"],
        p_CLKI_DIV=d["CLKI_DIV"],
        i_CLKI=clock_in,
        o_CLKOP=clock_out,
        i_CLKFB=clock_out,
        i_RST=0,
        i_STDBY=0,
        i_PHASESEL0=0,
        i_PHASESEL1=0,
        i_PHASEDIR=0,
        i_PHASESTEP=0,
        i_PHASELOADREG=0,
        i_PLLWAKESYNC=0,
        i_ENCLKOP=0,
        o_LOCK=locked,
    )
