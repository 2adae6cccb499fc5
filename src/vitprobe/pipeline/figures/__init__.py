"""The figure stages, one module per figure family (as `vitprobe.plots`): each reads the
pipeline's tables and arrays and calls one plot function, so a figure rule's code is its family's."""
