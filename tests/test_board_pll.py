"""PLL divider search (boards/pll.py): the chosen dividers obey the vendors' limits and give the reported
frequency by the vendors' formulas; unreachable or unsupported requests are one-line errors."""

from __future__ import annotations

import pytest

from hardwire.boards.pll import pll_setting
from hardwire.errors import ParameterError


@pytest.mark.parametrize("target", [16, 24, 30, 48, 60, 100, 120, 200])
def test_ice40_dividers_meet_the_limits_and_the_formula(target):
    s = pll_setting("ice40", 12.0, target)
    d = s.dividers
    pfd = 12.0 / (d["DIVR"] + 1)
    vco = pfd * (d["DIVF"] + 1)
    assert 10 <= pfd <= 133 and 533 <= vco <= 1066 and 1 <= d["DIVQ"] <= 6
    assert s.output_mhz == pytest.approx(vco / 2 ** d["DIVQ"])
    assert abs(s.output_mhz - target) <= 0.01 * target


@pytest.mark.parametrize("target", [10, 40, 50, 75, 100, 125, 150, 200])
def test_ecp5_dividers_meet_the_limits_and_the_formula(target):
    s = pll_setting("ecp5", 25.0, target)
    d = s.dividers
    assert s.output_mhz == pytest.approx(25.0 / d["CLKI_DIV"] * d["CLKFB_DIV"])
    assert 400 <= s.output_mhz * d["CLKOP_DIV"] <= 800
    assert abs(s.output_mhz - target) <= 0.01 * target


def test_known_icepll_setting_for_48_mhz_from_12():
    # what `yowasp-icepll -i 12 -o 48` prints: DIVR=0, DIVF=63, DIVQ=4, FILTER_RANGE=1
    assert pll_setting("ice40", 12.0, 48).dividers == {"DIVR": 0, "DIVF": 63, "DIVQ": 4, "FILTER_RANGE": 1}


def test_unreachable_and_unsupported_requests_are_errors():
    with pytest.raises(ParameterError, match=r"within 1 % \(nearest: 16.125 MHz\)"):
        pll_setting("ice40", 12.0, 5)
    with pytest.raises(ParameterError, match="nearest: 46.875 MHz"):
        pll_setting("ecp5", 25.0, 48)  # needs a 1 MHz phase detector, below the 3.125 MHz minimum
    with pytest.raises(ParameterError, match="no PLL support for xilinx"):
        pll_setting("xilinx", 100.0, 50)


@pytest.mark.parametrize("target", [13.5, 27, 54, 81, 108, 135])
def test_gowin_dividers_meet_the_limits_and_the_formula(target):
    s = pll_setting("gowin", 27.0, target)
    d = s.dividers
    pfd = 27.0 / (d["IDIV_SEL"] + 1)
    assert 3 <= pfd <= 400 and 400 <= s.output_mhz * d["ODIV_SEL"] <= 1200
    assert s.output_mhz == pytest.approx(pfd * (d["FBDIV_SEL"] + 1))
    assert abs(s.output_mhz - target) <= 0.01 * target
