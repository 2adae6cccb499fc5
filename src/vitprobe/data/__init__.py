"""Image sources, sampling and preprocessing."""
