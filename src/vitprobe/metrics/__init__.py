"""Metrics: of the attention (`attention`, keras.ops, run inside the compiled forward pass) and of
the parameters (`parameters`, numpy); `grid` and `arrays` are what both share."""
