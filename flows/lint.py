"""Verilator lint (`--lint-only -Wall`) with a short, documented list of waivers for Amaranth's output.

Amaranth's Verilog back end (yosys `write_verilog`) produces some Verilator warnings by construction.
Rather than turning rules off, each warning is matched against DEFAULT_WAIVERS, and a waiver applies only
inside modules that carry Amaranth's `(* generator = "Amaranth" *)` attribute and only to the statement
shapes Amaranth emits. Hand-written Verilog is linted with every rule, and so are ports, registers and
instance connections in Amaranth modules.

Evidence (Amaranth 0.5.10 with its bundled yosys 0.50, Verilator 5.048, a component with stream
ports, a struct payload, a Memory, a SyncFIFOBuffered, an FSM, an Array, a shift and a multiplication):
  WIDTHEXPAND  `assign \\$6 = $signed(y__payload) + $signed(\\$5 );`  (ADD: RHS 16 bits, expects 21)
               `assign \\$8 = count < 3'h4;`  `assign \\$1 = $signed(r_data) << shift;`
  WIDTHTRUNC   `assign flag = ! count;`  (LOGNOT of an 8-bit operand; the output is the user's port)
  PROCASSINIT  every register with an init value: `reg [19:0] y__payload = 20'h00000;` + `y__payload <= \\$9 ;`
  UNUSEDSIGNAL temporaries `$4`[4], `$6`[20], `$2`; alias wires `acc` (`assign acc = y__payload;`),
               `wr__en`, `i__payload.x`, `i__payload$12`, `r_rdy` (a submodule's port seen from the parent)
  DECLFILENAME `module \\top2.lane` — Amaranth names submodules `<top>.<name>`
The first case shows why the width waiver cannot key on names: yosys gives an operator's output the
user's name whenever that net is a named Signal, so `flag = ! count` is as generated as `\\$8 = ...`.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

from hardwire.cache import cache_root, digest
from hardwire.errors import ParameterError, ToolError
from hardwire.params import require, to_json_dict

from .tools import build_once, run_tool, tool_version

LOG = "verilator.log"
RUN_JSON = "run.json"

_IDENTIFIER = r"(\\\S+|[A-Za-z_][A-Za-z0-9_$]*)"
_MODULE = re.compile(r"^\s*module\s+" + _IDENTIFIER)
_ENDMODULE = re.compile(r"^\s*endmodule\b")
_AMARANTH_ATTRIBUTE = re.compile(r'\(\*\s*generator\s*=\s*"Amaranth"\s*\*\)')
_DECLARATION = re.compile(r"^\s*(input|output|inout|reg|wire)\b(?:\s+signed)?\s*(?:\[[^\]]*\]\s*)?" + _IDENTIFIER)
_DIAGNOSTIC = re.compile(
    r"^%(?P<severity>Warning|Error)(?:-(?P<rule>[A-Z0-9_]+))?:\s*"
    r"(?:(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:(?P<column>\d+):)?\s*)?(?P<message>.*)$"
)


def _plain(identifier: str) -> str:
    """A Verilog identifier as Verilator prints it: escaped names lose their backslash."""
    return identifier[1:] if identifier.startswith("\\") else identifier


@dataclass
class Module:
    """Where one module sits in a file and what it declares."""

    name: str
    first_line: int
    last_line: int
    amaranth: bool
    ports: set[str] = field(default_factory=set)
    regs: set[str] = field(default_factory=set)


@dataclass
class SourceFile:
    """The linted text of one file, split into modules, for the waivers to look at."""

    lines: list[str]
    modules: list[Module]

    @classmethod
    def parse(cls, text: str) -> SourceFile:
        lines = text.splitlines()
        modules: list[Module] = []
        current: Module | None = None
        since_last_module: list[str] = []
        for number, line in enumerate(lines, start=1):
            if current is None:
                match = _MODULE.match(line)
                if match:
                    amaranth = any(_AMARANTH_ATTRIBUTE.search(seen) for seen in since_last_module)
                    current = Module(_plain(match.group(1)), number, len(lines), amaranth)
                    since_last_module = []
                else:
                    since_last_module.append(line)
                continue
            if _ENDMODULE.match(line):
                current.last_line = number
                modules.append(current)
                current = None
                continue
            declaration = _DECLARATION.match(line)
            if declaration:
                kind, name = declaration.group(1), _plain(declaration.group(2))
                if kind in ("input", "output", "inout"):
                    current.ports.add(name)
                elif kind == "reg":
                    current.regs.add(name)
        if current is not None:
            modules.append(current)
        return cls(lines, modules)

    def module_at(self, line: int | None) -> Module | None:
        if line is None:
            return None
        for module in self.modules:
            if module.first_line <= line <= module.last_line:
                return module
        return None

    def line(self, line: int | None) -> str:
        if line is None or not 1 <= line <= len(self.lines):
            return ""
        return self.lines[line - 1]


@dataclass(frozen=True)
class Waiver:
    """A Verilator rule accepted in one narrow situation, with the reason it is harmless there."""

    name: str
    rules: frozenset[str]
    applies_to: str
    reason: str
    matches: Callable[[dict, SourceFile, Module], bool]


def _quoted_signal(message: str) -> str | None:
    match = re.search(r"'([^']+)'", message)
    return match.group(1) if match else None


def _is_continuous_assign(diagnostic: dict, source: SourceFile, module: Module) -> bool:
    return source.line(diagnostic["line"]).lstrip().startswith("assign ")


def _is_internal_net(diagnostic: dict, source: SourceFile, module: Module) -> bool:
    name = _quoted_signal(diagnostic["message"])
    if name is None:
        return False
    return name.startswith("$") or (name not in module.ports and name not in module.regs)


def _is_submodule_name(diagnostic: dict, source: SourceFile, module: Module) -> bool:
    return "." in module.name


def _anywhere(diagnostic: dict, source: SourceFile, module: Module) -> bool:
    return True


DEFAULT_WAIVERS: tuple[Waiver, ...] = (
    Waiver(
        "amaranth-operator-width",
        frozenset({"WIDTHEXPAND", "WIDTHTRUNC"}),
        "a continuous `assign` in an Amaranth-generated module",
        "Amaranth fixes every operator's result width by its own rules; yosys writes each operator as one "
        "`assign` and lets Verilog's implicit extension/truncation produce exactly that width. Width changes a "
        "designer writes (`.eq()` of a wider value) appear as explicit slices and do not warn.",
        _is_continuous_assign,
    ),
    Waiver(
        "amaranth-init-value",
        frozenset({"PROCASSINIT"}),
        "any register of an Amaranth-generated module",
        "Amaranth writes a signal's `init` as the declaration's initial value (the FPGA power-on value) and "
        "its reset inside the clocked process; both are intended.",
        _anywhere,
    ),
    Waiver(
        "amaranth-internal-net",
        frozenset({"UNUSEDSIGNAL"}),
        "a `$`-named temporary or an alias wire (neither port nor reg) of an Amaranth-generated module",
        "yosys keeps operator temporaries whose top bits Amaranth slices off, and every named Amaranth "
        "signal as a wire even when it was merged with another net (`assign acc = y__payload;`, struct field "
        "views, a submodule's ports seen from its parent). Unused ports and registers are still reported.",
        _is_internal_net,
    ),
    Waiver(
        "amaranth-submodule-name",
        frozenset({"DECLFILENAME"}),
        "a module of an Amaranth-generated file whose name contains '.'",
        "Amaranth names a submodule `<top>.<name>`, which no file can be named after.",
        _is_submodule_name,
    ),
)


@dataclass(frozen=True)
class LintReport:
    """Verilator's findings. clean: no finding is left once the waivers are applied.

    Each entry of `warnings`: rule, severity ("warning" or "error"), file (as given by the caller), line,
    column, message (the first line of Verilator's text), waived, waiver (the Waiver's name or None).
    """

    top: str
    clean: bool
    warnings: list[dict] = field(default_factory=list)
    tool_version: str = ""
    log_path: Path | None = None

    @property
    def unwaived(self) -> list[dict]:
        return [w for w in self.warnings if not w["waived"]]

    def to_dict(self) -> dict:
        return to_json_dict(self)


def parse_diagnostics(log_text: str) -> list[dict]:
    """Verilator's `%Warning-RULE: file:line:col: message` and `%Error...` lines as dicts."""
    diagnostics = []
    for line in log_text.splitlines():
        match = _DIAGNOSTIC.match(line)
        if not match:
            continue
        message = match.group("message").strip()
        if match.group("severity") == "Error" and match.group("file") is None and message.startswith("Exiting due to"):
            continue
        diagnostics.append(
            {
                "rule": match.group("rule") or ("ERROR" if match.group("severity") == "Error" else "WARNING"),
                "severity": match.group("severity").lower(),
                "file": match.group("file"),
                "line": int(match.group("line")) if match.group("line") else None,
                "column": int(match.group("column")) if match.group("column") else None,
                "message": message,
            }
        )
    return diagnostics


