# Helpers shared by the rules: library code each stage depends on, shard lists, settings.

from pathlib import Path

import pandas as pd

from vitprobe.experiment import shard_count

SRC = Path(workflow.basedir) / "src" / "vitprobe"
EXTRACT_SETTINGS = config["extract"]
ANALYSIS_SETTINGS = config["analysis"]
FIGURE_SETTINGS = config["figures"]
SHARD_SIZE = EXTRACT_SETTINGS["shard_size"]
# One crop set per distinct (image size, resize, crop fraction, interpolation).
GEOMETRIES = {entry.geometry: entry for entry in MODELS.values()}


def library(*names):
    """Library files a rule depends on: Snakemake does not see modules a script imports,
    so they are declared as inputs and an edit reruns exactly the stages that use them."""
    files = []
    for name in names:
        path = SRC / name
        files.extend(sorted(str(p) for p in path.rglob("*.py")) if path.is_dir() else [str(path)])
    return files


SAMPLE_CODE = library("data", "atomic.py")
MODEL_CODE = library("models", "weights", "api.py", "data/preprocess.py", "extraction.py", "shards.py", "atomic.py")
ANALYSIS_CODE = library("metrics.py", "analysis.py", "shards.py", "atomic.py")
FIGURE_CODE = library("plots.py", "figures.py", "metrics.py")


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


def attention_output(path):
    return path if EXTRACT_SETTINGS["keep_attention"] else temp(path)


def model_settings(wildcards):
    """Everything about a model that changes its outputs: a change reruns its extraction."""
    entry = MODELS[wildcards.model]
    return dict(config["models"][wildcards.model], preprocess=entry.preprocess.as_dict())
