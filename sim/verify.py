"""Verify a registered block: generate its Verilog, run its cocotb testbench, collect a typed result.

Used by `hardwire sim NAME`, the demo and the tests, so that all three check the same way.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

from hardwire.gen import registry
from hardwire.sim.runner import SimResult, simulate

from hardwire.errors import SimulationError


@dataclasses.dataclass
class VerifyResult:
    block: str
    top: str
    params: dict
    simulator: str
    cases: dict  # case name -> what the testbench measured (exact, mismatches, cycles, ...)
    passed: int
    failed: int
    wall_s: float
    build_cached: bool
    log_path: str
    waves_path: str | None
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"ok": self.ok}

    def table(self) -> str:
        lines = [
            f"{self.top} on {self.simulator}: {self.passed} passed, {self.failed} failed "
            f"({self.wall_s:.1f} s{', cached build' if self.build_cached else ''})",
            f"{'case':<18} {'shape':>14} {'bit-exact':>10} {'cycles':>8} {'model':>8} {'util':>6}",
        ]
        for name, case in self.cases.items():
            shape = " x ".join(str(d) for d in case.get("shape", []))
            exact = "yes" if case.get("exact") else f"NO ({case.get('mismatches')})"
            lines.append(
                f"{name:<18} {shape:>14} {exact:>10} {case.get('cycles', '-'):>8} "
                f"{case.get('model_cycles', '-') if case.get('check_cycles') else '(bp)':>8} "
                f"{case.get('utilization', 0):>6.1%}"
            )
        if self.waves_path:
            lines.append(f"waves: {self.waves_path}")
        if self.failure:
            lines.append(self.failure)
        return "\n".join(lines)


def testbench_cases(name: str, params, seed: int = 1) -> list[dict]:
    """The block's default verification cases (its testbench's `default_cases`)."""
    module = importlib.import_module(registry.get(name).testbench)
    return module.default_cases(params, seed)


def verify_block(
    name: str,
    params,
    *,
    cases: list[dict] | None = None,
    simulator: str = "verilator",
    waves: bool = False,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
) -> VerifyResult:
    """Simulate block `name` with `params` on `cases` (default: the testbench's own). A failing check
    gives a result with failed > 0 and the failure text; a broken tool raises."""
    block = registry.get(name)
    top, verilog, _ = registry.to_verilog(block, params)
    if cases is None:
        cases = testbench_cases(name, params, seed)
    if progress:
        progress(
            f"simulating {top} with {simulator}: {len(cases)} cases "
            "(the first build of a configuration compiles the model, ~10-60 s)"
        )
    config = {"params": params.to_dict(), "cases": cases, "seed": seed}
    failure = None
    try:
        models = block.sim_models(params) if block.sim_models is not None else []
        sources = [("design.v", verilog), *models] if models else verilog
        # a primitive's unused ports (MULT18X18D's C) stay unconnected on purpose
        build_args = ["-Wno-PINMISSING"] if models and simulator == "verilator" else []
        result: SimResult = simulate(
            sources,
            top,
            block.testbench,
            simulator=simulator,
            config=config,
            build_args=build_args,
            waves=waves,
            seed=seed,
        )
        passed, failed, results = result.passed, result.failed, result.results
        wall, cached, log, wave = result.wall_s, result.build_cached, result.log_path, result.waves_path
    except SimulationError as error:
        failure = str(error)
        result = getattr(error, "result", None)
        if result is None:
            raise
        passed, failed, results = result.passed, max(result.failed, 1), result.results
        wall, cached, log, wave = result.wall_s, result.build_cached, result.log_path, result.waves_path
    return VerifyResult(
        block=name,
        top=top,
        params=params.to_dict(),
        simulator=simulator,
        cases={c["name"]: results.get(c["name"], {}) for c in cases},
        passed=passed,
        failed=failed,
        wall_s=wall,
        build_cached=cached,
        log_path=str(log),
        waves_path=str(wave) if wave else None,
        failure=failure,
    )
