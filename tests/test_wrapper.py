"""The serial-I/O wrapper used for place-and-route: correct Verilog, nothing of the core optimized away."""

from hardwire.boards.wrapper import Port, serial_io_wrapper
from hardwire.flows.fmax import top_ports, wrapped_fmax
from hardwire.flows.synth import synth
from hardwire.gen import registry
from hardwire.gen.systolic import SystolicParams


def test_wrapper_connects_every_port_and_passes_clock_and_reset():
    top, text = serial_io_wrapper(
        "core",
        [
            Port("clk", "input", 1),
            Port("rst", "input", 1),
            Port("a", "input", 3),
            Port("b", "input", 2),
            Port("y", "output", 4),
        ],
    )
    assert top == "core_serial_io"
    assert ".a(in_hold[2:0])" in text and ".b(in_hold[4:3])" in text and ".y(out_bits[3:0])" in text
    assert ".clk(clk)" in text and ".rst(rst)" in text


def test_wrapped_core_keeps_its_multipliers_and_places_on_an_ecp5(tmp_path):
    p = SystolicParams(rows=1, cols=2, acc_depth=8)
    meta = registry.generate("systolic", p, tmp_path)
    ports = top_ports([meta["verilog"]], meta["top"])
    assert {port.name for port in ports} >= {"clk", "rst", "weights__payload", "results__payload"}
    wrapper_top, text = serial_io_wrapper(meta["top"], ports)
    (tmp_path / "wrapper.v").write_text(text)
    bare = synth([meta["verilog"]], meta["top"], "ecp5")
    wrapped = synth([meta["verilog"], tmp_path / "wrapper.v"], wrapper_top, "ecp5")
    assert wrapped.dsp == bare.dsp == 2
    assert wrapped.ff >= bare.ff  # the core's registers survive inside the wrapper
    placed = wrapped_fmax([meta["verilog"]], meta["top"], "ecp5", device="25k", package="CABGA256")
    assert placed.fmax_mhz and placed.fmax_mhz > 10
