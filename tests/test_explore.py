"""Design-space exploration on spaces small enough to synthesize completely with real yosys: the verified front
equals the true front (computed here, by brute force, from every point's measurement), a killed run resumes
without redoing finished points, Ray local mode finds the same front as the process pool, and impossible
budgets and unknown objectives are one-line errors naming the user's input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hardwire.errors import ParameterError
from hardwire.estimate.dataset import RowStore
from hardwire.estimate.explore import explore, network_spec_source, parse_budget, parse_objectives
from hardwire.estimate.explore_cli import write_report

# one dense layer 4 -> 2: PE in {1, 2}, SIMD in {1, 2, 4}: 6 foldings
SIX = {
    "kind": "network",
    "seed": 1,
    "a_bits": 2,
    "a_signed": False,
    "shape": [1, 1, 4],
    "layers": [{"op": "dense", "out": 2, "pe": 1, "simd": 1, "w_bits": 2, "out_bits": 0}],
}
# 2 -> 1: SIMD in {1, 2}: 2 foldings (the kill test)
TWO = {
    "kind": "network",
    "seed": 3,
    "a_bits": 3,
    "a_signed": False,
    "shape": [1, 1, 2],
    "layers": [{"op": "dense", "out": 1, "pe": 1, "simd": 1, "w_bits": 3, "out_bits": 0}],
}


@pytest.fixture(scope="module")
def searched(tool_cache, tmp_path_factory):
    """The margin-guided search, then every point of the same space synthesized (the true front)."""
    out = tmp_path_factory.mktemp("explore")
    source = network_spec_source(SIX)
    guided = explore(
        source, objectives=("lut", "throughput"), out=out / "guided", workers=2, dataset=out / "feedback.jsonl.gz"
    )
    full = explore(source, objectives=("lut", "throughput"), out=out / "full", workers=2, verify_all=True)
    return out, guided, full


def brute_front(points):
    """Every point not dominated by another (LUT minimized, throughput maximized), from measured rows."""
    front = set()
    for p in points:
        lut, fps = p["lut"], p["throughput"]
        if not any(
            q["lut"] <= lut and q["throughput"] >= fps and (q["lut"] < lut or q["throughput"] > fps) for q in points
        ):
            front.add(p["key"])
    return front


def test_verified_front_equals_the_true_front_of_a_fully_synthesized_space(searched):
    out, guided, full = searched
    assert full.enumerated and full.space_size == 6 and len(full.kept) == 6
    rows = {row["design_hash"]: row for row in RowStore(out / "full" / "work" / "rows.jsonl.gz").rows()}
    assert len(rows) == 6 and all(row["error"] is None for row in rows.values())
    measured = []
    for p in full.points:
        pe, simd = p.folds["0"]
        # throughput by hand: one inference streams 2/PE neuron folds x 4/SIMD synapse folds at 100 MHz
        assert p.exact["initiation_interval"] == (2 // pe) * (4 // simd)
        measured.append(
            {"key": p.key, "lut": rows[p.key]["labels"]["lut"], "throughput": 100e6 / ((2 // pe) * (4 // simd))}
        )
    true_front = brute_front(measured)
    assert {p.key for p in full.verified_front} == true_front
    assert {p.key for p in guided.verified_front} == true_front
    assert len(guided.kept) <= 6 and guided.stats["synthesized"] == len(guided.kept)
    # the measured numbers the search reports are the rows' numbers
    for p in guided.verified_front:
        assert p.measured["lut"] == rows[p.key]["labels"]["lut"]


def test_report_and_feedback_rows(searched, tmp_path):
    out, guided, _ = searched
    report = write_report(guided, tmp_path, design="tiny.json")
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["counts"]["verified_front"] == len(guided.verified_front) == len(report["verified_front"])
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert "Verified Pareto front" in (tmp_path / "report.md").read_text()
    assert saved["chosen"]["design_hash"] in {p.key for p in guided.verified_front}
    assert set(saved["estimate_vs_measured"]) >= {"lut", "ff"}
    # every verified row reached the user's dataset, once
    feedback = RowStore(out / "feedback.jsonl.gz").rows()
    assert sorted(r["key"] for r in feedback) == sorted(
        r["key"] for r in RowStore(out / "guided" / "work" / "rows.jsonl.gz").rows()
    )
    assert all(r["origin"] == "explore" and r["labels"] for r in feedback)
    # and `hardwire dataset train` reads them as training examples
    from hardwire.estimate.train import examples

    assert len(examples(feedback)) == len(feedback)


def test_a_killed_search_resumes_without_redoing_finished_points(tmp_path):
    spec = tmp_path / "four.json"
    spec.write_text(json.dumps(TWO))
    out = tmp_path / "out"
    env = {**os.environ, "HARDWIRE_CACHE": str(tmp_path / "cache")}  # a cold cache: synthesis really runs
    command = [
        sys.executable,
        "-m",
        "hardwire.cli",
        "explore",
        str(spec),
        "--verify-all",
        "--workers",
        "1",
        "-o",
        str(out),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    rows = out / "work" / "rows.jsonl.gz"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if rows.exists() and RowStore(rows).rows():
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    partial = RowStore(rows).keys()
    assert len(partial) == 1
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert "1 already in" in done.stderr and "1 to synthesize" in done.stderr
    keys = [row["key"] for row in RowStore(rows).rows()]
    assert len(keys) == len(set(keys)) == 2 and partial <= set(keys)
    report = json.loads((out / "report.json").read_text())
    assert report["stats"]["reused"] == len(partial) and report["counts"]["verified"] == 2


def test_ray_local_mode_finds_the_same_front_as_the_process_pool(searched, tmp_path):
    pytest.importorskip("ray")
    _, guided, _ = searched
    ray = explore(network_spec_source(SIX), objectives=("lut", "throughput"), out=tmp_path, ray_address="local")
    assert [(p.key, p.measured) for p in ray.verified_front] == [(p.key, p.measured) for p in guided.verified_front]


def test_impossible_constraints_name_the_tightest_one(tool_cache, tmp_path):
    source = network_spec_source(SIX)
    with pytest.raises(ParameterError, match=r"budget=.lut=1.*smallest LUT"):
        explore(source, budget={"lut": 1, "ff": 1e9}, out=tmp_path)
    with pytest.raises(ParameterError, match=r"fps-min=1000000000000.0 .*fastest"):
        explore(source, fps_min=1e12, out=tmp_path)
    with pytest.raises(ParameterError, match="objectives='area'"):
        parse_objectives("lut,area")
    with pytest.raises(ParameterError, match="two or more"):
        parse_objectives("lut")
    with pytest.raises(ParameterError, match="budget='luts=5'"):
        parse_budget("luts=5")
    assert not (tmp_path / "work").exists()  # nothing was synthesized


def test_cli_errors_are_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hardwire.cli", "explore", "zoo:mlp4", "--objectives", "lut,speed", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "objectives='speed'" in done.stderr


def test_nsga2_search_scores_distinct_legal_foldings_reproducibly():
    pytest.importorskip("optuna")
    from hardwire.estimate.explore import candidates, nsga2_search
    from hardwire.estimate.predict import Estimator

    spec = {
        "kind": "network",
        "seed": 5,
        "a_bits": 2,
        "a_signed": False,
        "shape": [1, 1, 12],
        "layers": [
            {"op": "dense", "out": 12, "pe": 1, "simd": 1, "w_bits": 2, "out_bits": 2},
            {"op": "dense", "out": 6, "pe": 1, "simd": 1, "w_bits": 2, "out_bits": 0},
        ],
    }
    source = network_spec_source(spec)
    legal = candidates(source, 10_000, 0)[0]
    assert len(legal) == (6 * 6) * (4 * 6)  # divisors of 12 (PE, SIMD), of 6 (PE) and 12 (SIMD)
    estimator = Estimator.load()
    runs = [
        nsga2_search(
            source,
            estimator,
            "ecp5",
            100.0,
            ("lut", "throughput"),
            {"lut": 5000},
            None,
            48,
            7,
            lambda text: None,
            population=16,
        )
        for _ in range(2)
    ]
    folds = [p.folds for p in runs[0]]
    assert 0 < len(folds) <= 48 and all(f in legal for f in folds)
    assert len({json.dumps(f, sort_keys=True) for f in folds}) == len(folds)
    assert folds == [p.folds for p in runs[1]]


def test_a_block_family_space_verified_completely_gives_the_true_front(tool_cache, tmp_path):
    """A systolic array over rows x dataflow: illegal combinations are left out, throughput comes from the GEMM
    cycle model (checked against gen.systolic.gemm_cycles by hand), and the verified front is the brute-force
    front of every point's yosys numbers."""
    from hardwire.estimate.explore import source_for
    from hardwire.gen.systolic import SystolicParams, gemm_cycles

    source = source_for(
        "systolic",
        space=["rows=1,2", "dataflow=weight_stationary,output_stationary"],
        params=["cols=1", "a_width=2", "w_width=2", "k_max=64", "acc_depth=16"],
        workload="m=8,k=8,n=2",
    )
    full = explore(source, objectives=("lut", "throughput"), out=tmp_path, workers=2, verify_all=True)
    assert full.enumerated and full.space_size == 4 and len(full.kept) == 4
    rows = {row["design_hash"]: row for row in RowStore(tmp_path / "work" / "rows.jsonl.gz").rows()}
    measured = []
    for p in full.points:
        params = SystolicParams(cols=1, a_width=2, w_width=2, k_max=64, acc_depth=16, **p.folds)
        cycles = gemm_cycles(params, 8, 8, 2)
        assert p.exact == {"latency_cycles": cycles, "initiation_interval": cycles}
        assert p.spec == {
            "kind": "block",
            "block": "systolic",
            "params": {**p.folds, "cols": 1, "a_width": 2, "w_width": 2, "k_max": 64, "acc_depth": 16},
        }
        measured.append({"key": p.key, "lut": rows[p.key]["labels"]["lut"], "throughput": 100e6 / cycles})
    assert {p.key for p in full.verified_front} == brute_front(measured)
    report = write_report(full, tmp_path, design="systolic")
    assert report["chosen"]["command"].startswith("hardwire gen systolic ")
    assert "rows=" in (tmp_path / "report.md").read_text()


