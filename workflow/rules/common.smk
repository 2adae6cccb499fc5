# Helpers shared by the rules: result paths, each script's code, shard lists, settings.

from pathlib import Path

import pandas as pd

from vitprobe.escape import script_json
from vitprobe.pipeline.code_deps import code_version, files_version
from vitprobe.pipeline.config import export_shards, image_listing, local_weights, shard_count

SRC = Path(workflow.basedir) / "src"
SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"
EXTRACT_SETTINGS = config["extract"]
ANALYSIS_SETTINGS = config["analysis"]
FIGURE_SETTINGS = config["figures"]
EXPLORER_SETTINGS = config["explorer"]
CKA_SETTINGS = config["cka"]
NORM_SETTINGS = config["token_norms"]
SHARD_SIZE = EXTRACT_SETTINGS["shard_size"]
KEEP_ATTENTION = EXTRACT_SETTINGS["keep_attention"]
# The AttentionReducer's settings (map_images only selects which maps the figures show).
REDUCER_SETTINGS = {k: ANALYSIS_SETTINGS[k] for k in ("renormalize", "head_fusion", "discard_ratio")}
# One crop set per distinct (image size, resize, crop fraction, interpolation).
GEOMETRIES = {entry.geometry: entry for entry in MODELS.values()}
HEADED = [m for m, e in MODELS.items() if e.has_head]
LABELS = {m: e.label for m, e in MODELS.items()}
MAP_QUERIES = {m: e.map_query for m, e in MODELS.items()}  # whose attention the CLS maps and rollout rows are
MAP_COUNT = ANALYSIS_SETTINGS["map_images"]
PCA_SETTINGS = ANALYSIS_SETTINGS["pca"]
# The PCA feature maps are drawn on the map images: none, no PCA.
PCA_MODELS = list(MODELS) if MAP_COUNT and PCA_SETTINGS["enabled"] else []
# The explorer page's template, style and script (package data, not imported: hashed here).
EXPLORER_PAGE = files_version(SRC / "vitprobe" / "pipeline" / "explorer_page", SRC)
EXPORT_IMAGES = config["export"]["attention_parquet"]  # a count or a list of image ids; 0: no export


def result(path):
    """A path under this experiment's results folder; wildcards keep single braces."""
    return f"{OUT}/{path}"


def report_param(value):
    """A parameter of a rule whose output is in the report, as `script_json` text (the script
    reads it with json.loads): Snakemake writes such a rule's parameters unescaped into the
    report's <script id="results"> block, and a checkpoint label or a path is user text."""
    return script_json(value)


def code(script):
    """The library code a script runs (the closure of the vitprobe modules it imports, read
    from its import statements), as a content hash per file. Given as a parameter, so an edit
    of any module in the closure reruns the rule, and nothing else does (a touch alone neither)."""
    return code_version(SCRIPTS / script, SRC)


def get_shards(wildcards=None):
    """Shard indices; known once the sample checkpoint has written the manifest."""
    manifest = checkpoints.sample.get().output.manifest
    return list(range(shard_count(len(pd.read_parquet(manifest, columns=["image_id"])), SHARD_SIZE)))


def get_image_listing(wildcards):
    """What a folder source holds (names, contents, labels.csv): an added or changed image resamples."""
    # The hashes are bookkeeping, not results: cached beside Snakemake's own metadata.
    return image_listing(config["images"], f".snakemake/vitprobe/image_hashes_{config['experiment']}.json")


def get_local_weights(wildcards):
    """A local weights file is an input, so replacing it reruns the rules that load it."""
    return local_weights(MODELS[wildcards.model])


def get_crops(wildcards):
    return result(f"crops/{MODELS[wildcards.model].geometry}/shard_{wildcards.shard}.npy")


def get_kept_attention(wildcards=None):
    """With extract.keep_attention the raw shards are results: a missing one is rebuilt."""
    if not KEEP_ATTENTION:
        return []
    return [result(f"attention/{m}/shard_{s}.npz") for m in MODELS for s in get_shards()]


def get_attention_exports(wildcards=None):
    """The long-format attention tables of export.attention_parquet, one per model."""
    return [result(f"export/attention_{m}.parquet") for m in MODELS] if EXPORT_IMAGES else []


def get_export_crops(wildcards):
    """The crop shards holding the exported images (an unknown image id stops here, named)."""
    manifest = checkpoints.sample.get().output.manifest
    image_ids = pd.read_parquet(manifest, columns=["image_id"])["image_id"].astype(str).tolist()
    geometry = MODELS[wildcards.model].geometry
    return [result(f"crops/{geometry}/shard_{s}.npy") for s in export_shards(image_ids, EXPORT_IMAGES, SHARD_SIZE)]


