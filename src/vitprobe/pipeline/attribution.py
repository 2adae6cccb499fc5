"""The attribution stage: one model's class-specific maps of the first manifest images and the
faithfulness of each map (`vitprobe.attribution`), and the table of every model."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from ..atomic import write_npz, write_parquet
from ..attribution import attribute_batches, embedding_concepts, faithfulness_curves, random_maps
from ..metrics.faithfulness import PERTURBATION_FRACTIONS
from ..shards import open_crops
from .checks import require_finite
from .config import model_entry
from .model import build_model

log = logging.getLogger("vitprobe")


def _curve_positions(steps: int) -> dict[str, np.ndarray]:
    """Each curve of `vitprobe.attribution.Curves` -> the x of its points: the fraction of pixels
    removed (perturbation test) or moved (deletion, insertion)."""
    perturbation, rise = np.array((0.0, *PERTURBATION_FRACTIONS)), np.linspace(0.0, 1.0, steps + 1)
    kinds = ("positive_hits", "negative_hits", "positive_scores", "negative_scores")
    return {**{kind: perturbation for kind in kinds}, "deletion": rise, "insertion": rise}


def _targets(setting, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, list[str]]:
    """(class per image, -1: the predicted one; where each came from) for a classifier."""
    if setting == "predicted":
        return np.full(len(labels), -1), ["predicted"] * len(labels)
    if setting == "label":
        if (labels < 0).all():
            raise ValueError(
                "attribution.target: label, but none of the attribution images has a label; "
                "give the source labels (labels.csv for a folder) or set attribution.target: predicted"
            )
        return np.where(labels >= 0, labels, -1), ["label" if label >= 0 else "predicted" for label in labels]
    if not 0 <= setting < num_classes:
        raise ValueError(f"attribution.target: class {setting} is not one of the model's {num_classes} classes")
    return np.full(len(labels), setting), ["index"] * len(labels)


def run_attribution(
    key: str,
    model_settings: dict,
    crop_paths: list[str],
    manifest_path: str,
    settings: dict,
    rollout: dict,
    batch_size: int,
    maps_out: str,
    table_out: str,
    curves_out: str,
) -> None:
    """Maps and faithfulness of model ``key`` on the first ``settings["images"]`` manifest images.

    Args:
        key: the config's model key.
        model_settings: its entry's settings (`ModelEntry.settings`).
        crop_paths: the crop shards holding those images, in shard order.
        manifest_path: the sample's manifest (image ids and labels of the first rows).
        settings: the config's ``attribution`` block.
        rollout: ``analysis.head_fusion`` and ``analysis.discard_ratio`` (the plain rollout baseline).
        batch_size: images per forward pass (``extract.batch_size``).
        maps_out: ``attribution/<model>.npz``: per method (images, gh, gw), ``image_id`` and ``crops``.
        table_out: one row per image and method with the AUCs and the target.
        curves_out: the curves behind the AUCs, one row per point.
    """
    entry = model_entry(key, model_settings)
    methods = list(settings["methods"])
    manifest = pd.read_parquet(manifest_path, columns=["image_id", "label"])
    count = min(settings["images"], len(manifest))
    if count < settings["images"]:  # rejected images left fewer usable ones than the sample's count
        log.warning(
            "attribution.images: %d requested, the manifest holds %d usable images: the stage takes those",
            settings["images"],
            count,
        )
    manifest = manifest.head(count)
    crops = np.concatenate([open_crops(p) for p in crop_paths])[:count]
    image_ids, labels = manifest["image_id"].astype(str).tolist(), manifest["label"].to_numpy()
    refusal = entry.spec.transformer_attribution_refusal
    if "transformer_attribution" in methods and refusal:
        methods.remove("transformer_attribution")
        log.info("%s: no transformer_attribution: %s", key, refusal)
    model = build_model(entry)
    started = time.perf_counter()
    if model.spec.has_classifier:
        targets, sources = _targets(settings["target"], labels, model.spec.num_classes)
        concepts = embeddings = None
    else:
        embeddings = np.concatenate(
            [model.target_scores(crops[i : i + batch_size]).embedding for i in range(0, count, batch_size)]
        )
        concepts, sources = embedding_concepts(embeddings, labels)
        targets = np.full(count, -1)
    maps, used = attribute_batches(
        model,
        crops,
        targets,
        concepts,
        methods,
        batch_size,
        discard_ratio=settings["discard_ratio"],
        head_fusion=rollout["head_fusion"],
        rollout_discard_ratio=rollout["discard_ratio"],
    )
    for method, values in maps.items():
        require_finite(key, f"{method} maps", values, image_ids)
    maps["random"] = random_maps(count, model.grid_size, settings["seed"]).astype(np.float32)
    log.info("%s: %d maps per method in %.1f s (%s and random)", entry.label, count, time.perf_counter() - started, methods)
    rows, curves = [], []
    for i, image_id in enumerate(image_ids):
        # The curves of an image's own concept follow the cosine to its unperturbed embedding,
        # computed once above (not once per method inside `faithfulness_curves`).
        concept = None if concepts is None else (embeddings[i] if sources[i] == "self" else concepts[i])
        for method, values in maps.items():
            result = faithfulness_curves(model, crops[i], values[i], int(used[i]), concept, settings["steps"], batch_size)
            target = "embedding" if used[i] < 0 else str(int(used[i]))
            is_label = sources[i] == "label_mean" or (used[i] >= 0 and used[i] == labels[i])
            rows.append(
                dict(
                    model=key,
                    image_id=image_id,
                    method=method,
                    target=target,
                    target_class=int(used[i]),
                    target_source=sources[i],
                    target_is_label=bool(is_label),
                    label=int(labels[i]),
                    **result.aucs(),
                )
            )
            for curve, x in _curve_positions(settings["steps"]).items():
                curves += [(key, image_id, method, curve, j, x[j], float(v)) for j, v in enumerate(getattr(result, curve))]
        log.info("%s: image %d/%d (%s) tested, %.1f s", key, i + 1, count, image_id, time.perf_counter() - started)
    write_npz(
        maps_out,
        image_id=np.asarray(image_ids),
        crops=np.ascontiguousarray(crops),
        target=np.asarray(used),
        **{method: np.asarray(values, np.float32) for method, values in maps.items()},
    )
    write_parquet(pd.DataFrame(rows), table_out)
    write_parquet(pd.DataFrame(curves, columns=["model", "image_id", "method", "curve", "point", "x", "value"]), curves_out)


def combine_attribution(tables: list[str], curves: list[str], table_out: str, curves_out: str) -> None:
    """Every model's rows in one table (and one table of curves), in the config's model order."""
    write_parquet(pd.concat([pd.read_parquet(p) for p in tables], ignore_index=True), table_out)
    write_parquet(pd.concat([pd.read_parquet(p) for p in curves], ignore_index=True), curves_out)
