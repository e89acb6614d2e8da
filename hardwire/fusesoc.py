"""FuseSoC core descriptions (CAPI2 `.core` files) for generated and compiled Verilog.

A `.core` file beside the Verilog lets a FuseSoC/edalize project take a hardwire block as a dependency
(`depend: [hardwire:gen:<top>]`) or build it on its own (`fusesoc run --target lint ...`). The file is YAML;
every string is written as a JSON string, which YAML reads as a double-quoted scalar, so no YAML library
is needed and names with odd characters stay safe.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from hardwire.cache import write_text_atomic

VENDOR = "hardwire"
# flows/lint.py: the Verilator rules Amaranth's Verilog trips by construction
AMARANTH_RULES = ("WIDTHEXPAND", "WIDTHTRUNC", "PROCASSINIT", "UNUSEDSIGNAL", "DECLFILENAME")


def core_version() -> str:
    """hardwire's release as a FuseSoC version: numbers and dots only (a source tree's local tag dropped)."""
    from hardwire import __version__

    match = re.match(r"\d+(\.\d+)*", __version__)
    return match.group(0) if match else "0.0.0"


def core_text(
    top: str, verilog_files: list[str], *, library: str = "gen", description: str = "", data_files: list[str] = ()
) -> str:
    """The CAPI2 text: one fileset with the Verilog, a default target with `top` as its toplevel and a lint
    target for Verilator's --lint-only -Wall, less the rules Amaranth's back end trips by construction
    (hardwire.flows.lint waives those per statement; a FuseSoC flow can only turn rules off)."""
    vlnv = f"{VENDOR}:{library}:{top}:{core_version()}"
    q = json.dumps
    lines = ["CAPI=2:", "", f"name: {q(vlnv)}"]
    if description:
        lines.append(f"description: {q(description)}")
    lines += ["", "filesets:", "  rtl:", "    files:"]
    lines += [f"      - {q(name)}" for name in verilog_files]
    lines += ["    file_type: verilogSource", ""]
    if data_files:
        # memory images the Verilog reads with $readmemh, copied beside it into the tool's build folder
        lines += ["  memories:", "    files:"]
        lines += [f"      - {q(name)}: {{copyto: {q(name)}}}" for name in data_files]
        lines += ["    file_type: user", ""]
    lines += [
        "targets:",
        "  default: &default",
        f"    filesets: [rtl{', memories' if data_files else ''}]",
        f"    toplevel: {q(top)}",
        "  lint:",
        "    <<: *default",
        "    default_tool: verilator",
        "    tools:",
        "      verilator:",
        "        mode: lint-only",
        "        verilator_options: " + q(["-Wall", *(f"-Wno-{rule}" for rule in AMARANTH_RULES)]),
        "",
    ]
    return "\n".join(lines)


def write_core(
    directory: Path,
    top: str,
    verilog_files: list[str],
    *,
    library: str = "gen",
    description: str = "",
    data_files: list[str] = (),
) -> Path:
    """Write `<top>.core` into `directory` (atomically), naming the Verilog files relative to it."""
    path = Path(directory) / f"{top}.core"
    write_text_atomic(
        path, core_text(top, verilog_files, library=library, description=description, data_files=data_files)
    )
    return path
