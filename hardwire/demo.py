"""`hardwire demo`: the whole flow on a built-in 8x8 INT8 systolic array and a quantized network, with a report.

Steps: generate -> lint -> simulate against torch.matmul (both dataflows) -> synthesize for ecp5 and xilinx
-> place and route on an ECP5-85F -> a 2x4 array on an iCE40 UP5K (8 DSPs) -> a size sweep on ECP5 for the
plot -> a 4-bit MLP trained with Brevitas on digits, compiled to streaming RTL, simulated on the whole test
split against qonnx, synthesized and placed -> report.json, report.md, sweep.png. The output folder appears
only when everything succeeded.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from hardwire.cache import atomic_dir, write_json_atomic, write_text_atomic
from hardwire.errors import HardwireError
from hardwire.flows.report import (
    markdown_table,
    plot_sweep,
    tool_versions,
)
from hardwire.gen import registry
from hardwire.gen.systolic import SystolicParams, gemm_cycles, gemm_utilization

MAIN = SystolicParams(rows=8, cols=8, a_width=8, w_width=8)
ICE40 = SystolicParams(rows=2, cols=4, a_width=8, w_width=8, acc_depth=64)
SWEEP_SIZES = (2, 4, 8)
ECP5_DEVICE = ("85k", "CABGA381")
ICE40_DEVICE = ("up5k", "sg48")
NETWORK = "mlp4"
NETWORK_FPS = 300_000
BOARD_NETWORK = "mlp2"  # the smaller zoo network (2-bit weights and activations), fully folded


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _synth_task(verilog: str, top: str, target: str) -> dict:
    from hardwire.flows.synth import synth

    return synth([verilog], top, target).to_dict()


def _simulate_task(params: SystolicParams) -> dict:
    from hardwire.sim.verify import verify_block

    result = verify_block("systolic", params, progress=_say)
    return {"result": result.to_dict(), "table": result.table()}


def _describe(key: tuple, result: dict) -> str:
    if key[0] == "fmax":
        return f"fmax {key[1]} on {key[2]}: Fmax {result['fmax_mhz']:.1f} MHz"
    if key[0] == "synth":
        return f"synth {key[1]} on {key[2]}: LUT {result['lut']} FF {result['ff']} DSP {result['dsp']}"
    if key[0] == "simulation":
        return f"simulation of {key[1]}: {result['result']['passed']} passed, {result['result']['failed']} failed"
    return f"{key[0]} done"


def _fmax_task(verilog: str, top: str, target: str, device: str, package: str) -> dict:
    from hardwire.flows.fmax import wrapped_fmax

    return wrapped_fmax([verilog], top, target, device=device, package=package).to_dict()


def run_demo(out: Path, jobs: int = 2) -> dict:
    out = Path(out)
    started = time.monotonic()
    with atomic_dir(out, replace=True) as work:
        report = _demo(work, jobs)
        report["wall_s"] = round(time.monotonic() - started, 1)
        write_json_atomic(work / "report.json", report)
        write_text_atomic(work / "report.md", _markdown(report))
    _say(f"done in {report['wall_s']:.0f} s: {out / 'report.md'}, {out / 'report.json'}, {out / 'sweep.png'}")
    print((out / "report.md").read_text())
    return report


def _demo(work: Path, jobs: int) -> dict:
    from hardwire.flows.lint import lint

    rtl = work / "rtl"
    _say(f"[1/8] generating {MAIN.top_name} (8x8 INT8, weight-stationary) and the other demo configurations")
    designs = {}
    os_params = SystolicParams(rows=8, cols=8, dataflow="output_stationary")
    sweep = {n: SystolicParams(rows=n, cols=n) for n in SWEEP_SIZES}
    for params in [MAIN, os_params, ICE40, *sweep.values()]:
        designs[params.top_name] = registry.generate("systolic", params, rtl)

    _say("[2/8] verilator --lint-only -Wall on the generated Verilog")
    lint_results = {}
    for top, meta in designs.items():
        result = lint([meta["verilog"]], top)
        lint_results[top] = {"clean": result.clean, "unwaived": [w for w in result.warnings if not w["waived"]]}
        if not result.clean:
            raise HardwireError(
                f"lint of {top} is not clean: {lint_results[top]['unwaived'][:3]} (log {result.log_path})"
            )

    # Steps 3, 4, 6 and 7 do not depend on each other: one pool runs them on `jobs` cores, the longest first
    # (the network's training, compile and simulation; the board build; the 8x8 place-and-route), so that the
    # short synthesis runs fill the gaps at the end
    _say(
        f"[3-7/8] simulation, synthesis, place-and-route, the network and the board build, {jobs} at a time "
        "(the first yosys/nextpnr call compiles WebAssembly, ~30-90 s)"
    )
    tasks = {
        ("network",): (_network, work / "network"),
        ("board",): (_board, work / "board"),
    }
    for n, params in sorted(sweep.items(), reverse=True):
        verilog = designs[params.top_name]["verilog"]
        tasks[("fmax", params.top_name, "ecp5")] = (_fmax_task, verilog, params.top_name, "ecp5", *ECP5_DEVICE)
    for params in (MAIN, os_params):
        tasks[("simulation", params.top_name)] = (_simulate_task, params)
    tasks |= {
        ("fmax", ICE40.top_name, "ice40"): (
            _fmax_task,
            designs[ICE40.top_name]["verilog"],
            ICE40.top_name,
            "ice40",
            *ICE40_DEVICE,
        ),
        ("synth", MAIN.top_name, "xilinx"): (_synth_task, designs[MAIN.top_name]["verilog"], MAIN.top_name, "xilinx"),
        ("synth", ICE40.top_name, "ice40"): (_synth_task, designs[ICE40.top_name]["verilog"], ICE40.top_name, "ice40"),
    }
    for n, params in sweep.items():
        tasks[("synth", params.top_name, "ecp5")] = (
            _synth_task,
            designs[params.top_name]["verilog"],
            params.top_name,
            "ecp5",
        )
    results = {}
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(fn, *args): key for key, (fn, *args) in tasks.items()}
        for done, future in enumerate(as_completed(futures), 1):
            key = futures[future]
            results[key] = future.result()
            _say(f"      {done}/{len(tasks)} {_describe(key, results[key])}")

    simulations = {}
    for params in (MAIN, os_params):
        result = results[("simulation", params.top_name)]
        simulations[params.top_name] = result["result"]
        _say(result["table"])
        if not result["result"]["ok"]:
            raise HardwireError(f"simulation of {params.top_name} failed: {result['result']['failure']}")

    _say("[5/8] cycle model: utilization of tiled GEMMs on the 8x8 array")
    gemms = []
    for m, k, n in ((64, 64, 64), (256, 256, 256)):
        for params in (MAIN, os_params):
            gemms.append(
                {
                    "dataflow": params.dataflow,
                    "shape": [m, k, n],
                    "cycles": gemm_cycles(params, m, k, n),
                    "utilization": gemm_utilization(params, m, k, n),
                }
            )
    network, board = results[("network",)], results[("board",)]

    _say("[8/8] writing report.json, report.md and sweep.png")
    points = []
    for n, params in sweep.items():
        s = results[("synth", params.top_name, "ecp5")]
        points.append(
            {
                "label": f"{n}x{n}",
                "pes": n * n,
                "lut": s["lut"],
                "ff": s["ff"],
                "dsp": s["dsp"],
                "bram": s["bram"],
                "fmax_mhz": results[("fmax", params.top_name, "ecp5")]["fmax_mhz"],
            }
        )
    plot_sweep(points, work / "sweep.png", "systolic array (WS, INT8) on ECP5-85F")

    def resources(key):
        r = results[key]
        return {c: r[c] for c in ("lut", "ff", "dsp", "bram", "lutram")} | {"log": str(r.get("log_path"))}

    return {
        "design": MAIN.to_dict(),
        "verilog": {top: meta["verilog"].replace(str(work), ".") for top, meta in designs.items()},
        "lint": lint_results,
        "simulation": simulations,
        "synthesis": {
            "ecp5": resources(("synth", MAIN.top_name, "ecp5")),
            "xilinx": resources(("synth", MAIN.top_name, "xilinx")),
            "ice40": {"design": ICE40.to_dict()} | resources(("synth", ICE40.top_name, "ice40")),
        },
        "place_route": {
            "ecp5": {
                "device": "LFE5U-85F " + ECP5_DEVICE[1],
                "fmax_mhz": results[("fmax", MAIN.top_name, "ecp5")]["fmax_mhz"],
            },
            "ice40": {
                "device": "iCE40UP5K " + ICE40_DEVICE[1],
                "design": ICE40.top_name,
                "fmax_mhz": results[("fmax", ICE40.top_name, "ice40")]["fmax_mhz"],
            },
            "method": "core inside the serial-I/O wrapper (hardwire.boards.wrapper): every port registered",
        },
        "sweep_ecp5": points,
        "gemm_cycle_model": gemms,
        "network": network,
        "board": board,
        "tools": tool_versions(),
    }


def _network(out: Path) -> dict:
    from hardwire.hls import zoo
    from hardwire.hls.compile import CompileOptions, compile_model

    entry = zoo.build(NETWORK)
    _, _, x, y = zoo.load_digits_split()
    report = compile_model(
        entry.onnx_path,
        out,
        CompileOptions(fps=NETWORK_FPS, target="ecp5"),
        inputs=x.reshape((-1, *entry.input_shape[1:])),
        labels=y,
        name=NETWORK,
        inputs_label="images of the digits test split",
        progress=lambda m: _say("      " + m),
    )
    sim, t = report["simulation"], report["throughput"]
    return {
        "name": NETWORK,
        "report": "network/report.md",
        "accuracy": report["accuracy"],
        "rtl_vs_qonnx": sim["rtl_vs_qonnx"],
        "timing_matches_model": sim["timing_matches_model"],
        "folding": report["folding"]["folds"],
        "cycle_model": report["cycle_model"],
        "synthesis_ecp5": {k: report["synthesis"][k] for k in ("lut", "ff", "dsp", "bram")},
        "fmax_mhz": t.get("fmax_mhz"),
        "inferences_per_s_at_fmax": t.get("inferences_per_s_at_fmax"),
    }


def _board(out: Path) -> dict:
    """The smallest zoo network, fully folded, compiled (its RTL is checked by the network step's path and the
    tests) and built into an iCEBreaker bitstream behind the UART bridge."""
    from hardwire.boards.build import build_board
    from hardwire.boards.design import load_design
    from hardwire.hls import zoo
    from hardwire.hls.compile import CompileOptions, compile_model

    entry = zoo.build(BOARD_NETWORK)
    compile_model(
        entry.onnx_path,
        out / "rtl",
        CompileOptions(simulate=False, synthesize=False),
        name=BOARD_NETWORK,
        progress=lambda m: _say("      " + m),
    )
    report = build_board(
        load_design(out / "rtl"), "icebreaker", out / "icebreaker", progress=lambda m: _say("      " + m)
    )
    return (
        {"network": BOARD_NETWORK, "report": "board/icebreaker/report.md"}
        | report.to_dict()
        | {"bitstream": "board/icebreaker/" + Path(report.bitstream).name}
    )


def _markdown(r: dict) -> str:
    d = r["design"]
    lines = [
        f"# hardwire demo: {d['name']}",
        "",
        (
            f"{d['rows']}x{d['cols']} systolic array, INT{d['a_width']} x INT{d['w_width']}, "
            f"{d['dataflow'].replace('_', '-')}, accumulator {d['acc_width']} bits (K up to {d['k_max']})."
        ),
        "",
        "## Simulation (Verilator + cocotb) against torch.matmul",
        "",
    ]
    for top, sim in r["simulation"].items():
        rows = []
        for name, case in sim["cases"].items():
            rows.append(
                [
                    name,
                    " x ".join(map(str, case.get("shape", []))),
                    "yes" if case.get("exact") else "NO",
                    case.get("cycles"),
                    case.get("model_cycles") if case.get("check_cycles") else "(back-pressure)",
                ]
            )
        lines += [
            f"**{top}**: {sim['passed']} passed, {sim['failed']} failed",
            "",
            markdown_table(["case", "M x K x N", "bit-exact", "cycles", "cycle model"], rows),
            "",
        ]
    syn = r["synthesis"]
    lines += [
        "## Synthesis (yosys) and place-and-route (nextpnr)",
        "",
        markdown_table(
            ["design", "target", "LUT", "FF", "DSP", "BRAM", "LUTRAM", "Fmax MHz"],
            [
                [
                    d["name"],
                    "ecp5",
                    *[syn["ecp5"][c] for c in ("lut", "ff", "dsp", "bram", "lutram")],
                    r["place_route"]["ecp5"]["fmax_mhz"],
                ],
                [d["name"], "xilinx (xc7)", *[syn["xilinx"][c] for c in ("lut", "ff", "dsp", "bram", "lutram")], None],
                [
                    syn["ice40"]["design"]["name"],
                    "ice40 (UP5K)",
                    *[syn["ice40"][c] for c in ("lut", "ff", "dsp", "bram", "lutram")],
                    r["place_route"]["ice40"]["fmax_mhz"],
                ],
            ],
        ),
        "",
        (
            f"Fmax: {r['place_route']['method']}; ECP5 on {r['place_route']['ecp5']['device']}, iCE40 on "
            f"{r['place_route']['ice40']['device']}. Xilinx: yosys mapping only (no open place-and-route)."
        ),
        "",
        "## Size sweep on ECP5",
        "",
        "![resources and Fmax against array size](sweep.png)",
        "",
        markdown_table(
            ["size", "LUT", "FF", "DSP", "BRAM", "Fmax MHz"],
            [[p["label"], p["lut"], p["ff"], p["dsp"], p["bram"], p["fmax_mhz"]] for p in r["sweep_ecp5"]],
        ),
        "",
        "## Cycle model: tiled GEMMs on the 8x8 array",
        "",
        markdown_table(
            ["dataflow", "M x K x N", "cycles", "utilization"],
            [
                [g["dataflow"], " x ".join(map(str, g["shape"])), g["cycles"], f"{g['utilization']:.1%}"]
                for g in r["gemm_cycle_model"]
            ],
        ),
        "",
        *_network_markdown(r["network"]),
        *_board_markdown(r["board"]),
        "## Tools",
        "",
        markdown_table(["tool", "version"], [[k, v] for k, v in r["tools"].items()]),
        "",
        f"Wall time: {r.get('wall_s', 0):.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _board_markdown(b: dict) -> list[str]:
    lc = b["utilization"].get("ICESTORM_LC", {})
    return [
        f"## On a board: `hardwire build --board icebreaker` ({b['network']}, fully folded)",
        "",
        (
            f"Bitstream `{b['bitstream']}` ({b['bitstream_bytes']} bytes) for the {b['part']}: "
            f"{lc.get('used')} of {lc.get('available')} logic cells ({lc.get('percent', 0):.1f} %), achieved Fmax "
            f"{b['fmax_mhz']:.1f} MHz against the {b['clock_mhz']:g} MHz oscillator; over the {b['baud']}-baud "
            f"UART link {b['inferences_per_s_link']:.0f} inferences/s (stop-and-wait). Report: {b['report']}."
        ),
        "",
    ]


def _network_markdown(n: dict) -> list[str]:
    a, c, s = n["accuracy"], n["cycle_model"], n["synthesis_ecp5"]
    return [
        "## A quantized network: `hardwire compile zoo:mlp4`",
        "",
        (
            f"4-bit MLP 64-64-64-10 trained with Brevitas on scikit-learn's digits. On the {a['inputs']} test images "
            f"the Verilator simulation of the streaming RTL differs from qonnx execution in "
            f"{n['rtl_vs_qonnx']['mismatches']} of {n['rtl_vs_qonnx']['outputs']} outputs; handshake cycles equal "
            f"the cycle model: {n['timing_matches_model']}. Accuracy: qonnx {a['qonnx']:.4f}, RTL {a['rtl']:.4f}."
        ),
        "",
        markdown_table(
            [
                "PE x SIMD per layer",
                "LUT",
                "FF",
                "DSP",
                "BRAM",
                "Fmax MHz",
                "latency cycles",
                "II cycles",
                "inferences/s at Fmax",
            ],
            [
                [
                    " ".join(f"{f['pe']}x{f['simd']}" for f in n["folding"].values()),
                    s["lut"],
                    s["ff"],
                    s["dsp"],
                    s["bram"],
                    n["fmax_mhz"],
                    c["latency_cycles"],
                    c["initiation_interval"],
                    f"{n['inferences_per_s_at_fmax']:.0f}" if n["inferences_per_s_at_fmax"] else "-",
                ]
            ],
        ),
        "",
        f"Full report: {n['report']}.",
        "",
    ]
