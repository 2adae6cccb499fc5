# Helpers shared by the rules: library code each stage depends on, shard lists, settings.

from pathlib import Path

import pandas as pd

from vitprobe.experiment import shard_count

SRC = Path(workflow.basedir) / "src" / "vitprobe"
EXTRACT_SETTINGS = config["extract"]
ANALYSIS_SETTINGS = config["analysis"]
FIGURE_SETTINGS = config["figures"]
SHARD_SIZE = EXTRACT_SETTINGS["shard_size"]
KEEP_ATTENTION = EXTRACT_SETTINGS["keep_attention"]
# The AttentionReducer's settings (map_images only selects which maps the figures show).
REDUCER_SETTINGS = {k: ANALYSIS_SETTINGS[k] for k in ("renormalize", "head_fusion", "discard_ratio")}
# One crop set per distinct (image size, resize, crop fraction, interpolation).
GEOMETRIES = {entry.geometry: entry for entry in MODELS.values()}


def library(*names):
    """The library files that a stage depends on. Snakemake does not see modules a script imports,
    so they are declared as inputs and an edit reruns exactly the stages that use them."""
    files = []
    for name in names:
        path = SRC / name
        files.extend(sorted(str(p) for p in path.rglob("*.py")) if path.is_dir() else [str(path)])
    return files


SAMPLE_CODE = library("data", "atomic.py")
MODEL_CODE = library("models", "weights", "api.py", "data/preprocess.py", "extraction.py", "shards.py", "atomic.py", "threads.py")
ATTENTION_METRICS_CODE = library("attention_metrics.py", "grid.py")
REDUCTION_CODE = ATTENTION_METRICS_CODE + library("reduction.py")
# Without keep_attention the reductions run inside extraction, so their code is its code too.
EXTRACT_CODE = MODEL_CODE if KEEP_ATTENTION else MODEL_CODE + REDUCTION_CODE
ANALYSIS_CODE = library("analysis.py", "shards.py", "atomic.py")
FIGURE_CODE = library("plots.py", "figures.py", "metrics.py", "grid.py")


def shards(wildcards=None):
    """Shard indices; known once the sample checkpoint has written the manifest."""
    manifest = checkpoints.sample.get().output.manifest
    return list(range(shard_count(len(pd.read_parquet(manifest, columns=["image_id"])), SHARD_SIZE)))


def local_weights(wildcards):
    """A local weights file is an input, so replacing it reruns extraction."""
    w = MODELS[wildcards.model].weights
    if w == "random" or "://" in w or w.startswith(("hf-hub:", "package:")):
        return []
    return [w]


def kept_attention(wildcards=None):
    """With extract.keep_attention the raw shards are results: a missing one is rebuilt."""
    if not KEEP_ATTENTION:
        return []
    return [f"{OUT}/attention/{m}/shard_{s}.{ext}" for m in MODELS for s in shards() for ext in ("npy", "json")]


def extract_outputs():
    """Predictions, and either the reductions (computed inside the compiled forward pass: the
    attention never reaches the disk) or, with keep_attention, the raw attention that the
    reduce rule reads."""
    shard = "{model}/shard_{shard}"
    outputs = {"predictions": f"{OUT}/shards/{{model}}/predictions_{{shard}}.parquet"}
    if KEEP_ATTENTION:
        return dict(outputs, attention=f"{OUT}/attention/{shard}.npy", sidecar=f"{OUT}/attention/{shard}.json")
    return dict(outputs, **reduction_outputs())


def reduction_outputs():
    return {
        "per_image": f"{OUT}/shards/{{model}}/distance_{{shard}}.parquet",
        "maps": f"{OUT}/shards/{{model}}/maps_{{shard}}.npz",
    }


def extract_params():
    if KEEP_ATTENTION:
        return {"dtype": EXTRACT_SETTINGS["dtype"]}
    return {"analysis": REDUCER_SETTINGS}


def model_settings(wildcards):
    """Everything about a model that changes its outputs, and nothing else (the checkpoint
    label and published accuracy only change figures): a change reruns its extraction."""
    entry = MODELS[wildcards.model]
    settings = {k: v for k, v in config["models"][wildcards.model].items() if k in ("arch", "weights", "seed", "spec")}
    return dict(settings, preprocess=entry.preprocess.as_dict())


def map_shards(wildcards):
    """The first shards, which hold the map images (the first manifest rows)."""
    return shards()[: max(-(-ANALYSIS_SETTINGS["map_images"] // SHARD_SIZE), 1)]


def map_crop_shards(wildcards):
    geometry = MODELS[wildcards.model].geometry
    return [f"{OUT}/crops/{geometry}/shard_{s}.npy" for s in map_shards(wildcards)]


HEADED = [m for m, e in MODELS.items() if e.has_head]
LABELS = {m: e.label for m, e in MODELS.items()}
MAP_COUNT = ANALYSIS_SETTINGS["map_images"]


def comparison_name(models):
    return "_vs_".join(models) if len(models) <= 3 else f"all_{len(models)}_models"


COMPARISONS = {comparison_name(pair): pair for pair in config["comparisons"]}


def all_figures(wildcards=None):
    figures = [f"{OUT}/figures/distance_by_block_{m}.png" for m in MODELS]
    figures += [f"{OUT}/figures/distance_comparison_{name}.png" for name in COMPARISONS]
    for m in MODELS:
        figures += [
            f"{OUT}/figures/patch_embedding_filters_{m}.png",
            f"{OUT}/figures/patch_embedding_components_{m}.png",
            f"{OUT}/figures/position_embedding_cosine_{m}.png",
            f"{OUT}/figures/position_embedding_dot_{m}.png",
        ]
    if MAP_COUNT:
        figures.append(f"{OUT}/figures/attention_rollout.png")
        figures += [f"{OUT}/figures/cls_attention_heads_{m}_image{i}.png" for m in MODELS for i in range(MAP_COUNT)]
        figures += [f"{OUT}/figures/top1_gallery_{m}.png" for m in HEADED]
    if HEADED:
        figures.append(f"{OUT}/figures/top1_predictions.png")
    if config.get("video"):
        figures.append(f"{OUT}/figures/cls_attention_video_{config['video']['model']}.gif")
    return figures
