"""Place and route with nextpnr (iCE40, ECP5): a synthesized netlist in, achieved Fmax and utilization out.

Both numbers come from nextpnr's machine-readable `--report` JSON. The requested frequency only steers the
timing-driven placer; the run never fails on timing (`--timing-allow-fail`), because what we want is the
achieved Fmax. Unconstrained I/O is allowed, so every top-level port becomes a pin somewhere on the package.
Runs are cached like synthesis: keyed by the netlist, device, package, frequency, seed and nextpnr version.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from hardwire.cache import cache_root, digest
from hardwire.errors import ParameterError, ToolError
from hardwire.params import to_json_dict

from .synth import SynthReport
from .tools import build_once, run_tool, tool_version


@dataclass(frozen=True)
class Family:
    """One nextpnr architecture: its devices (name -> command-line flag), default package per device, and so on."""

    tool: str
    devices: dict[str, str]
    default_device: str
    default_packages: dict[str, str]
    default_freq_mhz: float
    allow_unconstrained_flag: str
    # ECP5: on an 8x8 array on the 85F, router1 ran > 20 min without converging, router2 took 60-75 s.
    # iCE40: router2 never finished a 1x1 INT4 array on the UP5K (killed after 20 min); router1 is used.
    router: str = "router1"
    # package -> a pad wired to the global clock network (ULX3S's 25 MHz input on CABGA381), for the retry below
    clock_sites: dict[str, str] | None = None


_ECP5_DEVICES = ("25k", "45k", "85k", "um-25k", "um-45k", "um-85k", "um5g-25k", "um5g-45k", "um5g-85k")

FAMILIES: dict[str, Family] = {
    "ice40": Family(
        tool="nextpnr-ice40",
        devices={d: f"--{d}" for d in ("up5k", "u4k", "lp384", "lp1k", "lp4k", "lp8k", "hx1k", "hx4k", "hx8k")},
        default_device="up5k",
        default_packages={
            "up5k": "sg48",
            "u4k": "sg48",
            "lp384": "qn32",
            "lp1k": "cm81",
            "lp4k": "cm81",
            "lp8k": "cm81",
            "hx1k": "tq144",
            "hx4k": "tq144",
            "hx8k": "ct256",
        },
        default_freq_mhz=12.0,
        allow_unconstrained_flag="--pcf-allow-unconstrained",
    ),
    "ecp5": Family(
        tool="nextpnr-ecp5",
        devices={d: f"--{d}" for d in _ECP5_DEVICES},
        default_device="85k",
        default_packages=dict.fromkeys(_ECP5_DEVICES, "CABGA381"),  # every ECP5 size comes in CABGA381
        default_freq_mhz=50.0,
        allow_unconstrained_flag="--lpf-allow-unconstrained",
        router="router2",
        clock_sites={"CABGA381": "G2"},
    ),
}

NEXTPNR_REPORT = "report.json"
LOG = "nextpnr.log"
RUN_JSON = "run.json"

# nextpnr's words for "the design needs more of something than the device has".
_DOES_NOT_FIT = re.compile(
    r"no BELs remaining|Unable to find a placement location|Unable to place cell|device only has"
)
# With unconstrained I/O nextpnr may put the clock input on a pad with no route to a global buffer (seen on the
# 1024-wide MLP on the 85F); the run is then repeated once with the clock on the package's clock pad.
_CLOCK_UNROUTABLE = re.compile(r"Failed to route arc \S+ of net '\$?(?:glbnet\$)?(?P<net>[^'$]+)")


@dataclass(frozen=True)
class PnrReport:
    """Achieved timing and utilization of one placed-and-routed design.

    fmax_mhz: achieved Fmax of the clock whose net name contains the port `clock_port` (nextpnr decorates
    clock nets, e.g. `$glbnet$clk$TRELLIS_IO_IN` or `clk$SB_IO_IN_$glb_clk`), else the slowest clock;
    None when the design has no clocked logic (see `note`). clocks: every clock's achieved and requested MHz.
    utilization: nextpnr's table, resource type -> {"used": n, "available": n}.
    """

    target: str
    device: str
    package: str
    fmax_mhz: float | None
    clocks: dict[str, dict[str, float]] = field(default_factory=dict)
    utilization: dict[str, dict[str, int]] = field(default_factory=dict)
    freq_mhz: float = 0.0
    seed: int = 1
    note: str = ""
    tool_version: str = ""
    log_path: Path | None = None
    report_json: Path | None = None

    def to_dict(self) -> dict:
        return to_json_dict(self)


def _clock_matches(net_name: str, clock_port: str) -> bool:
    return net_name == clock_port or clock_port in net_name.split("$")


def fmax_of(report: dict, clock_port: str) -> tuple[float | None, dict[str, dict[str, float]], str]:
    """(Fmax in MHz, per-clock table, note) from a parsed nextpnr report.json."""
    clocks = {
        name: {"achieved_mhz": float(entry["achieved"]), "constraint_mhz": float(entry["constraint"])}
        for name, entry in report.get("fmax", {}).items()
    }
    if not clocks:
        return None, clocks, "no clock: the design has no clocked logic, so there is no Fmax to report"
    matching = [name for name in clocks if _clock_matches(name, clock_port)]
    if matching:
        return min(clocks[name]["achieved_mhz"] for name in matching), clocks, ""
    slowest = min(clocks, key=lambda name: clocks[name]["achieved_mhz"])
    note = f"no clock net matches port {clock_port!r}; fmax_mhz is the slowest clock, {slowest!r}"
    return clocks[slowest]["achieved_mhz"], clocks, note


def _resolve(synth_report_or_netlist_json, target: str) -> Path:
    if isinstance(synth_report_or_netlist_json, SynthReport):
        report = synth_report_or_netlist_json
        if report.target != target:
            raise ParameterError("target", target, f"{report.target!r}, the target the netlist was synthesized for")
        netlist = report.netlist_json
    else:
        netlist = synth_report_or_netlist_json
    if netlist is None or not Path(netlist).is_file():
        raise ParameterError("netlist_json", str(netlist), "an existing yosys JSON netlist")
    return Path(netlist)


def place_route(
    synth_report_or_netlist_json,
    target: str,
    *,
    device: str | None = None,
    package: str | None = None,
    clock_port: str = "clk",
    freq_mhz: float | None = None,
    seed: int = 1,
    timeout_s: float = 1800,
) -> PnrReport:
    """Place and route a netlist (a SynthReport of the same target, or a yosys JSON file) with nextpnr.

    target: "ice40" (default device up5k, package sg48) or "ecp5" (default 85k, CABGA381; also 25k, 45k
    and the um-/um5g- parts). Raises ToolError with nextpnr's message when the design does not fit.
    """
    if target not in FAMILIES:
        raise ParameterError("target", target, "one of " + ", ".join(sorted(FAMILIES)))
    family = FAMILIES[target]
    device = family.default_device if device is None else device
    if device not in family.devices:
        raise ParameterError("device", device, f"one of {', '.join(family.devices)} for {target}")
    if package is None:
        package = family.default_packages[device]
    freq_mhz = family.default_freq_mhz if freq_mhz is None else float(freq_mhz)
    if not freq_mhz > 0:
        raise ParameterError("freq_mhz", freq_mhz, "a frequency above 0 MHz")
    netlist = _resolve(synth_report_or_netlist_json, target)
    version = tool_version(family.tool)
    args = [
        family.devices[device],
        "--package",
        package,
        "--json",
        "netlist.json",
        "--report",
        NEXTPNR_REPORT,
        "--freq",
        f"{freq_mhz:g}",
        "--seed",
        str(int(seed)),
        "--timing-allow-fail",
        family.allow_unconstrained_flag,
        "--router",
        family.router,
    ]
    key = digest("pnr", version, target, args, netlist.read_bytes())
    final = cache_root() / "pnr" / key

    def build(tmp: Path) -> None:
        (tmp / "netlist.json").write_bytes(netlist.read_bytes())
        try:
            try:
                run_tool(family.tool, args, cwd=tmp, log_path=tmp / LOG, timeout_s=timeout_s)
            except ToolError as error:
                unroutable = _CLOCK_UNROUTABLE.search(getattr(error, "reason", ""))
                site = (family.clock_sites or {}).get(package)
                if not (unroutable and unroutable["net"] == clock_port and site):
                    raise
                (tmp / "clock.lpf").write_text(f'LOCATE COMP "{clock_port}" SITE "{site}";\n')
                run_tool(family.tool, [*args, "--lpf", "clock.lpf"], cwd=tmp, log_path=tmp / LOG, timeout_s=timeout_s)
        except ToolError as error:
            reason = getattr(error, "reason", "")
            if _DOES_NOT_FIT.search(reason):
                fit_reason = f"could not fit the design on {target} {device}/{package}: {reason}"
                fit_error = ToolError(error.tool, error.cmd, error.log_path, error.tail, fit_reason)
                fit_error.reason = fit_reason
                raise fit_error from None
            raise
        (tmp / RUN_JSON).write_text(json.dumps({"key": key, "cmd": args}, indent=2) + "\n")

    final = build_once(final, lambda d: (d / RUN_JSON).is_file(), build)
    nextpnr_report = json.loads((final / NEXTPNR_REPORT).read_text())
    fmax_mhz, clocks, note = fmax_of(nextpnr_report, clock_port)
    return PnrReport(
        target=target,
        device=device,
        package=package,
        fmax_mhz=fmax_mhz,
        clocks=clocks,
        utilization=nextpnr_report.get("utilization", {}),
        freq_mhz=freq_mhz,
        seed=int(seed),
        note=note,
        tool_version=version,
        log_path=final / LOG,
        report_json=final / NEXTPNR_REPORT,
    )
