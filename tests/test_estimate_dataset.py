"""The synthesis dataset: real yosys on tiny designs, an append-only store that survives kills, resume without
losing or repeating a row, Ray local mode, and failures recorded rather than dropped."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hardwire.errors import ParameterError
from hardwire.estimate import designs
from hardwire.estimate.dataset import RowStore, generate
from hardwire.estimate.features import DesignGraph, flat_features

TINY = [
    {
        "kind": "block",
        "block": "dwc",
        "params": {"in_lanes": 2, "out_lanes": 1, "elem_width": 3, "elem_signed": False, "frame_elements": 4},
    },
    {
        "kind": "block",
        "block": "maxpool",
        "params": {
            "in_height": 2,
            "in_width": 2,
            "channels": 1,
            "kernel_size": 2,
            "simd": 1,
            "elem_width": 2,
            "elem_signed": False,
        },
    },
    {
        "kind": "network",
        "seed": 7,
        "a_bits": 2,
        "a_signed": False,
        "shape": [1, 1, 4],
        "layers": [{"op": "dense", "out": 2, "pe": 1, "simd": 2, "w_bits": 2, "out_bits": 0}],
    },
]
BROKEN = {"kind": "block", "block": "mvu", "params": {"in_features": 16, "simd": 3}}


def test_store_cuts_a_torn_gzip_member_and_a_torn_line(tmp_path):
    store = RowStore(tmp_path / "d.jsonl.gz")
    store.append([{"key": "a"}, {"key": "b"}])
    store.append([{"key": "c"}])
    whole = store.path.read_bytes()
    store.path.write_bytes(whole + gzip.compress(b'{"key": "d"}\n')[:-9])  # a member killed mid-write
    assert [r["key"] for r in RowStore(store.path).rows()] == ["a", "b", "c"]
    assert store.path.read_bytes() == whole
    plain = RowStore(tmp_path / "d.jsonl")
    plain.append([{"key": "x"}])
    with open(plain.path, "a") as handle:
        handle.write('{"key": "y", "lab')
    assert RowStore(plain.path).keys() == {"x"}


def test_merge_appends_only_missing_rows_from_runs_that_shared_a_start(tmp_path):
    from hardwire.estimate.dataset import merge

    base = RowStore(tmp_path / "base.jsonl.gz")
    base.append([{"key": "a", "v": 1}])
    one, two = tmp_path / "one.jsonl.gz", tmp_path / "two.jsonl.gz"
    for path, new in (
        (one, [{"key": "b", "v": 2}, {"key": "c", "v": 3}]),
        (two, [{"key": "c", "v": 99}, {"key": "d"}]),
    ):
        path.write_bytes(base.path.read_bytes())  # two machines started from the same shipped file
        RowStore(path).append(new)
    before = base.path.read_bytes()
    assert merge(base.path, [one, two]) == 3
    assert base.path.read_bytes().startswith(before)  # appended, never rewritten
    assert [(r["key"], r.get("v")) for r in base.rows()] == [("a", 1), ("b", 2), ("c", 3), ("d", None)]
    assert merge(base.path, [one, two]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "hardwire.cli", "dataset", "merge", str(base.path), str(tmp_path / "missing.jsonl.gz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "missing.jsonl.gz" in done.stderr


def test_random_specs_are_legal_reproducible_and_larger_in_the_large_split():
    small = designs.sample_designs(3, 40)
    assert small == designs.sample_designs(3, 40)
    large = designs.sample_designs(3, 8, size="large")
    depth = lambda specs: max(len(s["layers"]) for s in specs if s["kind"] == "network")  # noqa: E731
    assert depth(large) > depth(small) or min(len(s["layers"]) for s in large) >= 4
    assert {s["block"] for s in small if s["kind"] == "block"} <= set(designs.BLOCK_FAMILIES)
    for spec in small[:10] + large[:2]:
        if spec["kind"] == "network":
            graph, folding = designs.build_network(spec)
            assert set(folding.folds) == {layer.name for layer in graph.layers if hasattr(layer, "weights")}
        else:
            designs.build_block(spec)


def test_an_added_option_takes_only_a_share_of_its_familys_draws_and_leaves_every_other_design():
    """online_pipelined softmax is drawn from its own stream: every design is the one drawn without it, except
    some softmax draws, which it replaces with legal online_pipelined parameters."""
    before = designs.sample_designs(2, 400, added_options=False)
    after = designs.sample_designs(2, 400)
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert changed and len(changed) < sum(s.get("block") == "softmax" for s in before)
    for i in changed:
        assert before[i]["block"] == after[i]["block"] == "softmax"
        assert before[i]["params"]["variant"] != "online_pipelined" == after[i]["params"]["variant"]
        block, params = designs.build_block(after[i])
        assert 6 <= params.lanes <= 12
    assert not any(s.get("params", {}).get("variant") == "online_pipelined" for s in before)


def test_generation_synthesizes_for_real_records_failures_and_resumes(tool_cache, tmp_path):
    path = tmp_path / "d.jsonl.gz"
    summary = generate(path, targets=("ecp5",), specs=TINY + [BROKEN], workers=2, fmax_share=0)
    rows = RowStore(path).rows()
    assert summary["rows"] == len(rows) == 4
    by_kind = {(r["spec"].get("block") or r["spec"]["kind"]): r for r in rows}
    assert by_kind["mvu"]["error"].startswith("generation failed: ParameterError") and by_kind["mvu"]["labels"] is None
    for name in ("dwc", "maxpool", "network"):
        row = by_kind[name]
        assert row["error"] is None and row["labels"]["lut"] > 0 and row["labels"]["ff"] > 0
        graph = DesignGraph.from_dict(row["design"])
        assert flat_features(graph)["nodes"] >= 1
    assert by_kind["network"]["design"]["exact"]["initiation_interval"] == 4  # (K/SIMD) x (N/PE) = 2 x 2
    again = generate(path, targets=("ecp5",), specs=TINY + [BROKEN], workers=2, fmax_share=0)
    assert again["designs"] == 0 and len(RowStore(path).rows()) == 4


def test_killed_run_loses_and_repeats_no_row(tool_cache, tmp_path):
    path = tmp_path / "k.jsonl.gz"
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps(TINY))
    command = [
        sys.executable,
        "-m",
        "hardwire.cli",
        "dataset",
        "generate",
        "-o",
        str(path),
        "--specs",
        str(specs),
        "--targets",
        "ecp5,ice40",
        "--workers",
        "1",
        "--fmax-share",
        "0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and RowStore(path).rows():
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    partial = RowStore(path).keys()
    assert 0 < len(partial) < 6
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = RowStore(path).rows()
    keys = [row["key"] for row in rows]
    assert len(keys) == len(set(keys)) == 6 and partial <= set(keys)


def test_a_tool_crash_is_not_stored_and_is_tried_again(tool_cache, tmp_path, monkeypatch):
    """A tool killed by a signal (SIGBUS, out of memory) says nothing about the design: the row is left out and the
    next run synthesizes it; a design that fails on its own merits (BROKEN) is still recorded."""
    import hardwire.flows.synth as synth_module
    from hardwire.errors import ToolError

    real_synth = synth_module.synth

    def crashing(sources, top, target, **kwargs):
        if target == "xilinx":
            raise ToolError("yosys", ["yosys"], "-", "", "was killed by signal 7")
        return real_synth(sources, top, target, **kwargs)

    path = tmp_path / "c.jsonl.gz"
    monkeypatch.setattr(synth_module, "synth", crashing)  # the pool's workers are forked: they see it too
    first = generate(path, targets=("ecp5", "xilinx"), specs=TINY[:1] + [BROKEN], workers=1, fmax_share=0)
    assert first["crashed"] == 1
    assert sorted((r["spec"].get("block"), r["target"], r["error"] is None) for r in RowStore(path).rows()) == [
        ("dwc", "ecp5", True),
        ("mvu", "ecp5", False),
        ("mvu", "xilinx", False),
    ]
    monkeypatch.setattr(synth_module, "synth", real_synth)
    second = generate(path, targets=("ecp5", "xilinx"), specs=TINY[:1] + [BROKEN], workers=1, fmax_share=0)
    assert second["designs"] == 1 and second["crashed"] == 0
    rows = RowStore(path).rows()
    assert len(rows) == 4 and any(r["target"] == "xilinx" and r["labels"] and r["labels"]["lut"] > 0 for r in rows)


def test_ray_local_mode_gives_the_same_rows_as_the_process_pool(tool_cache, tmp_path):
    pytest.importorskip("ray")
    pool = tmp_path / "pool.jsonl.gz"
    ray = tmp_path / "ray.jsonl.gz"
    generate(pool, targets=("ecp5",), specs=TINY[:1], workers=1, fmax_share=0)
    generate(ray, targets=("ecp5",), specs=TINY[:1], ray_address="local", fmax_share=0)
    strip = lambda rows: [{k: r[k] for k in ("key", "labels", "design", "error")} for r in rows]  # noqa: E731
    assert strip(RowStore(pool).rows()) == strip(RowStore(ray).rows())


def test_bad_targets_sizes_and_specs_are_one_line_errors(tmp_path):
    with pytest.raises(ParameterError, match="target='virtex2'"):
        generate(tmp_path / "x.jsonl.gz", targets=("virtex2",), specs=TINY)
    with pytest.raises(ParameterError, match="size='huge'"):
        generate(tmp_path / "x.jsonl.gz", size="huge")
    (tmp_path / "s.json").write_text('{"not": "a list"}')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hardwire.cli",
            "dataset",
            "generate",
            "-o",
            str(tmp_path / "y.jsonl.gz"),
            "--specs",
            str(tmp_path / "s.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "specs=" in done.stderr


def test_rows_of_an_older_generator_are_stale_and_left_out(tmp_path, monkeypatch):
    """A generator whose version moves on builds different hardware: the design hash moves with it (the dataset
    makes the design anew) and rows synthesized from the older version are not trained on."""
    import dataclasses

    from hardwire.estimate.designs import design_hash, is_stale
    from hardwire.estimate.train import load_rows
    from hardwire.gen import registry

    block, network = TINY[0], TINY[2]
    rows = [
        {"key": f"{design_hash(s)}:ecp5", "design_hash": design_hash(s), "spec": s, "labels": {"lut": 1}}
        for s in (block, network)
    ]
    RowStore(tmp_path / "d.jsonl.gz").append(rows)
    assert not any(is_stale(r) for r in rows) and len(load_rows([tmp_path / "d.jsonl.gz"])) == 2
    bumped = dataclasses.replace(registry.get("dwc"), generator_version="99")
    monkeypatch.setitem(registry._BLOCKS, "dwc", bumped)
    assert design_hash(block) != rows[0]["design_hash"]  # the dwc block, and every network (dwc units)
    assert design_hash(network) != rows[1]["design_hash"]
    assert design_hash(TINY[1]) == designs.digest("design", TINY[1])  # maxpool: untouched
    assert [is_stale(r) for r in rows] == [True, True] and load_rows([tmp_path / "d.jsonl.gz"]) == []