def apply_waivers(diagnostics: list[dict], sources: dict[str, SourceFile], waivers) -> list[dict]:
    """Mark each diagnostic waived (naming the waiver) when a waiver matches it; errors are never waived."""
    marked = []
    for diagnostic in diagnostics:
        waiver_name = None
        source = sources.get(diagnostic["file"] or "")
        module = source.module_at(diagnostic["line"]) if source else None
        if diagnostic["severity"] == "warning" and module is not None and module.amaranth:
            for waiver in waivers:
                if diagnostic["rule"] in waiver.rules and waiver.matches(diagnostic, source, module):
                    waiver_name = waiver.name
                    break
        marked.append({**diagnostic, "waived": waiver_name is not None, "waiver": waiver_name})
    return marked


def lint(verilog_files, top: str, *, waivers=DEFAULT_WAIVERS, timeout_s: float = 600) -> LintReport:
    """Lint `verilog_files` with `verilator --lint-only -Wall --top-module top`.

    Findings never raise: the report says whether the design is clean. ToolError means Verilator itself
    failed (crashed, or exited non-zero without reporting any problem in the design); ToolMissingError
    means it is not installed. The raw log is cached under cache_root()/lint keyed by the sources, the top
    and the Verilator version; waivers are applied afresh on every call.
    """
    require(
        isinstance(top, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", top or "") is not None,
        "top",
        top,
        "a Verilog module name",
    )
    if isinstance(verilog_files, (str, Path)):
        verilog_files = [verilog_files]
    paths = [Path(p) for p in verilog_files]
    require(len(paths) > 0, "verilog_files", verilog_files, "at least one Verilog file")
    for path in paths:
        if not path.is_file():
            raise ParameterError("verilog_files", str(path), "existing Verilog files")
    version = tool_version("verilator")
    # Copies keep their file names (DECLFILENAME compares the module name with the file name).
    source_names = [f"src/{i}/{path.name}" for i, path in enumerate(paths)]
    include_args = [f"-I{d}" for d in sorted({str(path.resolve().parent) for path in paths})]
    args = ["--lint-only", "-Wall", "-Wno-fatal", "--top-module", top, *source_names]
    key = digest("lint", version, args, *[path.read_bytes() for path in paths])

    def build(tmp: Path) -> None:
        for name, path in zip(source_names, paths):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / name)
        run_args = [*args[: -len(source_names)], *include_args, *source_names]
        exit_code = 0
        try:
            run_tool("verilator", run_args, cwd=tmp, log_path=tmp / LOG, timeout_s=timeout_s)
        except ToolError as error:
            # With -Wno-fatal a non-zero exit means errors; errors located in the design (syntax, unknown
            # module, ...) are lint findings. Anything else is Verilator failing.
            located = [
                d
                for d in parse_diagnostics((tmp / LOG).read_text(errors="replace"))
                if d["severity"] == "error" and d["file"] is not None
            ]
            if not located or "timed out" in getattr(error, "reason", ""):
                raise
            exit_code = 1
        (tmp / RUN_JSON).write_text(json.dumps({"key": key, "exit_code": exit_code}) + "\n")

    final = build_once(cache_root() / "lint" / key, lambda d: (d / RUN_JSON).is_file(), build)
    diagnostics = parse_diagnostics((final / LOG).read_text(errors="replace"))
    sources = {name: SourceFile.parse((final / name).read_text(errors="replace")) for name in source_names}
    marked = apply_waivers(diagnostics, sources, waivers)
    original = dict(zip(source_names, map(str, paths)))
    for diagnostic in marked:
        diagnostic["file"] = original.get(diagnostic["file"], diagnostic["file"])
    return LintReport(
        top=top,
        clean=all(d["waived"] for d in marked),
        warnings=marked,
        tool_version=version,
        log_path=final / LOG,
    )
