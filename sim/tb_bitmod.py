"""cocotb testbench of the BitMoD PE array: quantized GEMMs (Y = A @ W^T) checked bit-exactly against the
golden model and against torch (float64 dequantized weights @ activations), handshake cycles against
`bitmod_schedule`.

The caller (pytest, `hardwire sim bitmod`) passes the parameters and the cases through the run's config. A case
holds the quantized weights (codes, type ids, scale mantissas and exponents, row bases), the activations A
(M, K) and the valid/ready probabilities. Checks: (a) every output bit-exact under the case's bubbles and
back-pressure; (b) the golden integer times 2**base equals torch.matmul in float64 exactly. That is exact
whenever out_width <= 53 (40 bits by default): every dequantized weight times an activation is an integer
times 2**base of the row, and every partial sum, in any order, is bounded by the same sum of magnitudes that
sets out_width, so it fits float64's 53-bit significand and no addition rounds; (c) with an always-ready
sink every input and output handshake cycle equals the cycle model, and at full rate the span equals
`gemm_cycles`.
"""

from __future__ import annotations

import cocotb
import numpy as np
import torch
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from hardwire.gen.bitmod import (
    BitmodParams,
    assemble,
    bitmod_schedule,
    gemm_cycles,
    gemm_golden,
    plan_gemm,
)
from hardwire.gen.bitmod_quant import (
    BY_NAME,
    CODE_BITS,
    DATATYPES,
    TYPE_ID_BITS,
    QuantizedWeights,
    ScaleFormat,
    quantize,
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


def weights_to_json(q: QuantizedWeights) -> dict:
    return {
        "codes": q.codes.tolist(),
        "type_ids": q.type_ids.tolist(),
        "scale_m": q.scale_m.tolist(),
        "scale_e": q.scale_e.tolist(),
        "base": q.base.tolist(),
        "group_size": q.group_size,
        "k": q.k,
        "mantissa_bits": q.fmt.mantissa_bits,
        "exponent_bits": q.fmt.exponent_bits,
    }


def weights_from_json(d: dict) -> QuantizedWeights:
    return QuantizedWeights(
        np.array(d["codes"], dtype=np.int64),
        np.array(d["type_ids"], dtype=np.int64),
        np.array(d["scale_m"], dtype=np.int64),
        np.array(d["scale_e"], dtype=np.int64),
        np.array(d["base"], dtype=np.int64),
        d["group_size"],
        d["k"],
        ScaleFormat(d["mantissa_bits"], d["exponent_bits"]),
    )


def synthetic_weights(
    p: BitmodParams, rng, n: int, groups: int, *, type_ids=None, codes=None, scale_m=None, scale_e=None
) -> QuantizedWeights:
    """Quantized weights built field by field (random where not given): every code of every type, the special
    values, any scale."""
    if type_ids is None:
        type_ids = rng.integers(0, len(DATATYPES), (n, groups))
    type_ids = np.broadcast_to(type_ids, (n, groups)).astype(np.int64)
    bits = np.repeat(np.array([d.bits for d in DATATYPES])[type_ids], p.group_size, axis=1)
    if codes is None:
        codes = rng.integers(0, 1 << CODE_BITS, (n, groups * p.group_size)) & ((1 << bits) - 1)
    if scale_m is None:
        scale_m = rng.integers(0, 1 << p.scale_bits, (n, groups))
    if scale_e is None:
        scale_e = rng.integers(0, p.e_max + 1, (n, groups))
    fmt = ScaleFormat(p.scale_bits, p.scale_exp_bits)
    return QuantizedWeights(
        np.asarray(codes, dtype=np.int64),
        type_ids,
        np.broadcast_to(scale_m, (n, groups)).copy(),
        np.broadcast_to(scale_e, (n, groups)).copy(),
        rng.integers(-20, 0, n),
        p.group_size,
        groups * p.group_size,
        fmt,
    )


def default_cases(p: BitmodParams, seed: int = 1) -> list[dict]:
    """Quantized real-valued weights (the mixture of all 12 types), every type with random codes and scales,
    the extremes at K = k_max (largest codes, m and e, activations at both ends), all-ones codes, zeros,
    alternating bits, fp3-only groups (one term per chunk), and random runs under bubbles and back-pressure."""
    rng = np.random.default_rng([seed, p.pes, p.lanes, p.group_size])
    lo, hi = int_range(p.a_width, True)
    fmt = ScaleFormat(p.scale_bits, p.scale_exp_bits)
    n = 2 * p.pes + 1  # two full row blocks and a partial one
    groups = 2
    k = groups * p.group_size

    def acts(m, kk):
        return rng.integers(lo, hi + 1, (m, kk))

    all_types = ",".join(d.name for d in DATATYPES)
    real = quantize(rng.standard_t(4, (n, k - p.lanes)) * 0.02, all_types, p.group_size, fmt)
    every_ids = (np.arange(len(DATATYPES))[:, None] + np.arange(groups)) % len(DATATYPES)
    every_type = synthetic_weights(p, rng, len(DATATYPES), groups, type_ids=every_ids)
    # the first weight of every group is the negative-zero code: the special value of the FP variants
    every_type.codes[:, :: p.group_size] = 1 << (np.array([d.bits for d in DATATYPES])[every_ids] - 1)
    big_groups = p.k_max // p.group_size
    largest = {}
    for name in ("fp4_ea_pos", "fp4_ea_neg", "int4", "fp3_ea_neg"):
        t = BY_NAME[name]
        largest[name] = t.values.index(max(t.values, key=abs))
    ext_ids = np.array([[BY_NAME[name].id] for name in largest])
    ext_codes = np.array([[code] for code in largest.values()])
    extremes = synthetic_weights(
        p,
        rng,
        len(largest),
        big_groups,
        type_ids=ext_ids,
        codes=np.repeat(ext_codes, big_groups * p.group_size, axis=1),
        scale_m=(1 << p.scale_bits) - 1,
        scale_e=p.e_max,
    )
    ones_ids = np.array([[BY_NAME["int4"].id], [BY_NAME["fp4_er_neg"].id], [BY_NAME["int3"].id]])
    ones_codes = np.repeat(np.array([[15], [15], [7]]), k, axis=1)
    all_ones = synthetic_weights(
        p, rng, 3, groups, type_ids=ones_ids, codes=ones_codes, scale_m=(1 << p.scale_bits) - 1, scale_e=p.e_max
    )
    zeros = synthetic_weights(p, rng, p.pes, groups, codes=np.zeros((p.pes, k), dtype=np.int64))
    alt_codes = np.tile(np.array([0b0101, 0b1010]), (n, k // 2 + 1))[:, :k]
    alternating = synthetic_weights(
        p,
        rng,
        n,
        groups,
        type_ids=BY_NAME["fp4_ea_pos"].id,
        codes=alt_codes,
        scale_m=int("01" * p.scale_bits, 2) & ((1 << p.scale_bits) - 1),
    )
    alt_acts = np.tile(np.array([0x55 & hi, ~0x55 & hi]) * np.array([1, -1]), (2, k // 2 + 1))[:, :k]
    fp3_only = synthetic_weights(p, rng, n, groups, type_ids=BY_NAME["fp3"].id)
    random_mix = synthetic_weights(p, rng, n, groups)

    cases = [
        ("quantized_mixture", real, acts(2, real.k), 1.0, 1.0),
        ("every_type_and_special_value", every_type, acts(2, k), 1.0, 1.0),
        ("extremes_at_k_max", extremes, np.array([[lo] * p.k_max, [hi] * p.k_max]), 1.0, 1.0),
        ("all_ones", all_ones, np.full((1, k), -1), 1.0, 1.0),
        ("zeros", zeros, np.zeros((1, k), dtype=np.int64), 1.0, 1.0),
        ("alternating_bits", alternating, alt_acts, 1.0, 1.0),
        ("fp3_one_term", fp3_only, acts(1, k), 1.0, 1.0),
        ("input_bubbles", random_mix, acts(2, k), 0.5, 1.0),
        ("backpressure", random_mix, acts(2, k), 0.6, 0.4),
        ("heavy_backpressure", random_mix, acts(1, k), 1.0, 0.15),
    ]
    return [
        {
            "name": name,
            "weights": weights_to_json(q),
            "a": np.asarray(a, dtype=np.int64).tolist(),
            "valid_probability": vp,
            "ready_probability": rp,
        }
        for name, q, a, vp, rp in cases
    ]


def torch_reference(q: QuantizedWeights, a: np.ndarray) -> np.ndarray:
    """float64: A @ dequantized(W)^T."""
    w = torch.as_tensor(q.dequantize(), dtype=torch.float64)
    return torch.matmul(torch.as_tensor(a, dtype=torch.float64), w.T).numpy()


CONFIG = load_config()
CASES = {case["name"]: case for case in CONFIG.get("cases", [])}


def weight_widths(p: BitmodParams) -> dict[str, int]:
    return {
        "codes": CODE_BITS * p.pes * p.lanes,
        "type_ids": TYPE_ID_BITS * p.pes,
        "scale_m": p.scale_bits * p.pes,
        "scale_e": max(1, p.scale_exp_bits) * p.pes,
        "last": 1,
    }


@cocotb.test()
@cocotb.parametrize(case=list(CASES) or ["no_cases_configured"])
async def bitmod_matches_golden_and_torch(dut, case):
    assert case in CASES, "run through hardwire.sim.verify (no cases in the config)"
    spec = CASES[case]
    p = BitmodParams.from_dict(CONFIG["params"])
    q = weights_from_json(spec["weights"])
    a = np.array(spec["a"], dtype=np.int64).reshape(len(spec["a"]), q.k)
    vp, rp = spec["valid_probability"], spec["ready_probability"]
    plan = plan_gemm(p, q, a)

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await reset(dut, dut.clk, sources=("weights", "activations"), sinks=("results",))
    seed = CONFIG.get("seed", 1)
    w_source = StreamSource(dut, "weights", dut.clk, valid_probability=vp, seed=seed)
    a_source = StreamSource(dut, "activations", dut.clk, valid_probability=vp, seed=seed + 7)
    sink = StreamSink(dut, "results", dut.clk, ready_probability=rp, seed=seed + 1)
    widths = weight_widths(p)
    scale_e_bits = max(1, p.scale_exp_bits)
    w_source.send_all(
        pack_fields(
            {
                "codes": pack_lanes(b["codes"], CODE_BITS),
                "type_ids": pack_lanes(b["type_ids"], TYPE_ID_BITS),
                "scale_m": pack_lanes(b["scale_m"], p.scale_bits),
                "scale_e": pack_lanes(b["scale_e"], scale_e_bits),
                "last": b["last"],
            },
            widths,
        )
        for b in plan.weights
    )
    a_source.send_all(pack_lanes(lanes, p.a_width) for lanes in plan.activations)

    model_cycles = gemm_cycles(p, plan)
    budget_ns = int((20 * model_cycles + 2000) / min(vp, rp)) * CLOCK_NS
    raw = await with_timeout(sink.take(len(plan.results)), budget_ns, "ns")
    for _ in range(4 * p.scale_bits + 4 * p.chunks_per_group + 16):  # nothing beyond the expected beats
        await RisingEdge(dut.clk)
    extra = len(sink.received) - len(plan.results)

    beats = [unpack_lanes(beat, p.out_width, p.pes, signed=True) for beat in raw]
    y_hw = assemble(p, plan, beats)
    y_golden = gemm_golden(p, q, a)
    y_torch = torch_reference(q, a)
    torch_exact = p.out_width <= 53
    golden_equals_torch = bool(np.array_equal(np.ldexp(y_golden.astype(np.float64), q.base[None, :]), y_torch))
    mismatches = int(np.count_nonzero(y_hw != y_golden))

    offered = [max(w, x) for w, x in zip(w_source.offer_cycles, a_source.offer_cycles)]
    accepted, produced = bitmod_schedule(p, plan.chunk_terms, plan.chunk_last, offered)
    check_schedule = rp == 1.0
    inputs_together = w_source.transfer_cycles == a_source.transfer_cycles
    schedule_ok = accepted == w_source.transfer_cycles and produced == sink.transfer_cycles
    full_rate = vp == 1.0 and rp == 1.0
    span = transfer_span_cycles([w_source, a_source], [sink])
    types_used = sorted({DATATYPES[t].name for t in np.unique(q.type_ids)})
    write_results(
        {
            case: {
                "shape": list(plan.shape),
                "exact": mismatches == 0,
                "mismatches": mismatches,
                "outputs": int(y_golden.size),
                "extra_beats": extra,
                "golden_equals_torch": golden_equals_torch,
                "torch_exact": torch_exact,
                "inputs_together": inputs_together,
                "check_schedule": check_schedule,
                "schedule_ok": schedule_ok,
                "full_rate": full_rate,
                "cycles": span,
                "model_cycles": model_cycles,
                "check_cycles": full_rate,
                "chunks": len(plan.chunk_terms),
                "term_cycles": sum(plan.chunk_terms),
                "utilization": sum(plan.chunk_terms) / span,
                "types": types_used,
            }
        }
    )

    if mismatches:
        i, j = (int(x) for x in np.argwhere(y_hw != y_golden)[0])
        raise AssertionError(
            f"{mismatches}/{y_golden.size} outputs differ from the golden model; first at "
            f"Y[{i},{j}]: hardware {y_hw[i, j]}, golden {y_golden[i, j]}"
        )
    if torch_exact:
        assert golden_equals_torch, "golden model * 2**base differs from torch.matmul in float64"
    assert extra == 0, f"{extra} result beats beyond the {len(plan.results)} expected"
    assert inputs_together, "the weights and activations streams were not taken in the same cycles"
    if check_schedule:
        for what, model, seen in (
            ("input", accepted, w_source.transfer_cycles),
            ("output", produced, sink.transfer_cycles),
        ):
            if model != seen:
                i = next((i for i, (x, y) in enumerate(zip(model, seen)) if x != y), min(len(model), len(seen)))
                raise AssertionError(
                    f"{what} handshake {i}: measured cycle {seen[i : i + 1]}, the cycle model says "
                    f"{model[i : i + 1]} ({len(seen)} measured, {len(model)} modelled)"
                )
    if full_rate:
        assert span == model_cycles, f"{span} cycles, gemm_cycles says {model_cycles}"
