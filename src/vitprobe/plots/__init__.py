"""The figures, one module per family (`distance`, `maps`, `parameters`, `predictions`, `video`),
as functions of tables and arrays; `style` holds what they share. No model code, no keras."""
