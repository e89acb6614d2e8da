"""Fixtures shared by test modules."""

import os

import pytest


@pytest.fixture(scope="module")
def tool_cache(tmp_path_factory):
    """One hardwire tool cache (HARDWIRE_CACHE) for a test module: its later tests reuse the synthesis runs of the
    first, and nothing leaks into the caller's cache."""
    root = tmp_path_factory.mktemp("hwcache")
    old = os.environ.get("HARDWIRE_CACHE")
    os.environ["HARDWIRE_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("HARDWIRE_CACHE")
    else:
        os.environ["HARDWIRE_CACHE"] = old