def model_settings(model):
    """Everything about a model that changes its outputs, and nothing else (the checkpoint
    label and published accuracy only change figures): a change reruns its extraction."""
    return MODELS[model].settings


def get_model_settings(wildcards):
    return model_settings(wildcards.model)


def get_map_shards(wildcards=None):
    """The first shards, which hold the map images (the first manifest rows)."""
    return get_shards()[: max(-(-MAP_COUNT // SHARD_SIZE), 1)]


def get_map_crops(wildcards):
    geometry = MODELS[wildcards.model].geometry
    return [result(f"crops/{geometry}/shard_{s}.npy") for s in get_map_shards()]


def comparison_name(models):
    return "_vs_".join(models) if len(models) <= 3 else f"all_{len(models)}_models"


COMPARISONS = {comparison_name(pair): pair for pair in config["comparisons"]}


def comparison_pairs(models):
    """Every pair of distinct models of a comparison, in the order the config lists them."""
    return [(a, b) for i, a in enumerate(models) for b in models[i + 1 :] if a != b]


# Each model against itself, then the pairs of every comparison (once each).
CKA_PAIRS = list(
    dict.fromkeys([(m, m) for m in MODELS] + [p for models in COMPARISONS.values() for p in comparison_pairs(models)])
)


def get_representation_shards(model):
    return [result(f"shards/{model}/representations_{s}.npz") for s in get_shards()]


def get_all_figures(wildcards=None):
    figures = [f"distance_by_block_{m}.png" for m in MODELS]
    figures += [f"distance_comparison_{name}.png" for name in COMPARISONS]
    if CKA:
        figures += [f"cka_within_{m}.png" for m in MODELS] + [f"cka_between_{name}.png" for name in COMPARISONS]
    figures += [f"token_norms_{m}.png" for m in MODELS]
    for m in MODELS:
        figures += [
            f"patch_embedding_filters_{m}.png",
            f"patch_embedding_components_{m}.png",
            f"position_embedding_cosine_{m}.png",
            f"position_embedding_dot_{m}.png",
        ]
    if MAP_COUNT:
        figures.append("attention_rollout.png")
        figures += [f"cls_attention_heads_{m}_image{i}.png" for m in MODELS for i in range(MAP_COUNT)]
        figures += [f"top1_gallery_{m}.png" for m in HEADED]
        figures += [f"high_norm_{m}.png" for m in MODELS]
    figures += [f"pca_{m}.png" for m in PCA_MODELS]
    if HEADED:
        figures.append("top1_predictions.png")
    if config.get("video"):
        figures.append(f"cls_attention_video_{config['video']['model']}.gif")
    return [result(f"figures/{name}") for name in figures]


def get_explorer(wildcards=None):
    """The explorer page shows the map images: none, no page."""
    return [result("explorer.html")] if MAP_COUNT else []


def get_planned_outputs(wildcards=None):
    """The config's outputs whose names are known before the sample checkpoint has run."""
    planned = get_all_figures() + get_explorer() + get_attention_exports() + [result(f"parameters/{m}.npz") for m in MODELS]
    planned += [result("token_norms.parquet")] + [result(f"token_norms/{m}.parquet") for m in MODELS]
    if CKA:
        planned += [result("cka.parquet")] + [result(f"cka/{a}/{b}.parquet") for a, b in CKA_PAIRS]
    if MAP_COUNT:
        planned += [result(f"maps/{m}.npz") for m in MODELS]
    planned += [result(f"pca/{m}.npz") for m in PCA_MODELS]
    return [path.removeprefix(f"{OUT}/") for path in planned]


def get_owned_folders(wildcards=None):
    """Folders whose files all belong to the config; which shards exist is known after sampling."""
    folders = [f"shards/{m}" for m in MODELS] + [f"crops/{g}" for g in GEOMETRIES]
    return folders + ([f"attention/{m}" for m in MODELS] if KEEP_ATTENTION else [])


def get_all_outputs(wildcards=None):
    """Every file the workflow produces for this config (after the sample checkpoint)."""
    shards = get_shards()
    files = [
        result(name)
        for name in (
            "manifest.parquet",
            "rejected.parquet",
            "predictions.parquet",
            "accuracy.parquet",
            "mean_attention_distance.parquet",
            "attention_distance_per_image.parquet",
        )
    ]
    files += [result(f"crops/{g}/shard_{s}.npy") for g in GEOMETRIES for s in shards]
    kinds = ["predictions_{}.parquet", "distance_{}.parquet", "maps_{}.npz", "representations_{}.npz"]
    files += [result(f"shards/{m}/{kind.format(s)}") for m in MODELS for s in shards for kind in kinds]
    files += get_kept_attention() + [result(path) for path in get_planned_outputs()]
    return sorted(files)
