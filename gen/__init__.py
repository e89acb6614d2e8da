"""Hardware generators: one module per block family (parameters, golden model, cycle model, component)."""
