"""Logic synthesis with yosys: Verilog in, a resource count (LUT/FF/DSP/BRAM) and a JSON netlist out.

Counts come from yosys' machine-readable `stat -json` of the flattened top (every synth_* script here
flattens), never from the log's prose. Each run works in its own build directory keyed by a hash of the
sources, the top, the target and the yosys version; a repeated call returns the saved report at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

from hardwire.cache import cache_root, digest
from hardwire.errors import ParameterError, ToolError
from hardwire.params import require, to_json_dict

from .memfiles import referenced_files
from .tools import build_once, run_tool, tool_version

# Bump when the scripts or the counting change in a way that makes old cache entries wrong.
SCRIPT_REVISION = 1

# Target -> (cell-library family, the yosys commands after reading the sources).
# Xilinx runs out of context (-noiopad): a block's resource count should not include I/O buffers, and
# hardwire has no Xilinx board flow that would need them.
TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    # iCE40 UltraPlus (UP5K/U4K): -dsp maps multipliers onto its SB_MAC16 blocks; the HX/LP parts have none.
    "ice40": ("ice40", ("synth_ice40 -top {top} -dsp",)),
    "ecp5": ("ecp5", ("synth_ecp5 -top {top}",)),
    "xilinx": ("xilinx", ("synth_xilinx -top {top} -family xc7 -flatten -noiopad",)),
    "xilinx-us": ("xilinx", ("synth_xilinx -top {top} -family xcu -flatten -noiopad",)),
    "xilinx-usp": ("xilinx", ("synth_xilinx -top {top} -family xcup -flatten -noiopad",)),
    # Technology-independent: a netlist of simple two-input gates and muxes plus yosys' internal flip-flops.
    "generic": ("generic", ("synth -top {top} -flatten", "abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX", "opt_clean")),
}

# yosys 0.70 (yowasp) can fail an assertion in abc9's reintegration on some netlists (seen on a serial-I/O
# wrapped streaming network: `GetSize(conn.first) == GetSize(conn.second)` in rtlil.cc; the message reaches
# yosys' own -l log but not always its stdout, which then ends inside the ABC9 step). Mapping the flip-flops
# together with the logic (`abc9 -dff`) avoids it; used only when the default script dies in ABC9.
FALLBACKS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ecp5": (
        "ABC9",
        ("synth_ecp5 -top {top} -dff",),
        "yosys' abc9 failed an assertion on this netlist; mapped with synth_ecp5 -dff instead",
    ),
    # abc9 crashes inside ABC on some netlists (every sparse DSP chain, even one stage; yosys 0.70)
    **{
        target: (
            "ABC9",
            (f"synth_xilinx -top {{top}} -family {family} -flatten -noiopad -dff",),
            "yosys' abc9 crashed on this netlist; mapped with synth_xilinx -dff instead",
        )
        for target, family in (("xilinx", "xc7"), ("xilinx-us", "xcu"), ("xilinx-usp", "xcup"))
    },
}

STAT_JSON = "stat.json"
NETLIST_JSON = "netlist.json"
REPORT_JSON = "report.json"
LOG = "yosys.log"
SCRIPT = "synth.ys"

_TOP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


@dataclass(frozen=True)
class SynthReport:
    """What yosys made of a design on one target.

    lut: logic LUTs (iCE40: SB_LUT4 = logic cells; ECP5: LUT4 plus two per CCU2C carry cell, which
    occupies two LUT4s of a slice; Xilinx: LUT1..LUT6; generic: 0, the netlist is gates, see `cells`).
    ff: flip-flop cells of every kind summed (registers absorbed into DSP or RAM blocks are not included).
    dsp: multiplier blocks (SB_MAC16; MULT18X18D/MULT9X9D/ALU54B/ALU24B; DSP48E1/DSP48E2).
    bram: block RAM primitives (SB_RAM40_4K* and SB_SPRAM256KA; DP16KD/PDPW16KD; RAMB18*/RAMB36*/URAM288).
    lutram: distributed RAM and shift-register primitives built from LUTs (TRELLIS_DPR16X4; RAM32M, RAM64X1D,
    SRL16E, SRLC32E, ...).
    cells: every cell type of the flattened top with its count, as yosys reported it.
    """

    target: str
    top: str
    lut: int
    ff: int
    dsp: int
    bram: int
    lutram: int
    cells: dict[str, int] = field(default_factory=dict)
    tool_version: str = ""
    log_path: Path | None = None
    netlist_json: Path | None = None
    note: str = ""  # set when a fallback script was needed (see FALLBACKS)

    def to_dict(self) -> dict:
        return to_json_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SynthReport:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("log_path", "netlist_json"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)


def _count(cells: dict[str, int], predicate) -> int:
    return sum(n for cell_type, n in cells.items() if predicate(cell_type))


def _is_xilinx_lut(cell_type: str) -> bool:
    return re.fullmatch(r"LUT[1-6]", cell_type) is not None


def _is_xilinx_bram(cell_type: str) -> bool:
    return cell_type.startswith(("RAMB", "URAM"))


def _is_generic_ff(cell_type: str) -> bool:
    # yosys' internal fine-grained flip-flops: $_DFF_P_, $_DFFE_PP_, $_SDFF_PP0_, $_SDFFE_PP0P_, $_DFFSR_PPP_, ...
    return cell_type.startswith(("$_DFF", "$_SDFF", "$_ALDFF", "$_FF_"))


def classify_cells(family: str, cells: dict[str, int]) -> dict[str, int]:
    """LUT/FF/DSP/BRAM/LUTRAM totals of one cell-library family from a cell-type -> count table."""
    if family == "ice40":
        return {
            "lut": cells.get("SB_LUT4", 0),
            "ff": _count(cells, lambda t: t.startswith("SB_DFF")),
            "dsp": cells.get("SB_MAC16", 0),
            "bram": _count(cells, lambda t: t.startswith("SB_RAM40_4K") or t == "SB_SPRAM256KA"),
            "lutram": 0,
        }
    if family == "ecp5":
        return {
            "lut": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
            "ff": cells.get("TRELLIS_FF", 0),
            "dsp": _count(cells, lambda t: t in ("MULT18X18D", "MULT9X9D", "ALU54B", "ALU24B")),
            "bram": _count(cells, lambda t: t in ("DP16KD", "PDPW16KD")),
            "lutram": cells.get("TRELLIS_DPR16X4", 0),
        }
    if family == "xilinx":
        return {
            "lut": _count(cells, _is_xilinx_lut),
            "ff": _count(cells, lambda t: t in ("FDRE", "FDSE", "FDCE", "FDPE")),
            "dsp": _count(cells, lambda t: t.startswith("DSP48")),
            "bram": _count(cells, _is_xilinx_bram),
            "lutram": _count(cells, lambda t: (t.startswith("RAM") and not _is_xilinx_bram(t)) or t.startswith("SRL")),
        }
    if family == "generic":
        return {
            "lut": cells.get("$lut", 0),
            "ff": _count(cells, _is_generic_ff),
            "dsp": 0,
            "bram": _count(cells, lambda t: t.startswith("$mem")),
            "lutram": 0,
        }
    raise ValueError(f"no cell classes for family {family!r}")


def read_stat_cells(stat_json: Path) -> dict[str, int]:
    """Cell-type counts of the whole (flattened) design from a `stat -json` file."""
    stat = json.loads(Path(stat_json).read_text())
    design = stat.get("design")
    if design is None:  # older yosys: only per-module sections; a flattened design has one module
        design = next(iter(stat["modules"].values()))
    return {cell_type: int(n) for cell_type, n in design.get("num_cells_by_type", {}).items()}


def _check_inputs(verilog_files, top: str, target: str) -> list[Path]:
    if target not in TARGETS:
        raise ParameterError("target", target, "one of " + ", ".join(sorted(TARGETS)))
    return check_sources(verilog_files, top)


def check_sources(verilog_files, top: str) -> list[Path]:
    """The Verilog files as paths, each existing, and `top` a module name: what every synthesis flow checks."""
    require(isinstance(top, str) and _TOP_NAME.fullmatch(top) is not None, "top", top, "a Verilog module name")
    if isinstance(verilog_files, (str, Path)):
        verilog_files = [verilog_files]
    paths = [Path(p) for p in verilog_files]
    require(len(paths) > 0, "verilog_files", verilog_files, "at least one Verilog file")
    for path in paths:
        require(path.is_file(), "verilog_files", str(path), "existing Verilog files")
    return paths


def _script(
    source_names: list[str], include_dirs: list[Path], top: str, target: str, commands: tuple[str, ...] | None = None
) -> str:
    includes = "".join(f' -I"{d}"' for d in include_dirs)
    lines = [f'read_verilog -sv{includes} "{name}"' for name in source_names]
    lines += [command.format(top=top) for command in (commands or TARGETS[target][1])]
    lines += [f"tee -q -o {STAT_JSON} stat -json", f"write_json {NETLIST_JSON}"]
    return "\n".join(lines) + "\n"


def synth(
    verilog_files, top: str, target: str, *, build_dir=None, timeout_s: float = 1800, watch_log=None
) -> SynthReport:
    """Synthesize `verilog_files` with top module `top` for `target` (see TARGETS) and count resources.

    The build directory (sources copied in, yosys script, log, stat.json, netlist.json, report.json)
    is `cache_root()/synth/<key>` unless `build_dir` is given. Files pulled in by `include are read
    from the sources' own folders and are not part of the cache key. `watch_log(path)`, when given, is told
    where yosys' log is before yosys starts (to show progress; see hardwire.progress.yosys_step).
    """
    paths = _check_inputs(verilog_files, top, target)
    version = tool_version("yosys")
    source_names, data, key = _inputs_and_key(paths, top, target, version)
    final = Path(build_dir) if build_dir is not None else cache_root() / "synth" / key

    def build(tmp: Path) -> None:
        for name, path in [*zip(source_names, paths), *data]:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / name)
        include_dirs = sorted({path.resolve().parent for path in paths})
        (tmp / SCRIPT).write_text(_script(source_names, include_dirs, top, target))
        if watch_log is not None:
            watch_log(tmp / LOG)
        note = run_yosys_with_fallback(
            tmp, SCRIPT, target, lambda commands: _script(source_names, include_dirs, top, target, commands), timeout_s
        )
        cells = read_stat_cells(tmp / STAT_JSON)
        counts = classify_cells(TARGETS[target][0], cells)
        report = SynthReport(
            target=target,
            top=top,
            **counts,
            cells=dict(sorted(cells.items())),
            tool_version=version,
            log_path=Path(LOG),
            netlist_json=Path(NETLIST_JSON),
            note=note,
        )
        (tmp / REPORT_JSON).write_text(json.dumps({"key": key, **report.to_dict()}, indent=2) + "\n")

    final = build_once(final, lambda d: _saved_key(d) == key, build, replace=build_dir is not None)
    return _load_report(final)


def _inputs_and_key(paths: list[Path], top: str, target: str, version: str):
    """(the sources' names in the build dir, [(name, path)] of the memory files they read, the cache key).

    Each source is copied to src/<i>/<its name>: names stay as they were and two files of the same name from
    different folders cannot collide. The memory files a source reads ($readmemh, see flows.memfiles) go
    beside its copy, where yosys looks for them, and are part of the key."""
    source_names = [f"src/{i}/{path.name}" for i, path in enumerate(paths)]
    data = [
        (f"src/{i}/{data_path.relative_to(path.parent).as_posix()}", data_path)
        for i, path in enumerate(paths)
        for data_path in referenced_files(path)
    ]
    key = digest(
        "synth",
        SCRIPT_REVISION,
        version,
        top,
        target,
        _script(source_names, [], top, target),
        *[part for name, path in [*zip(source_names, paths), *data] for part in (name, path.read_bytes())],
    )
    return source_names, data, key


def is_cached(verilog_files, top: str, target: str) -> bool:
    """Whether `synth(verilog_files, top, target)` would return a saved result without running yosys."""
    paths = _check_inputs(verilog_files, top, target)
    *_, key = _inputs_and_key(paths, top, target, tool_version("yosys"))
    return _saved_key(cache_root() / "synth" / key) == key


def run_yosys_with_fallback(cwd: Path, script: str, target: str, fallback_script, timeout_s: float) -> str:
    """Run yosys on `script` in `cwd` (log: yosys.log). When the run dies the way FALLBACKS lists for `target`,
    keep its log as yosys.default-script.log, write `fallback_script(commands)` over the script and run again.
    Returns the fallback's note, or '' when the first run passed."""
    log = cwd / LOG
    try:
        run_tool("yosys", ["-s", script], cwd=cwd, log_path=log, timeout_s=timeout_s)
        return ""
    except ToolError:
        fallback = FALLBACKS.get(target)
        if fallback is None or fallback[0] not in "".join(
            log.read_text(errors="replace").splitlines(keepends=True)[-20:]
        ):
            raise
    _, commands, note = fallback
    os.replace(log, cwd / "yosys.default-script.log")
    (cwd / script).write_text(fallback_script(commands))
    run_tool("yosys", ["-s", script], cwd=cwd, log_path=log, timeout_s=timeout_s)
    return note


def _saved_key(build_dir: Path) -> str | None:
    try:
        return json.loads((build_dir / REPORT_JSON).read_text()).get("key")
    except (OSError, ValueError):
        return None


def _load_report(build_dir: Path) -> SynthReport:
    """The saved report with its paths made absolute (they are stored relative to the build dir)."""
    data = json.loads((build_dir / REPORT_JSON).read_text())
    report = SynthReport.from_dict(data)
    return SynthReport.from_dict(
        {**report.to_dict(), "log_path": build_dir / LOG, "netlist_json": build_dir / NETLIST_JSON}
    )


def cascaded_dsp_count(netlist_json: Path) -> int:
    """DSP48 cells whose PCIN is driven by a net (another DSP's PCOUT: a cascaded adder chain), not tied to a
    constant; read from the netlist yosys wrote."""
    modules = json.loads(Path(netlist_json).read_text())["modules"]
    return sum(
        any(isinstance(bit, int) for bit in cell["connections"].get("PCIN", []))
        for module in modules.values()
        for cell in module.get("cells", {}).values()
        if cell["type"].startswith("DSP48")
    )


# The registers of a DSP primitive a netlist may enable: parameter -> register name (ECP5: clocked unless
# "NONE"; DSP48: a stage count of at least 1).
_ECP5_DSP_REGISTERS = {
    "REG_INPUTA_CLK": "INPUTA",
    "REG_INPUTB_CLK": "INPUTB",
    "REG_INPUTC_CLK": "INPUTC",
    "REG_PIPELINE_CLK": "PIPELINE",
    "REG_OUTPUT_CLK": "OUTPUT",
}
_DSP48_REGISTERS = {"AREG": "A", "BREG": "B", "CREG": "C", "DREG": "D", "ADREG": "AD", "MREG": "M", "PREG": "P"}


def dsp_registers(netlist_json: Path) -> dict[str, frozenset[str]]:
    """For every MULT18X18D and DSP48E1/E2 cell of the netlist yosys wrote: the names of its enabled internal
    registers (MULT18X18D: INPUTA/INPUTB/INPUTC/PIPELINE/OUTPUT; DSP48: A/B/C/D/AD/M/P)."""
    modules = json.loads(Path(netlist_json).read_text())["modules"]
    out = {}
    for module in modules.values():
        for name, cell in module.get("cells", {}).items():
            parameters = cell.get("parameters", {})
            if cell["type"] == "MULT18X18D":
                # yosys writes a string parameter that looks like a binary number with a trailing space
                out[name] = frozenset(
                    reg
                    for param, reg in _ECP5_DSP_REGISTERS.items()
                    if str(parameters.get(param, "NONE")).strip() != "NONE"
                )
            elif cell["type"] in ("DSP48E1", "DSP48E2"):
                out[name] = frozenset(
                    reg
                    for param, reg in _DSP48_REGISTERS.items()
                    if int(str(parameters.get(param, "0")).strip() or "0", 2) > 0
                )
    return out
