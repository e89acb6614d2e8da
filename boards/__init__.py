"""Board descriptions and top-level wrappers."""
