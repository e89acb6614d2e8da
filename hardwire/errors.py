"""The errors hardwire raises on purpose: each carries what a user needs to act on it."""


class HardwireError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero, never with a traceback."""


class ParameterError(HardwireError, ValueError):
    """A parameter outside its allowed range. The message names the parameter, its value and the range."""

    def __init__(self, name: str, value, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name}={value!r} is out of range: allowed {allowed}")

    def __reduce__(self):  # picklable, so it crosses process pools intact
        return (type(self), (self.name, self.value, self.allowed))


class ToolMissingError(HardwireError):
    """An external tool (yosys, nextpnr, verilator, ...) is not installed; the message says how to get it."""


class ToolError(HardwireError):
    """An external tool ran and failed (or timed out). Carries the command, log path and the log's last lines."""

    def __init__(self, tool: str, cmd: list[str], log_path, tail: str, reason: str = "failed"):
        self.tool, self.cmd, self.log_path, self.tail, self.reason = tool, cmd, log_path, tail, reason
        super().__init__(
            f"{tool} {reason} (log: {log_path})\n  command: {' '.join(map(str, cmd))}\n"
            + "\n".join("  | " + line for line in tail.splitlines())
        )

    def __reduce__(self):  # picklable, so it crosses process pools intact
        return (type(self), (self.tool, self.cmd, self.log_path, self.tail, self.reason))


class SimulationError(HardwireError):
    """A simulation ran but one or more testbench checks failed."""


class ModelError(HardwireError):
    """A network the compiler cannot take: a corrupt file, an unsupported op, a missing quantizer. The message
    names the ONNX node, its op type and what is supported instead."""


class InternalError(HardwireError):
    """A check inside hardwire failed on a user's valid input (a generator's parameter check, an unexpected
    exception): hardwire's bug, not the user's. The message names the user's input and says so, in one line."""


class HardwireWarning(UserWarning):
    """Base class of hardwire's warnings: the CLI prints them as one line."""


class PrecisionWarning(HardwireWarning):
    """A configuration the user chose is accepted but less accurate than hardwire's derived one; the message
    states the error bound it does meet. The CLI prints it as one line."""
