"""Attribution maps and their faithfulness for a loaded model: the targets, the concepts of the
embedding targets, the random baseline and the perturbation curves, batched through the
model's compiled programs (`ProbeModel.attribute`, `ProbeModel.target_scores`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .api import ProbeModel
from .metrics.faithfulness import (
    PERTURBATION_FRACTIONS,
    perturbation_auc,
    perturbation_inputs,
    removal_order,
    rise_auc,
    rise_inputs,
    upsample_bilinear,
)

CURVES = ("positive", "negative", "deletion", "insertion")


def embedding_concepts(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each image's concept vector and its kind: the mean of the unit embeddings of the images
    that share its label (``"label_mean"``, where at least two do), else zeros, which
    `vitprobe.metrics.attribution.target_scores` reads as the image's own embedding (``"self"``).

    Args:
        embeddings: (B, E) the images' pooled embeddings.
        labels: (B,) their labels; -1 where unknown.
    """
    units = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-30)
    concepts = np.zeros_like(units, dtype=np.float32)
    kinds = ["self"] * len(labels)
    for label in set(labels.tolist()) - {-1}:
        members = np.flatnonzero(labels == label)
        if len(members) >= 2:
            concepts[members] = units[members].mean(axis=0)
            for i in members:
                kinds[i] = "label_mean"
    return concepts, kinds


def random_maps(count: int, grid: int, seed: int) -> np.ndarray:
    """(count, grid, grid) uniform noise: the baseline whose scores are the chance level."""
    return np.random.default_rng(seed).random((count, grid, grid))


@dataclass
class Curves:
    """One image's faithfulness curves for one map. ``hits``: top-1 == target at fraction 0 then
    each perturbation step (NaN without a classifier); ``scores``: the target's probability
    (an embedding target's score) at the same points; ``deletion``, ``insertion``: RISE's."""

    positive_hits: np.ndarray
    negative_hits: np.ndarray
    positive_scores: np.ndarray
    negative_scores: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    def aucs(self) -> dict[str, float]:
        return {
            "positive_auc": float(perturbation_auc(self.positive_hits[0], self.positive_hits[1:])),
            "negative_auc": float(perturbation_auc(self.negative_hits[0], self.negative_hits[1:])),
            "positive_score_auc": float(perturbation_auc(self.positive_scores[0], self.positive_scores[1:])),
            "negative_score_auc": float(perturbation_auc(self.negative_scores[0], self.negative_scores[1:])),
            "deletion_auc": float(rise_auc(self.deletion)),
            "insertion_auc": float(rise_auc(self.insertion)),
        }


def faithfulness_curves(
    model: ProbeModel,
    crop: np.ndarray,
    patch_map: np.ndarray,
    target: int,
    concept: np.ndarray | None,
    steps: int,
    batch_size: int,
) -> Curves:
    """Every curve of one image's map (`vitprobe.metrics.faithfulness`): 9 + 9 perturbed crops and
    2 x (``steps`` + 1) deletion and insertion crops, scored in batches of ``batch_size`` through
    the compiled scoring program, plus the unperturbed crop. A classifier's score is the target's
    probability; an embedding target's is the cosine with its concept, where the concept is the
    image's own (unperturbed) embedding when none is given, so its curves start at 1.

    Args:
        model: the model whose output the map explains.
        crop: (S, S, 3) uint8, the crop the model saw.
        patch_map: (gh, gw) the map.
        target: the class explained (-1 for an embedding target).
        concept: the embedding target's concept (None or zeros: the image's own unperturbed embedding).
        steps: deletion and insertion steps.
        batch_size: images per forward pass.
    """
    classifier = model.spec.has_classifier
    if not classifier and (concept is None or not np.any(concept)):
        # An image's own concept is its unperturbed embedding: the curves follow the cosine to it.
        concept = model.target_scores(crop[None]).embedding[0]
    pixel_map = upsample_bilinear(patch_map[None], crop.shape[0])[0]
    most_first = removal_order(pixel_map)
    inputs = [
        crop[None],
        perturbation_inputs(crop, most_first),
        perturbation_inputs(crop, removal_order(pixel_map, negative=True)),
        rise_inputs(crop, most_first, steps, insertion=False),
        rise_inputs(crop, most_first, steps, insertion=True),
    ]
    batch = np.concatenate(inputs)
    count = len(batch)
    concepts = None if concept is None else np.repeat(np.asarray(concept, np.float32)[None], count, axis=0)
    targets = np.full(count, target, np.int32)
    scores, hits = np.empty(count), np.empty(count)
    for start in range(0, count, batch_size):
        part = slice(start, start + batch_size)
        out = model.target_scores(batch[part], targets[part], None if concepts is None else concepts[part])
        scores[part] = out.probability if classifier else out.score
        hits[part] = (out.top1 == out.target) if classifier else np.nan
    n = len(PERTURBATION_FRACTIONS)
    positive, negative = slice(1, 1 + n), slice(1 + n, 1 + 2 * n)
    deletion = slice(1 + 2 * n, 2 + 2 * n + steps)
    insertion = slice(2 + 2 * n + steps, count)
    return Curves(
        positive_hits=np.concatenate([hits[:1], hits[positive]]),
        negative_hits=np.concatenate([hits[:1], hits[negative]]),
        positive_scores=np.concatenate([scores[:1], scores[positive]]),
        negative_scores=np.concatenate([scores[:1], scores[negative]]),
        deletion=scores[deletion],
        insertion=scores[insertion],
    )


def attribute_batches(
    model: ProbeModel,
    crops: np.ndarray,
    targets: np.ndarray,
    concepts: np.ndarray | None,
    methods: Sequence[str],
    batch_size: int,
    **settings,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(maps per method, (B,) target used) of ``crops`` in batches (`ProbeModel.attribute`)."""
    maps: dict[str, list] = {m: [] for m in methods}
    used = []
    for start in range(0, len(crops), batch_size):
        part = slice(start, start + batch_size)
        out = model.attribute(crops[part], targets[part], None if concepts is None else concepts[part], methods, **settings)
        for m in methods:
            maps[m].append(out.maps[m])
        used.append(out.target)
    return {m: np.concatenate(v) for m, v in maps.items()}, np.concatenate(used)
