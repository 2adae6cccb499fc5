"""Outputs are written under a temporary name and renamed when complete, so a killed
job never leaves a half-written file that a later step could mistake for a result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(_part(path), index=False)
    _part(path).replace(path)


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(_part(path), "wb") as f:  # a file object: np.savez adds no second suffix
        np.savez(f, **arrays)
    _part(path).replace(path)


def write_npy(path: str | Path, array: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(_part(path), "wb") as f:
        np.save(f, array)
    _part(path).replace(path)
