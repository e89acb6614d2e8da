"""The reference configurations released as Verilog in rtl/, and the command that regenerates them.

`python -m hardwire.gen.reference [DIR]` rewrites DIR (default: rtl/ of the source tree); the test
`tests/test_reference_rtl.py` regenerates each and compares byte for byte, so rtl/ cannot drift.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hardwire.gen.systolic import SystolicParams

REFERENCES = [
    ("systolic", SystolicParams(rows=4, cols=4, a_width=8, w_width=8, dataflow="weight_stationary")),
    ("systolic", SystolicParams(rows=8, cols=8, a_width=8, w_width=8, dataflow="weight_stationary")),
    ("systolic", SystolicParams(rows=8, cols=8, a_width=8, w_width=8, dataflow="output_stationary")),
]


def main(argv: list[str]) -> int:
    from hardwire.gen import registry

    out = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "rtl"
    for name, params in REFERENCES:
        meta = registry.generate(name, params, out)
        print(f"wrote {meta['verilog']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
