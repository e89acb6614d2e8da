"""Standard-cell estimates (flows/asic.py): area and cell counts against hand counts from the liberty file
(read here with a regular expression of its own, not with the flow's reader), OpenSTA's slack against the
clock period, and the errors a user can run into."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hardwire import cli
from hardwire.errors import ParameterError, ToolMissingError
from hardwire.flows import asic, tools
from hardwire.flows.asic import LIBRARIES, asic_synth, read_liberty_cells

OSU018 = Path(LIBRARIES["osu018"][1])
OSU035 = Path(LIBRARIES["osu035"][1])


def liberty_area(liberty: Path, cell: str) -> float:
    """The `area` attribute of `cell (NAME) {`, before the cell's first nested group."""
    match = re.search(rf"cell\s*\(\s*{cell}\s*\)\s*\{{[^{{}}]*?\barea\s*:\s*([0-9.]+)\s*;", liberty.read_text())
    assert match, f"{cell} not in {liberty}"
    return float(match.group(1))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.v"
    path.write_text(text)
    return path


def register(tmp_path: Path, bits: int) -> Path:
    return write(
        tmp_path,
        f"reg{bits}",
        f"""
module reg{bits}(input clk, input [{bits - 1}:0] d, output reg [{bits - 1}:0] q);
  always @(posedge clk) q <= d;
endmodule
""",
    )


def adder(tmp_path: Path, bits: int) -> Path:
    return write(
        tmp_path,
        f"add{bits}",
        f"""
module add{bits}(input [{bits - 1}:0] a, input [{bits - 1}:0] b, output [{bits}:0] s);
  assign s = a + b;
endmodule
""",
    )


def registered_adder(tmp_path: Path, bits: int) -> Path:
    return write(
        tmp_path,
        f"radd{bits}",
        f"""
module radd{bits}(input clk, input [{bits - 1}:0] a, input [{bits - 1}:0] b, output reg [{bits}:0] s);
  reg [{bits - 1}:0] ra, rb;
  always @(posedge clk) begin ra <= a; rb <= b; s <= ra + rb; end
endmodule
""",
    )


@pytest.mark.parametrize("bits, library", [(1, OSU018), (13, OSU018), (32, OSU018), (8, OSU035)])
def test_register_of_n_bits_is_n_flip_flops_of_the_library_area(tmp_path, bits, library):
    name = [k for k, (_, path) in LIBRARIES.items() if Path(path) == library][0]
    report = asic_synth([register(tmp_path, bits)], f"reg{bits}", name, timing=False)
    dff = liberty_area(library, "DFFPOSX1")
    assert report.cells == {"DFFPOSX1": bits}
    assert report.sequential_cells == bits and report.cell_count == bits and report.combinational_cells == 0
    assert report.area_um2 == pytest.approx(bits * dff)
    assert report.sequential_area_um2 == pytest.approx(bits * dff)


@pytest.mark.parametrize("bits", [4, 16])
def test_adder_cells_in_hand_derived_range_and_area_is_the_sum_of_its_cells(tmp_path, bits):
    report = asic_synth([adder(tmp_path, bits)], f"add{bits}", "osu018", clock_ns=20.0)
    # Lower bound: every bit position has two different functions of two or more inputs, its sum and its
    # carry out (the top carry is output s[bits]); ABC maps to single-output cells only (FAX1/HAX1 are not
    # used), so each needs a cell of its own: 2 * bits. Upper bound: a ripple-carry adder from this library
    # takes per bit two XOR2/XNOR2 for the sum and an AOI21/OAI21 + NAND2/NOR2 pair for the carry (with an
    # occasional inverter): about 5 cells; ABC may trade some for a faster carry, allowed up to 8 per bit.
    assert 2 * bits <= report.cell_count <= 8 * bits
    assert report.sequential_cells == 0 and report.sequential_area_um2 == 0
    assert report.area_um2 == pytest.approx(sum(n * liberty_area(OSU018, cell) for cell, n in report.cells.items()))
    # a combinational design: timed against a virtual clock, a path delay but no Fmax
    assert report.clock is None and report.fmax_mhz is None and report.min_period_ns is None
    assert 0 < report.path_delay_ns < 20.0
    assert report.worst_slack_ns == pytest.approx(20.0 - report.path_delay_ns, abs=1e-3)
    assert "no flip-flops" in report.note


def test_wider_adder_is_larger_and_slower(tmp_path):
    small = asic_synth([adder(tmp_path, 4)], "add4", "osu018", clock_ns=20.0)
    large = asic_synth([adder(tmp_path, 16)], "add16", "osu018", clock_ns=20.0)
    assert large.area_um2 > 2 * small.area_um2
    assert large.path_delay_ns > small.path_delay_ns


