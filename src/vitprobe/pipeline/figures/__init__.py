"""The figure stages, one module per figure family (as `vitprobe.plots`): each reads the
pipeline's tables and arrays and calls one plot function, so a figure rule's code is its family's.

A figure job costs more to start than to draw one model's figure, so a figure kind is one job for
every model (or comparison): its inputs come as one list, each figure's files after the other's."""

from __future__ import annotations

from collections.abc import Sequence


def consecutive(paths: Sequence[str], counts: Sequence[int]) -> list[list[str]]:
    """``paths`` cut into consecutive runs of ``counts`` (each figure's own input files, in order).

    Args:
        paths: a job's input files, the first figure's, then the second's, ...
        counts: how many files each figure has.
    """
    if sum(counts) != len(paths):
        raise ValueError(
            f"{len(paths)} input files for figures of {list(counts)} files: the rule's inputs and parameters disagree"
        )
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return [list(paths[start : start + count]) for start, count in zip(starts, counts)]


def per_model(paths: Sequence[str], models: Sequence[str]) -> dict[str, list[str]]:
    """``paths`` listed model after model, the same number each (every model has the same shards),
    as each model's files."""
    count, rest = divmod(len(paths), len(models))
    if rest:
        raise ValueError(f"{len(paths)} input files do not split evenly among the models {list(models)}")
    return dict(zip(models, consecutive(paths, [count] * len(models))))
