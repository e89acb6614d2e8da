"""Nothing verified is lost: a compile whose synthesis fails keeps what passed beside the output folder, marked
incomplete, and a rerun takes the simulation verdict from there; the output folder appears only when every
step passed. Progress lines and the synthesis time limit."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hardwire.hls import checkpoint, zoo
from hardwire.hls import compile as hls_compile
from hardwire.hls.compile import CompileOptions, compile_model

from hardwire.cli import main
from hardwire.errors import ParameterError, SimulationError
from hardwire.progress import heartbeat, time_left, yosys_step


@pytest.mark.slow
def test_a_failed_synthesis_keeps_the_verdict_and_a_rerun_resumes_from_it(tmp_path, monkeypatch):
    entry = zoo.build("mlp2")
    out = tmp_path / "mlp2"
    lines = []
    # 10 ms: yosys cannot even start in that time, so the synthesis step times out for sure
    options = dict(fps=200_000, n_random=6, target="generic", place_route=False)
    with pytest.raises(checkpoint.IncompleteCompile) as failed:
        compile_model(
            entry.onnx_path, out, CompileOptions(**options, synth_timeout_s=0.01), name="mlp2", progress=lines.append
        )
    message = str(failed.value)
    assert "timed out after 0.01 s" in message and "network mlp2" in message and "--synth-timeout" in message
    assert not out.exists() and not list(tmp_path.glob(".mlp2.tmp-*"))
    side = checkpoint.side_folder(out)
    saved = json.loads((side / "report.json").read_text())
    assert saved["incomplete"]["status"].startswith("synthesis failed: yosys synthesis of network mlp2")
    assert saved["simulation"]["bit_exact_vs_golden"] and "synthesis" not in saved
    assert (side / "mlp2.v").is_file() and (side / "report.md").read_text().startswith("# INCOMPLETE: synthesis")

    def must_not_simulate(*args, **kwargs):
        raise AssertionError("the kept verdict should have been reused")

    monkeypatch.setattr(hls_compile, "simulate_network", must_not_simulate)
    lines.clear()
    report = compile_model(entry.onnx_path, out, CompileOptions(**options), name="mlp2", progress=lines.append)
    assert any("is reused" in line for line in lines)
    assert report["simulation"]["reused_from"] == str(side)
    assert report["simulation"]["rtl_vs_qonnx"] == saved["simulation"]["rtl_vs_qonnx"]
    assert report["synthesis"]["ff"] > 0 and "incomplete" not in report
    assert out.is_dir() and not side.exists()

    # other verification inputs are another verdict: nothing is reused, so the (patched) simulation runs
    checkpoint.save(
        out, out, report, key="another key", status="synthesis had not finished", markdown=hls_compile.markdown_report
    )
    with pytest.raises(AssertionError, match="should have been reused"):
        compile_model(entry.onnx_path, out, CompileOptions(**options, seed=5), name="mlp2", progress=lines.append)


def test_simulation_key_follows_every_input(tmp_path):
    design = tmp_path / "net.v"
    design.write_text("module net; endmodule\n")
    memory = tmp_path / "net_w.hex"
    memory.write_text("0\n1\n")
    x, y = np.arange(6).reshape(2, 3), np.ones((2, 2))
    key = checkpoint.simulation_key([design, memory], x, y)
    assert key == checkpoint.simulation_key([memory, design], x, y)
    memory.write_text("1\n1\n")
    assert checkpoint.simulation_key([design, memory], x, y) != key
    memory.write_text("0\n1\n")
    assert checkpoint.simulation_key([design, memory], x + 1, y) != key
    assert checkpoint.simulation_key([design, memory], x.astype(np.int32), y) != key
    assert checkpoint.load_verdict(tmp_path / "nothing", key) is None


def test_synth_timeout_is_validated(tmp_path, capsys):
    with pytest.raises(ParameterError, match="synth_timeout"):
        CompileOptions(synth_timeout_s=0)
    assert main(["compile", "zoo:mlp2", "--synth-timeout", "-3", "-o", str(tmp_path / "x")]) == 2
    assert "synth_timeout" in capsys.readouterr().err


def test_heartbeat_reports_time_left_and_the_yosys_step(tmp_path):
    log = tmp_path / "yosys.log"
    log.write_text("1. Executing Verilog-2005 frontend: a.v\n2.3. Executing ABC9 pass.\nABC: + &st\n")
    assert yosys_step(log) == "ABC9 pass"
    assert yosys_step(tmp_path / "missing.log") is None
    assert time_left(30, 100, None) == "~70 s left (estimated)"
    assert time_left(30, None, 100) == "at most 70 s left before the timeout"
    assert time_left(130, 100, None) == "taking longer than the estimate"
    lines = []
    with heartbeat(lines.append, "yosys", every_s=0.05, limit_s=60, status=lambda: f"in {yosys_step(log)}"):
        time.sleep(0.3)
    assert lines and all("yosys: " in line and "before the timeout; in ABC9 pass" in line for line in lines)


def test_simulation_error_is_not_kept_as_a_verdict(tmp_path, monkeypatch):
    """A failed simulation is a failed compile: nothing is kept, no output folder appears."""
    entry = zoo.build("mlp2")

    def fails(*args, **kwargs):
        raise SimulationError("RTL outputs differ from qonnx execution on 3 outputs")

    monkeypatch.setattr(hls_compile, "simulate_network", fails)
    out = tmp_path / "mlp2"
    with pytest.raises(SimulationError):
        compile_model(
            entry.onnx_path, out, CompileOptions(fps=200_000, n_random=4), name="mlp2", progress=lambda _: None
        )
    assert not out.exists() and not checkpoint.side_folder(out).exists()