def test_fmax_objective_is_measured_with_nextpnr(tool_cache, tmp_path):
    """The fmax objective's verification path: each verified point gets its nextpnr ECP5 row, and the measured
    fmax the search reports is that row's number."""
    from hardwire.estimate.explore import source_for

    source = source_for("dwc", space=["out_lanes=1,2"], params=["in_lanes=2", "elem_width=2", "frame_elements=4"])
    result = explore(source, objectives=("lut", "fmax"), out=tmp_path, workers=2, verify_all=True)
    rows = {row["key"]: row for row in RowStore(tmp_path / "work" / "rows.jsonl.gz").rows()}
    assert len(result.kept) == 2
    for p in result.kept:
        fmax_row = rows[f"{p.key}:fmax-ecp5"]
        assert fmax_row["error"] is None and fmax_row["fmax_mhz"] > 20
        assert (
            p.measured["fmax"] == fmax_row["fmax_mhz"] and p.measured["lut"] == rows[f"{p.key}:ecp5"]["labels"]["lut"]
        )
    assert result.verified_front


def test_block_space_errors_name_the_users_input(tmp_path):
    from hardwire.estimate.explore import source_for

    with pytest.raises(ParameterError, match="at least one --space"):
        source_for("systolic")
    with pytest.raises(ParameterError, match="param='row=2'"):
        source_for("systolic", space=["row=2"])
    with pytest.raises(ParameterError, match="workload='q=3'"):
        source_for("systolic", space=["rows=2"], workload="q=3")
    with pytest.raises(ParameterError, match="cycles depend on its data"):
        source_for("bitvert", space=["pes=1,2"], workload="k=3")
    with pytest.raises(ParameterError, match="resource or fmax objectives only"):
        explore(source_for("bitvert", space=["pes=1,2"]), objectives=("lut", "throughput"), out=tmp_path)
    with pytest.raises(ParameterError, match="at least one legal systolic"):
        explore(source_for("systolic", space=["rows=0,-1"]), objectives=("lut", "throughput"), out=tmp_path)
    with pytest.raises(ParameterError, match="--space/--param/--workload only with a block"):
        source_for("zoo:mlp4", space=["rows=2"])
