"""The whole board in simulation: a compiled network behind the UART bridge, its pins driven bit by bit from
cocotb with the host's own framing code (boards/link.py). Every output must equal qonnx' execution bit for
bit; corrupted frames, a wrong CRC, wrong and overlong lengths, a stray byte, an unknown type and a host that
stalls mid-frame must each be answered by one error, after which the bridge recovers; no result may be lost
or duplicated."""

from __future__ import annotations

import numpy as np
import pytest
from hardwire.hls import frontend, zoo
from hardwire.hls.compile import CompileOptions, compile_model

from hardwire.boards import link
from hardwire.boards.design import load_design
from hardwire.boards.top import SIM_TOP, bridged_verilog
from hardwire.boards.uart import BridgeParams, turnaround_cycles
from hardwire.sim.runner import simulate

CLOCK_NS = 10  # sim/tb_board.py's clock
CLOCKS_PER_BIT = 8  # clock / baud: fast to simulate, and the smallest ratio the receiver is built for

FAULTS = {1: "flipped_bit", 2: "overlong", 3: "stall", 4: "bad_sync", 5: "bad_type", 6: "short"}
PAIRED = [8, 10]  # inferences sent two at a time: the next frame on the line during a result
DRIVER_INFERENCES = 4  # run through boards/host.py's driver in a cocotb bridge thread


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    entry = zoo.build("mlp4")
    _, _, x, _ = zoo.load_digits_split()
    x = x[:14]
    out = tmp_path_factory.mktemp("board") / "mlp4"
    compile_model(
        entry.onnx_path,
        out,
        CompileOptions(fps=150_000, simulate=False, synthesize=False),
        inputs=x,
        name="mlp4",
        progress=lambda _: None,
    )
    return out, entry, x


def test_board_link_runs_a_compiled_network_bit_exact_through_faults(compiled, tmp_path):
    folder, entry, x = compiled
    design = load_design(folder)
    model = frontend.load_model(entry.onnx_path)
    graph = frontend.build_graph(model, "mlp4")
    reference = frontend.qonnx_execute(model, x)
    codes = frontend.quantize_input(graph, x).reshape(len(x), -1)
    payloads = [link.pack(design.geometry.inp, row) for row in codes]
    byte_cycles = 10 * CLOCKS_PER_BIT
    params = BridgeParams(
        design.geometry, CLOCKS_PER_BIT, stall_timeout_cycles=40 * byte_cycles, drain_idle_cycles=8 * byte_cycles
    )
    frame_cycles = (design.geometry.inp.payload_bytes + design.geometry.out.payload_bytes + 20) * byte_cycles
    config = {
        "clocks_per_bit": CLOCKS_PER_BIT,
        "drain_idle_cycles": params.drain_idle_cycles,
        "stall_timeout_cycles": params.stall_timeout_cycles,
        "payloads": [p.hex() for p in payloads],
        "faults": FAULTS,
        "paired": PAIRED,
        "reply_timeout_cycles": frame_cycles + 2 * (design.latency_cycles or 0) + 2000,
        "driver_inputs": codes[:DRIVER_INFERENCES].tolist(),
    }
    result = simulate(
        bridged_verilog(design, params),
        SIM_TOP,
        "hardwire.sim.tb_board",
        config=config,
        test_dir=tmp_path / "sim",
        timeout_s=1200,
    )
    got = result.results
    assert link.LinkGeometry.from_info_payload(bytes.fromhex(got["info"])) == design.geometry
    assert got["garbage"] == []
    # every fault answered by exactly one error, and nothing else went wrong
    assert len(got["errors"]) == len(FAULTS)
    # each inference's result exactly once, in order
    assert [r["sequence"] for r in got["results"]] == list(range(len(x)))
    hardware = np.stack([link.unpack(design.geometry.out, bytes.fromhex(r["payload"])) for r in got["results"]])
    floats = frontend.model_output(graph, hardware)
    assert np.array_equal(floats.astype(np.float32).view(np.uint32), reference.astype(np.float32).view(np.uint32))
    # the link's rate formula (README table) against the simulated stop-and-wait transactions
    clock_hz = 1e9 / CLOCK_NS
    turnaround_s = turnaround_cycles(design.geometry, design.first_output_cycles) / clock_hz
    period_s = 1 / link.inferences_per_second(design.geometry, clock_hz / CLOCKS_PER_BIT, compute_s=turnaround_s)
    measured_s = np.asarray(got["transaction_cycles"]) / clock_hz
    assert len(measured_s) >= 4 and np.all(np.abs(measured_s / period_s - 1) < 0.01), (measured_s, period_s)
    # the host driver behind `hardwire run`, run unchanged against the same simulated board
    driver = got["driver"]
    assert driver["errors"] == []
    assert link.StreamGeometry(**driver["geometry"]["out"]) == design.geometry.out
    driver_floats = frontend.model_output(graph, np.asarray(driver["outputs"]))
    assert np.array_equal(
        driver_floats.astype(np.float32).view(np.uint32),
        reference[:DRIVER_INFERENCES].astype(np.float32).view(np.uint32),
    )


def test_board_top_verilog_is_lint_clean(compiled, tmp_path):
    """The bridge with a signed multi-bit output stream, and the whole simulated top around a compiled network."""
    from amaranth.back import verilog

    from hardwire.boards.uart import UartBridge
    from hardwire.flows.lint import lint

    geometry = link.LinkGeometry(link.StreamGeometry(8, 8, 4), link.StreamGeometry(10, 1, 13, True))
    path = tmp_path / "bridge.v"
    path.write_text(verilog.convert(UartBridge(BridgeParams(geometry, 8, 3200, 640)), name="bridge", emit_src=False))
    report = lint([path], "bridge")
    assert report.clean, report.unwaived
    design = load_design(compiled[0])
    path = tmp_path / f"{SIM_TOP}.v"
    path.write_text(bridged_verilog(design, BridgeParams(design.geometry, 8, 3200, 640)))
    report = lint([path], SIM_TOP)
    assert report.clean, report.unwaived


def test_bridge_params_name_the_bad_value():
    geometry = link.LinkGeometry(link.StreamGeometry(8, 8, 4), link.StreamGeometry(10, 1, 13, True))
    with pytest.raises(ValueError, match="baud"):
        BridgeParams.for_clock(geometry, 12e6, 4_000_000)
    assert BridgeParams.for_clock(geometry, 12e6, 115200).clocks_per_bit == 104
