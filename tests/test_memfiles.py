"""Weight and threshold memories in .hex files beside the Verilog: the rewrite is exact and deterministic, every
tool finds the files, and yosys maps them to as many block RAMs as their bits need."""

from __future__ import annotations

from math import ceil

import numpy as np
import pytest
from amaranth.back import verilog
from hardwire.flows import memfiles
from hardwire.flows.synth import synth
from hardwire.gen import mvu

from hardwire.errors import ParameterError


def _mvu_verilog(p: mvu.MvuParams, name: str, weights=None, thresholds=None) -> str:
    if weights is None:
        unit = mvu.build_standalone(p)
    else:
        unit = mvu.MatrixVectorUnit(p, weights, thresholds)
    return verilog.convert(unit, name=name, emit_src=False)


def _write(folder, name, text, files):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.v").write_text(text)
    for file_name, content in files.items():
        (folder / file_name).write_text(content)
    return folder / f"{name}.v"


P = mvu.MvuParams(in_features=32, out_features=8, simd=2, pe=2, w_width=3, out_width=2)


def test_externalize_moves_big_memories_to_hex_files_and_inline_restores_the_text(tmp_path):
    text = _mvu_verilog(P, "u")
    moved, files = memfiles.externalize(text, "u", min_bits=64)
    # per PE: weights (NF*SF = 64 words of simd*w_width = 6 bits) and thresholds (NF = 4 words of 3 x width);
    # the input buffer (SF = 16 words of 2 x 4 bits = 128 bits) too
    assert sorted(files) == [
        "u_input_buffer.hex",
        "u_pe0_thresholds_66.hex",
        "u_pe0_weights.hex",
        "u_pe1_thresholds_67.hex",
        "u_pe1_weights.hex",
    ]
    assert moved.count("$readmemh") == 5 and "pe0_weights[0] =" not in moved
    # the weight file holds PE 0's rows (channels 0, 2, 4, 6), simd weights per word, element 0 at the LSB
    weights, _ = mvu.mvu_random_content(P)
    words = [int(w, 16) for w in files["u_pe0_weights.hex"].split()]
    expected = [
        sum((int(v) & 7) << (3 * i) for i, v in enumerate(weights[n, s : s + 2]))
        for n in range(0, 8, 2)
        for s in range(0, 32, 2)
    ]
    assert words == expected and all(len(w) == 2 for w in files["u_pe0_weights.hex"].split())
    folder = tmp_path / "m"
    _write(folder, "u", moved, files)
    assert memfiles.inline(moved, folder) == text
    # deterministic: a second conversion writes the very same text and files
    assert memfiles.externalize(_mvu_verilog(P, "u"), "u", min_bits=64) == (moved, files)
    # below the threshold nothing moves
    assert memfiles.externalize(text, "u", min_bits=10**6) == (text, {})


def test_referenced_files_are_found_beside_the_source_or_named_when_missing(tmp_path):
    moved, files = memfiles.externalize(_mvu_verilog(P, "u"), "u", min_bits=64)
    path = _write(tmp_path, "u", moved, files)
    assert [p.name for p in memfiles.referenced_files(path)] == list(files)
    (tmp_path / "u_pe1_weights.hex").unlink()
    with pytest.raises(ParameterError, match="u_pe1_weights.hex is missing"):
        memfiles.referenced_files(path)
    # a file outside the source's folder cannot travel with it into a tool's build folder
    (tmp_path / "x.hex").write_text("0\n")
    outside = tmp_path / "sub" / "o.v"
    outside.parent.mkdir()
    outside.write_text('module o; reg [3:0] m [0:0]; initial $readmemh("../x.hex", m); endmodule\n')
    with pytest.raises(ParameterError, match="x.hex"):
        memfiles.referenced_files(outside)


@pytest.mark.parametrize(
    "target, per_block",
    [
        ("ecp5", {"DP16KD": 1, "PDPW16KD": 1}),  # 16 kbit + 2 kbit parity, usable as data
        pytest.param(
            "xilinx",
            {"RAMB18E1": 1, "RAMB36E1": 2},  # in 18 kbit units: a RAMB36E1 is two
            marks=pytest.mark.slow,
        ),  # (synth_xilinx takes about a minute)
    ],
)
def test_weight_memory_from_a_file_maps_to_the_block_rams_its_bits_need(tmp_path, target, per_block):
    # SF = 1 (no input buffer memory), raw output (no thresholds): the weights, 4096 words of 9 random bits
    # (36 kbit), are the only memory, and they need exactly two 18 kbit blocks
    p = mvu.MvuParams(
        in_features=9, out_features=4096, simd=9, pe=1, in_width=1, w_width=1, w_signed=False, out_width=0
    )
    weights = np.random.default_rng(3).integers(0, 2, size=(4096, 9))
    text, files = memfiles.externalize(_mvu_verilog(p, "w", weights), "w")
    assert list(files) == ["w_pe0_weights.hex"]
    report = synth([_write(tmp_path, "w", text, files)], "w", target)
    blocks = sum(n * per_block.get(cell, 0) for cell, n in report.cells.items())
    assert ceil(4096 * 9 / 18432) == 2 == blocks
    assert report.bram == sum(n for cell, n in report.cells.items() if cell in per_block)
