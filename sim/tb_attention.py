"""cocotb testbench of the attention head: queries and their K/V rows streamed, every output lane checked
bit-exactly against `attend_golden`, every handshake cycle against `attention_schedule`, and the error
against float64 scaled_dot_product_attention measured in output LSBs.

The caller (pytest, `hardwire sim attention`) passes the parameters and the cases through the run's config;
each case becomes one cocotb test. A case lists its queries (q, the query's k and v rows, its position)
and the valid/ready probabilities of the streams.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.gen.attention import (
    AttentionParams,
    attend_golden,
    attention_schedule,
    query_cycles,
    query_groups,
    reference_float,
)
from hardwire.sim.runner import load_config, write_results
from hardwire.sim.streams import (
    StreamSink,
    StreamSource,
    pack_fields,
    pack_lanes,
    reset,
    transfer_span_cycles,
    unpack_lanes,
)

from hardwire.params import int_range

CLOCK_NS = 10


def _query(q, k, v, position=None, last=False) -> dict:
    return {
        "q": np.asarray(q).tolist(),
        "k": np.asarray(k).tolist(),
        "v": np.asarray(v).tolist(),
        "position": None if position is None else int(position),
        "last": bool(last),
    }


def _grouped(p: AttentionParams, cases: list[dict], rng) -> list[dict]:
    """queries > 1: each query of a case becomes a group sharing its keys and values: group sizes cycle
    through queries, queries - 1, 1 and queries (a partial group in every case that has two queries or more),
    the extra queries random (the extremes case: the same extreme query), with their own causal positions;
    a full group is closed by its size or (every other one) by its last flag as well."""
    q_lo, q_hi = int_range(p.q_width, True)
    sizes = [p.queries, max(1, p.queries - 1), 1, p.queries]
    out = []
    for case in cases:
        queries = []
        for index, query in enumerate(case["queries"]):
            size = sizes[index % len(sizes)]
            members = [dict(query)]
            for extra in range(1, size):
                q = query["q"] if case["name"] == "extremes" else rng.integers(q_lo, q_hi + 1, p.head_dim).tolist()
                position = int(rng.integers(0, p.seq_max)) if p.causal else None
                members.append(_query(q, query["k"], query["v"], position))
            for member in members:
                member["last"] = False
            members[-1]["last"] = size < p.queries or index % 2 == 1
            queries += members
        out.append(dict(case, queries=queries))
    return out


def default_cases(p: AttentionParams, seed: int = 1) -> list[dict]:
    """Random queries of random lengths, a whole head at seq_max, and the corners: all keys equal, one
    dominant key, very negative scores, extreme values, length 1; then bubbles and back-pressure.
    Causal configurations get random positions (dead tiles included); decode steps have random cache lengths."""
    rng = np.random.default_rng([seed, p.head_dim, p.tile, p.seq_max])
    d, n_max = p.head_dim, p.seq_max
    q_lo, q_hi = int_range(p.q_width, True)
    k_lo, k_hi = int_range(p.k_width, True)
    v_lo, v_hi = int_range(p.v_width, True)

    def rand(lo, hi, shape):
        return rng.integers(lo, hi + 1, size=shape, dtype=np.int64)

    def position(n):
        return int(rng.integers(0, n_max)) if p.causal else None

    def random_query(n):
        return _query(rand(q_lo, q_hi, d), rand(k_lo, k_hi, (n, d)), rand(v_lo, v_hi, (n, d)), position(n))

    def lengths(count):
        return [int(x) for x in rng.integers(1, n_max + 1, count)]

    # a whole head: S queries over the same S keys, positions 0..S-1
    s = n_max
    q_head, k_head, v_head = rand(q_lo, q_hi, (s, d)), rand(k_lo, k_hi, (s, d)), rand(v_lo, v_hi, (s, d))
    whole = [_query(q_head[i], k_head, v_head, i if p.causal else None) for i in range(min(s, 8))]
    # queries > 1: a whole head in groups of `queries` (the last one partial), positions 0..
    count = 2 * p.queries + 1
    whole_groups = [
        _query(q_head[i % s], k_head, v_head, i % s if p.causal else None, last=i == count - 1) for i in range(count)
    ]

    n = n_max
    equal_k = np.repeat(rand(k_lo, k_hi, (1, d)), n, axis=0)
    dominant_k = rand(k_lo // 4, k_hi // 4, (n, d))
    dominant_q = np.full(d, q_hi)
    dominant_k[n // 2] = k_hi
    negative_q = np.full(d, q_hi)
    negative_k = np.full((n, d), k_lo)
    negative_k[-1] = k_lo + 1
    cases = [
        ("random_full_rate", [random_query(n) for n in [n_max, 1, *lengths(3)]], 1.0, 1.0),
        ("whole_head", whole, 1.0, 1.0),
        ("all_keys_equal", [_query(rand(q_lo, q_hi, d), equal_k, rand(v_lo, v_hi, (n, d)), position(n))], 1.0, 1.0),
        ("one_dominant_key", [_query(dominant_q, dominant_k, rand(v_lo, v_hi, (n, d)), position(n))], 1.0, 1.0),
        ("very_negative_scores", [_query(negative_q, negative_k, rand(v_lo, v_hi, (n, d)), position(n))], 1.0, 1.0),
        (
            "extremes",
            [
                _query(
                    rng.choice([q_lo, q_hi], d),
                    rng.choice([k_lo, k_hi], (n, d)),
                    rng.choice([v_lo, v_hi], (n, d)),
                    position(n),
                ),
                _query(np.full(d, q_lo), np.full((n, d), k_lo), np.full((n, d), v_lo), position(n)),
                _query(np.zeros(d), np.zeros((n, d)), np.full((n, d), v_hi), position(n)),
            ],
            1.0,
            1.0,
        ),
        ("length_one", [random_query(1) for _ in range(3)], 1.0, 1.0),
        # decode: one new query per step against a KV cache of run-time length (causal: the newest position)
        (
            "decode",
            [
                _query(
                    rand(q_lo, q_hi, d), rand(k_lo, k_hi, (n, d)), rand(v_lo, v_hi, (n, d)), n - 1 if p.causal else None
                )
                for n in (1, n_max, *lengths(2))
            ],
            1.0,
            1.0,
        ),
        ("input_bubbles", [random_query(n) for n in lengths(3)], 0.5, 1.0),
        ("backpressure", [random_query(n) for n in lengths(3)], 0.6, 0.4),
    ]
    cases = [
        {"name": name, "queries": queries, "valid_probability": vp, "ready_probability": rp}
        for name, queries, vp, rp in cases
    ]
    if p.queries == 1:
        return cases
    grouped = _grouped(p, [case for case in cases if case["name"] != "whole_head"], rng)
    return [
        {"name": "whole_head", "queries": whole_groups, "valid_probability": 1.0, "ready_probability": 1.0},
        *grouped,
    ]


CONFIG = load_config()
CASES = {case["name"]: case for case in CONFIG.get("cases", [])}


def _q_beat(p: AttentionParams, query: dict, length: int) -> int:
    widths = {"q": p.head_dim * p.q_width, "length": p.length_width}
    values = {"q": pack_lanes(query["q"], p.q_width), "length": length}
    if p.causal:
        widths["position"] = p.position_width
        values["position"] = query["position"]
    if p.queries > 1:
        widths["last"] = 1
        values["last"] = int(query.get("last", False))
    return pack_fields(values, widths)


def _kv_beat(p: AttentionParams, k_row, v_row) -> int:
    return pack_lanes(k_row, p.k_width) | pack_lanes(v_row, p.v_width) << (p.head_dim * p.k_width)


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def attention_matches_golden(dut, case):
    assert case in CASES, "run through hardwire.sim.verify (no cases in the config)"
    spec = CASES[case]
    p = AttentionParams.from_dict(CONFIG["params"])
    queries = spec["queries"]
    vp, rp = spec["valid_probability"], spec["ready_probability"]

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await reset(dut, dut.clk, sources=("q", "kv"), sinks=("o",))
    seed = CONFIG.get("seed", 1)
    q_source = StreamSource(dut, "q", dut.clk, valid_probability=vp, seed=seed)
    kv_source = StreamSource(dut, "kv", dut.clk, valid_probability=vp, seed=seed + 2)
    sink = StreamSink(dut, "o", dut.clk, ready_probability=rp, seed=seed + 1)
    # a group's queries share its K/V rows, streamed once after the group's q beats (queries = 1: one each)
    workload = [(len(query["k"]), query["position"], query.get("last", False)) for query in queries]
    for members in query_groups(p, workload):
        k, v = queries[members[0]]["k"], queries[members[0]]["v"]
        for index in members:
            assert queries[index]["k"] == k and queries[index]["v"] == v, "a group's queries share k and v"
            q_source.send(_q_beat(p, queries[index], len(k)))
        kv_source.send_all(_kv_beat(p, k_row, v_row) for k_row, v_row in zip(k, v))

    isolated_cycles = sum(query_cycles(p, n, pos)["interval_cycles"] for n, pos, _ in workload)
    budget_ns = int((4 * isolated_cycles + 1000) / min(vp, rp) ** 2) * CLOCK_NS
    raw = await with_timeout(sink.take(len(queries)), budget_ns, "ns")
    for _ in range(2 * query_cycles(p, p.seq_max, p.seq_max - 1 if p.causal else None)["latency_cycles"]):
        await RisingEdge(dut.clk)
    extra = len(sink.received) - len(queries)

    workload_keys = [(n, pos) for n, pos, _ in workload]
    y_hw = np.array([unpack_lanes(beat, p.out_width, p.head_dim, signed=True) for beat in raw], dtype=np.int64)
    y_golden = np.stack([attend_golden(p, qu["q"], qu["k"], qu["v"], qu["position"]) for qu in queries])
    mismatches = int(np.count_nonzero(y_hw != y_golden))
    errors = np.concatenate(
        [
            np.abs(
                y_hw[i] - reference_float(p, [qu["q"]], [qu["k"]], [qu["v"]], [qu["position"]] if p.causal else None)[0]
            )
            for i, qu in enumerate(queries)
        ]
    )

    q_acc, kv_acc, produced = attention_schedule(p, workload, q_source.offer_cycles, kv_source.offer_cycles)
    model_cycles = produced[-1] - q_acc[0] + 1
    check_schedule = rp == 1.0
    schedule_ok = (
        q_acc == q_source.transfer_cycles and kv_acc == kv_source.transfer_cycles and produced == sink.transfer_cycles
    )
    full_rate = vp == 1.0 and rp == 1.0
    span = transfer_span_cycles([q_source, kv_source], [sink])
    write_results(
        {
            case: {
                "shape": [len(queries), max(n for n, _ in workload_keys), p.head_dim],
                "exact": mismatches == 0,
                "mismatches": mismatches,
                "outputs": int(y_golden.size),
                "extra_beats": extra,
                "max_error_lsb": float(errors.max()),
                "mean_error_lsb": float(errors.mean()),
                "check_schedule": check_schedule,
                "schedule_ok": schedule_ok,
                "full_rate": full_rate,
                "cycles": span,
                "model_cycles": model_cycles,
                "check_cycles": full_rate,
                # the d-wide dot-product array's busy fraction: one attended key per cycle is its peak
                "utilization": sum(min(n, pos + p.causal_offset + 1) if p.causal else n for n, pos in workload_keys)
                / span,
                "output_cycles": list(sink.transfer_cycles),
            }
        }
    )

    if mismatches:
        i, lane = (int(x) for x in np.argwhere(y_hw != y_golden)[0])
        raise AssertionError(
            f"{mismatches}/{y_golden.size} outputs differ from the golden model; first at "
            f"query {i}, lane {lane}: hardware {y_hw[i, lane]}, golden {y_golden[i, lane]}"
        )
    assert extra == 0, f"{extra} output beats beyond the {len(queries)} expected"
    if check_schedule:
        for what, model, seen in (
            ("q", q_acc, q_source.transfer_cycles),
            ("kv", kv_acc, kv_source.transfer_cycles),
            ("o", produced, sink.transfer_cycles),
        ):
            if model != seen:
                i = next((i for i, (a, b) in enumerate(zip(model, seen)) if a != b), min(len(model), len(seen)))
                raise AssertionError(
                    f"{what} handshake {i}: measured cycle {seen[i : i + 1]}, the schedule model "
                    f"says {model[i : i + 1]} ({len(seen)} measured, {len(model)} modelled)"
                )
    if full_rate:
        assert span == model_cycles, f"{span} cycles in total, the cycle model says {model_cycles}"
