"""A config entry's model, loaded as the stages that run models need it."""

from __future__ import annotations

from ..api import ProbeModel, load_model
from .config import ModelEntry


def build_model(entry: ModelEntry, precision: str = "float32", compile_mode: str | None = None) -> ProbeModel:
    weights = None if entry.weights == "random" else entry.weights
    return load_model(
        entry.arch,
        weights,
        preprocess=entry.preprocess.as_dict(),
        seed=entry.seed,
        precision=precision,
        compile_mode=compile_mode,
        **entry.spec_overrides,
    )
