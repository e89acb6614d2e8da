"""rtl/ holds the released Verilog of the reference configurations: it must equal what the generators
produce now, byte for byte (regenerate with `python -m hardwire.gen.reference`)."""

from pathlib import Path

import pytest
from hardwire.gen import registry
from hardwire.gen.reference import REFERENCES

RTL = Path(__file__).resolve().parent.parent / "rtl"


@pytest.mark.parametrize("name, params", REFERENCES, ids=[p.top_name for _, p in REFERENCES])
def test_released_rtl_equals_the_generator_output(name, params, tmp_path):
    meta = registry.generate(name, params, tmp_path)
    for suffix in (".v", ".json"):
        released = RTL / f"{meta['top']}{suffix}"
        assert released.is_file(), f"{released} missing: run python -m hardwire.gen.reference"
        fresh = (tmp_path / f"{meta['top']}{suffix}").read_bytes()
        assert released.read_bytes() == fresh, f"{released.name} is stale: run python -m hardwire.gen.reference"
