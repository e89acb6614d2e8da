"""hardwire: neural-network arithmetic to verified, synthesizable hardware with open tools only.

The Python API (hardwire.api) is re-exported here and imported on first use, so `import hardwire` stays fast:
`hardwire.generate`, `simulate`, `synth`, `compile`, `estimate`, `build`, `explore`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hardwire")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

_API = (
    "generate",
    "simulate",
    "synth",
    "compile",
    "estimate",
    "build",
    "explore",
    "GenerateResult",
    "SimulateResult",
    "SynthResult",
    "CompileResult",
    "EstimateResult",
    "BuildResult",
    "ExploreResult",
)
_ERRORS = ("HardwireError", "ParameterError", "ModelError", "ToolError", "ToolMissingError", "SimulationError")
__all__ = ["__version__", *_API, *_ERRORS]


def __getattr__(name: str):
    if name in _API:
        from hardwire import api

        return getattr(api, name)
    if name in _ERRORS:
        from hardwire import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'hardwire' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
