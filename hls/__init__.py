"""Quantized-network path: QONNX front end, integer-layer graph, RTL and hls4ml back ends."""
