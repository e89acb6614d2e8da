"""hardwire: neural-network arithmetic to verified, synthesizable hardware with open tools only."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hardwire")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
