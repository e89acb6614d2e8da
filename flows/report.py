"""Reports: resource tables for people, report.json for machines, PNG plots where a picture helps."""

from __future__ import annotations

import os
from pathlib import Path

from hardwire.flows.synth import SynthReport, synth
from hardwire.flows.tools import tool_version

from hardwire import __version__
from hardwire.cache import write_json_atomic

RESOURCE_COLUMNS = ("lut", "ff", "dsp", "bram", "lutram")


def tool_versions() -> dict[str, str]:
    versions = {"hardwire": __version__}
    for tool in ("yosys", "nextpnr-ecp5", "nextpnr-ice40", "verilator"):
        try:
            versions[tool] = tool_version(tool)
        except Exception as error:  # a report must still be written when one tool is absent
            versions[tool] = f"unavailable: {error}"
    return versions


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return "-" if value is None else str(value)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers: list[str], rows: list[list]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    out = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def synth_report(
    verilog_files, top: str, target: str, *, pnr: bool = False, device=None, package=None, out_dir: Path = Path(".")
) -> tuple[dict, str]:
    """Synthesize (and optionally place and route), write report.json; (its contents, a table for people)."""
    report: SynthReport = synth(verilog_files, top, target)
    row = [target, top] + [getattr(report, c) for c in RESOURCE_COLUMNS]
    headers = ["target", "top", "LUT", "FF", "DSP", "BRAM", "LUTRAM"]
    data = {"top": top, "target": target, "synth": report.to_dict(), "tools": tool_versions()}
    if pnr:
        from hardwire.flows.fmax import wrapped_fmax

        placed = wrapped_fmax(verilog_files, top, target, device=device, package=package)
        headers += ["device", "Fmax MHz"]
        row += [f"{placed.device}/{placed.package}", placed.fmax_mhz]
        data["pnr"] = placed.to_dict()
        data["pnr"]["method"] = "core inside hardwire.boards.wrapper serial-I/O wrapper"
    write_json_atomic(Path(out_dir) / "report.json", data)
    return data, text_table(headers, [row]) + f"\nwrote {Path(out_dir) / 'report.json'} (yosys log: {report.log_path})"


def synth_command(
    verilog_files, top: str, target: str, *, pnr: bool = False, device=None, package=None, out_dir: Path = Path(".")
) -> str:
    """`hardwire synth`: synthesize (and optionally place and route), write report.json, return a table."""
    return synth_report(verilog_files, top, target, pnr=pnr, device=device, package=package, out_dir=out_dir)[1]


def plot_sweep(points: list[dict], path: Path, title: str) -> None:
    """Resources per array size (bars) and Fmax (line) from `points` with keys pes, label, lut, ff, dsp, fmax_mhz."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [p["label"] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = range(len(points))
    width = 0.27
    for i, key in enumerate(("lut", "ff", "dsp")):
        left.bar([v + (i - 1) * width for v in x], [p[key] for p in points], width, label=key.upper())
    left.set_yscale("log")
    left.set_xticks(list(x), labels)
    left.set_xlabel("array size")
    left.set_ylabel("cells (log scale)")
    left.set_title("resources (yosys)")
    left.legend()
    right.plot(labels, [p.get("fmax_mhz") or 0 for p in points], marker="o")
    right.set_ylim(bottom=0)
    right.set_xlabel("array size")
    right.set_ylabel("achieved Fmax (MHz)")
    right.set_title("Fmax (nextpnr)")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
