"""Mean attention distance figures: by block for one model, and models compared."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from ...plots.distance import plot_distance_by_block, plot_distance_comparison


def distance_by_block(mean_table: str, model: str, label: str, out: str) -> None:
    plot_distance_by_block(pd.read_parquet(mean_table), model, label, out)


def distance_comparison(mean_table: str, models: Sequence[str], labels: Mapping[str, str], out: str) -> None:
    title = "Mean attention distance: " + " vs ".join(models)
    plot_distance_comparison(pd.read_parquet(mean_table), list(models), dict(labels), out, title)