def test_slack_moves_with_the_clock_period_on_the_same_netlist(tmp_path):
    verilog = registered_adder(tmp_path, 8)
    reports = [
        asic_synth([verilog], "radd8", "osu018", clock_ns=period, abc_delay_ns=2.0) for period in (0.5, 1.0, 2.0, 4.0)
    ]
    assert len({r.netlist for r in reports}) == 1  # one mapping, timed at four periods
    slacks = [r.worst_slack_ns for r in reports]
    assert slacks == sorted(slacks) and slacks[0] < 0 < slacks[-1]
    for a, b in zip(reports, reports[1:]):
        # same paths, ideal clock: the slack grows by exactly the period's growth
        assert b.worst_slack_ns - a.worst_slack_ns == pytest.approx(b.clock_period_ns - a.clock_period_ns, abs=2e-3)
    fmax = {r.fmax_mhz for r in reports}
    assert max(fmax) - min(fmax) < 1.0
    r = reports[-1]
    assert r.fmax_mhz == pytest.approx(1000.0 / (r.clock_period_ns - r.worst_slack_ns), rel=1e-3)
    assert r.sequential_cells == 8 + 8 + 9 and r.clock == "clk"
    assert "flip-flop" in r.critical_path and r.timing_source.startswith("OpenSTA")


def test_liberty_reader_classifies_cells_by_their_function():
    cells = read_liberty_cells(OSU018)
    assert {name for name, c in cells.items() if c.kind == "sequential"} == {"DFFPOSX1", "DFFNEGX1", "DFFSR", "LATCH"}
    assert {name for name, c in cells.items() if c.kind == "inverter"} == {"INVX1", "INVX2", "INVX4", "INVX8"}
    assert {name for name, c in cells.items() if c.kind == "buffer"} == {
        "BUFX2",
        "BUFX4",
        "CLKBUF1",
        "CLKBUF2",
        "CLKBUF3",
        "TBUFX1",
        "TBUFX2",
    }
    assert cells["NAND2X1"].kind == cells["FAX1"].kind == cells["MUX2X1"].kind == "logic"
    for name, cell in cells.items():
        assert cell.area == liberty_area(OSU018, name)


def test_unknown_library_is_one_error_naming_it_and_the_known_ones(tmp_path, capsys):
    with pytest.raises(ParameterError, match="library='sky999'.*osu018, osu035, osu050"):
        asic_synth([register(tmp_path, 2)], "reg2", "sky999")
    with pytest.raises(ParameterError, match="existing liberty"):
        asic_synth([register(tmp_path, 2)], "reg2", str(tmp_path / "missing.lib"))
    code = cli.main(["synth", str(register(tmp_path, 2)), "--top", "reg2", "--target", "asic:sky999"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT and len(err.strip().splitlines()) == 1 and "sky999" in err


def test_library_package_not_installed_names_the_apt_package(tmp_path, monkeypatch):
    monkeypatch.setitem(LIBRARIES, "osu018", ("qflow-tech-osu018", str(tmp_path / "absent" / "osu018.lib")))
    with pytest.raises(ToolMissingError, match="apt-get install qflow-tech-osu018"):
        asic_synth([register(tmp_path, 2)], "reg2", "osu018")


def test_missing_opensta_names_its_apt_package(tmp_path, monkeypatch):
    spec = tools.TOOLS["opensta"]
    monkeypatch.setitem(
        tools.TOOLS,
        "opensta",
        tools.ToolSpec(spec.name, ("hardwire-test-no-such-sta",), spec.pip_package, spec.version_args, spec.install),
    )
    with pytest.raises(ToolMissingError, match="apt-get install opensta"):
        asic_synth([register(tmp_path, 2)], "reg2", "osu018")


def test_registers_without_the_clock_port_are_an_error_naming_the_inputs(tmp_path):
    verilog = write(
        tmp_path,
        "gated",
        """
module gated(input ck, input d, output reg q);
  always @(posedge ck) q <= d;
endmodule
""",
    )
    with pytest.raises(ParameterError, match=r"clock='clk'.*inputs: ck, d"):
        asic_synth([verilog], "gated", "osu018")
    assert asic_synth([verilog], "gated", "osu018", clock="ck").fmax_mhz > 0


def test_custom_liberty_path_is_accepted(tmp_path):
    copy = tmp_path / "mylib.lib"
    copy.write_bytes(OSU035.read_bytes())
    report = asic_synth([register(tmp_path, 3)], "reg3", str(copy), timing=False)
    assert report.library == "mylib" and report.area_um2 == pytest.approx(3 * liberty_area(OSU035, "DFFPOSX1"))


def test_synth_cli_asic_target_writes_the_asic_columns(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(
        [
            "synth",
            str(registered_adder(tmp_path, 4)),
            "--top",
            "radd4",
            "--target",
            "asic:osu018",
            "--clock-ns",
            "5",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "area um2" in table and "Fmax MHz" in table and "power: not estimated" in table
    data = json.loads((out / "report.json").read_text())
    assert data["target"] == "asic:osu018" and data["asic"]["sequential_cells"] == 4 + 4 + 5
    assert data["asic"]["fmax_mhz"] > 0 and data["asic"]["clock_period_ns"] == 5.0
    assert data["tools"]["opensta"] == data["asic"]["sta_version"]


def test_opensta_failure_is_reported_not_swallowed(tmp_path, monkeypatch):
    # OpenSTA exits 0 after a failed command; the flow must read its log and fail loudly
    monkeypatch.setattr(asic, "_sta_script", lambda *args: "no_such_sta_command\n")
    with pytest.raises(asic.ToolError, match="opensta reported Error"):
        asic_synth([register(tmp_path, 5)], "reg5", "osu018", clock_ns=3.0)
