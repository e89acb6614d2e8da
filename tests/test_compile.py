"""`hardwire compile`: QONNX networks -> streaming RTL checked in Verilator against qonnx execution, the cycle
model against measured handshakes, the folding solver, and errors that leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hardwire.hls import frontend, rtl, zoo
from hardwire.hls.compile import CompileOptions, compile_model, parse_budget

from hardwire.cli import main
from hardwire.errors import ModelError, ParameterError


def _digits(entry, count=None):
    _, _, x, y = zoo.load_digits_split()
    x = x.reshape((-1, *entry.input_shape[1:]))
    return (x, y) if count is None else (x[:count], y[:count])


def _graph(name):
    entry = zoo.build(name)
    return frontend.build_graph(frontend.load_model(entry.onnx_path), name)


def _assert_verified(report, frames):
    sim = report["simulation"]
    assert sim["inferences"] == frames
    assert sim["bit_exact_vs_golden"]
    assert sim["rtl_vs_qonnx"]["mismatches"] == 0 and sim["rtl_vs_qonnx"]["outputs"] == frames * 10
    assert sim["timing_matches_model"] is True
    assert sim["measured_first_input_to_last_output_cycles"] == sim["model_first_input_to_last_output_cycles"]
    assert sim["stalls_case_ok"] and sim["flood_case_ok"]


@pytest.mark.parametrize("name, fps", [("mlp4", 300_000), ("cnn4", 100_000)])
def test_rtl_equals_qonnx_on_the_whole_digits_test_split(tmp_path, name, fps):
    entry = zoo.build(name)
    x, y = _digits(entry)
    report = compile_model(
        entry.onnx_path,
        tmp_path / name,
        CompileOptions(fps=fps, synthesize=False),
        inputs=x,
        labels=y,
        name=name,
        progress=lambda _: None,
    )
    _assert_verified(report, len(x))
    assert report["accuracy"]["rtl"] == report["accuracy"]["qonnx"] == pytest.approx(entry.test_accuracy)
    assert report["folding"]["met"]
    assert report["cycle_model"]["initiation_interval"] <= 100e6 / fps
    written = {p.name for p in (tmp_path / name).iterdir()}
    assert {f"{name}.v", "report.json", "report.md", "plan.json", "layers.npz", "sim"} <= written
    assert json.loads((tmp_path / name / "report.json").read_text())["network"] == name


@pytest.mark.parametrize(
    "folds",
    [
        # width converters 1 -> 2, 4 -> 16, and a maximally unfolded dense layer (640 multipliers: a long build)
        pytest.param({"Conv_0": (8, 1), "Conv_1": (1, 8), "Gemm_0": (10, 64)}, marks=pytest.mark.slow),
        {"Conv_0": (1, 1), "Conv_1": (4, 2), "Gemm_0": (2, 16)},
    ],
)
def test_cycle_model_is_exact_for_other_foldings(tmp_path, folds):
    entry = zoo.build("cnn4")
    x, y = _digits(entry, 24)
    report = compile_model(
        entry.onnx_path,
        tmp_path / "cnn",
        CompileOptions(folds=folds, synthesize=False),
        inputs=x,
        labels=y,
        name="cnn4",
        progress=lambda _: None,
    )
    _assert_verified(report, len(x))
    assert {k: (v["pe"], v["simd"]) for k, v in report["folding"]["folds"].items()} == folds


def test_two_bit_mlp_on_random_inputs_with_synthesis_into_a_relative_folder(tmp_path, monkeypatch):
    entry = zoo.build("mlp2")
    monkeypatch.chdir(tmp_path)  # the CLI and the demo pass relative output folders
    report = compile_model(
        entry.onnx_path,
        Path("mlp2"),
        CompileOptions(fps=200_000, n_random=40, target="xilinx", place_route=False),
        name="mlp2",
        progress=lambda _: None,
    )
    _assert_verified(report, 40)
    assert "random inputs" in report["verification_inputs"]
    synth = report["synthesis"]
    assert synth["lut"] > 0 and synth["ff"] > 0
    assert "LUT" in (tmp_path / "mlp2" / "report.md").read_text()
    # the surrogate's estimate stands beside yosys' count, labelled, with the error computed from both
    compared = report["estimate_vs_measured"]["lut"]
    assert report["estimate"]["estimate"] is True and compared["measured"] == synth["lut"]
    assert compared["relative_error"] == pytest.approx((compared["estimate"] - synth["lut"]) / synth["lut"])
    assert "not a measurement" in (tmp_path / "mlp2" / "report.md").read_text()


def test_folding_solver_meets_a_throughput_target_with_the_fewest_lanes():
    graph = _graph("cnn4")
    for fps in (20_000, 100_000, 150_000):
        result = rtl.solve_folding(graph, fps=fps, clock_mhz=100)
        target = 100e6 // fps
        assert result.met and max(result.cycles.values()) <= target
        for layer in graph.layers:
            if layer.name not in result.folds:
                continue
            fold = result.folds[layer.name]
            # nothing cheaper fits: every option with fewer lanes misses the target
            cheaper = [
                (pe, simd)
                for pe in rtl.divisors(layer.out_features)
                for simd in rtl.simd_choices(layer)
                if pe * simd < fold.pe * fold.simd
            ]
            assert all(rtl.mvu_cycles_per_inference(layer, pe, simd) > target for pe, simd in cheaper)
    unreachable = rtl.solve_folding(graph, fps=1e9)
    assert not unreachable.met and "even fully unfolded" in unreachable.note


def test_folding_solver_respects_a_lut_budget():
    graph = _graph("mlp4")
    small = rtl.solve_folding(graph, lut_budget=2_000)
    large = rtl.solve_folding(graph, lut_budget=40_000)
    assert small.estimated_luts <= 2_000 < large.estimated_luts <= 40_000
    assert max(large.cycles.values()) < max(small.cycles.values())
    assert parse_budget("lut=1234") == 1234
    with pytest.raises(ParameterError):
        parse_budget("dsp=3")


def test_lut_budget_priced_by_the_surrogate_stays_within_the_budget_by_its_own_estimate():
    from hardwire.estimate.predict import Estimator, folding_cost

    graph = _graph("mlp4")
    cost = folding_cost(Estimator.load(), graph, "ecp5")
    small = rtl.solve_folding(graph, lut_budget=3_000, lut_cost=cost)
    large = rtl.solve_folding(graph, lut_budget=30_000, lut_cost=cost)
    assert small.estimated_luts <= 3_000 and large.estimated_luts <= 30_000
    assert max(large.cycles.values()) <= max(small.cycles.values())
    assert cost(small.folds) == pytest.approx(small.estimated_luts, abs=1)


def test_explicit_folding_is_validated():
    graph = _graph("mlp4")
    with pytest.raises(ParameterError, match="fold='dense0'"):
        rtl.solve_folding(graph, folds={"dense0": (1, 1)})
    with pytest.raises(ParameterError, match="Gemm_0.pe"):
        rtl.solve_folding(graph, folds={"Gemm_0": (3, 1)})
    with pytest.raises(ParameterError, match="Gemm_2.simd"):
        rtl.solve_folding(graph, folds={"Gemm_2": (1, 5)})


def test_corrupt_model_fails_cleanly_and_leaves_no_output(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x0a\x05hello this is not onnx")
    out = tmp_path / "out"
    with pytest.raises(ModelError):
        compile_model(bad, out, CompileOptions(), progress=lambda _: None)
    assert not out.exists()
    assert main(["compile", str(bad), "-o", str(out)]) == 2
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_cli_compile_rejects_bad_options(tmp_path, capsys):
    assert main(["compile", "zoo:mlp4", "--budget", "dsp=4", "-o", str(tmp_path / "x")]) == 2
    assert "budget" in capsys.readouterr().err
    assert main(["compile", "zoo:mlp4", "--fold", "Gemm_0=2", "-o", str(tmp_path / "x")]) == 2
    assert main(["compile", "zoo:nonexistent", "-o", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_hls4ml_backend_through_compile(tmp_path):
    entry = zoo.build("mlp4")
    x, y = _digits(entry, 60)
    report = compile_model(
        entry.onnx_path,
        tmp_path / "h",
        CompileOptions(backend="hls4ml", fps=300_000),
        inputs=x,
        labels=y,
        name="mlp4",
        progress=lambda _: None,
    )
    assert report["csim_vs_qonnx"]["mismatches"] == 0 and report["csim_vs_qonnx"]["outputs"] == 600
    assert report["accuracy"]["hls4ml"] == report["accuracy"]["qonnx"]
    graph = _graph("mlp4")
    folding = rtl.solve_folding(graph, fps=300_000)
    expected = [
        (layer.in_features // folding.folds[layer.name].simd) * (layer.out_features // folding.folds[layer.name].pe)
        for layer in graph.layers
    ]
    assert [
        layer["requested_reuse_factor"] for layer in report["hls4ml"]["layers"] if layer.get("requested_reuse_factor")
    ] == expected
    assert "did not synthesize" in (tmp_path / "h" / "report.md").read_text()
    assert (tmp_path / "h" / "hls4ml").is_dir()


def test_network_input_packing_round_trips():
    graph = _graph("cnn4")
    plan = rtl.plan_dataflow(graph, rtl.solve_folding(graph, fps=50_000))
    x = np.arange(2 * 64).reshape(2, 8, 8, 1) % 16
    beats = rtl.pack_inputs(plan, x)
    assert len(beats) == 2 and len(beats[0]) == plan.in_beats
    assert np.array_equal(np.asarray(beats).reshape(2, -1), x.reshape(2, -1))
