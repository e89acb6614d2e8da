"""The command line as a user meets it: files written, tables printed, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hardwire.cli import main


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "hardwire.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=1800
    )


@pytest.mark.parametrize(
    "args, named",
    [
        (["gen", "systolic", "--rows", "0"], "rows=0"),
        (["gen", "systolic", "--a-width", "17"], "a_width=17"),
        (["gen", "systolic", "--dataflow", "diagonal"], "dataflow='diagonal'"),
        (["lint", "no_such_file.v", "--top", "x"], "no_such_file.v"),
    ],
)
def test_bad_input_is_one_line_naming_it_with_exit_code_2(args, named):
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


def test_gen_writes_verilog_and_a_description_and_lint_calls_it_clean(tmp_path):
    assert main(["gen", "systolic", "--rows", "2", "--cols", "3", "--no-a-signed", "-o", str(tmp_path)]) == 0
    top = "systolic_ws_2x3_a8u_w8s"
    meta = json.loads((tmp_path / f"{top}.json").read_text())
    assert meta["top"] == top and meta["params"]["cols"] == 3 and meta["params"]["a_signed"] is False
    assert {p["name"] for p in meta["ports"]} >= {"clk", "rst", "weights__payload", "results__ready"}
    assert f"module {top}" in (tmp_path / f"{top}.v").read_text()
    lint = run("lint", str(tmp_path / f"{top}.v"), "--top", top)
    assert lint.returncode == 0 and "clean" in lint.stdout, lint.stdout + lint.stderr


def test_synth_prints_a_resource_table_and_writes_report_json(tmp_path):
    assert main(["gen", "systolic", "--rows", "1", "--cols", "2", "-o", str(tmp_path)]) == 0
    top = "systolic_ws_1x2_a8s_w8s"
    result = run("synth", str(tmp_path / f"{top}.v"), "--top", top, "--target", "ecp5", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "DSP" in result.stdout and top in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["synth"]["dsp"] == 2 and report["synth"]["target"] == "ecp5"


def test_sim_runs_the_block_verification_and_writes_json(tmp_path):
    out = tmp_path / "sim.json"
    result = run("sim", "systolic", "--rows", "1", "--cols", "1", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bit-exact" in result.stdout
    data = json.loads(out.read_text())
    assert data["ok"] and all(case["exact"] for case in data["cases"].values())


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, monkeypatch):
    import os

    from hardwire.estimate.dataset import RowStore

    RowStore(tmp_path / "d.jsonl.gz").append([{"key": "a:ecp5", "split": "small", "target": "ecp5", "error": None}])
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone, as after `| head -1`

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return write_end

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["dataset", "info", str(tmp_path / "d.jsonl.gz")]) == 141
