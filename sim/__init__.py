"""Simulation: cocotb runner (Verilator default, Icarus fallback), stream drivers and testbenches."""
