"""Open-tool wrappers: yosys synthesis, nextpnr place-and-route, Verilator lint, reports."""
