# Helpers shared by the rules: result paths, each script's code, shard lists, settings.

import math
from pathlib import Path

import pandas as pd

from vitprobe.escape import script_json
from vitprobe.pipeline.code_deps import code_version, files_version
from vitprobe.pipeline.config import check_map_images, export_shards, image_listing, local_weights, shard_count

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
# Each model's prefix tokens in order (cls, distillation, register).
PREFIX_KINDS = {m: list(e.spec.prefix_tokens) for m, e in MODELS.items()}
MAP_QUERIES = {m: e.map_query for m, e in MODELS.items()}  # whose attention the CLS maps and rollout rows are
MAP_IMAGES = ANALYSIS_SETTINGS["map_images"]
PCA_SETTINGS = ANALYSIS_SETTINGS["pca"]
# The PCA feature maps are drawn on the map images: none, no PCA.
PCA_MODELS = list(MODELS) if MAP_IMAGES and PCA_SETTINGS["enabled"] else []
# The explorer page's template, style and script (package data, not imported: hashed here).
EXPLORER_PAGE = files_version(SRC / "vitprobe" / "pipeline" / "explorer_page", SRC)
EXPORT_IMAGES = config["export"]["attention_parquet"]  # a count or a list of image ids; 0: no export
ATTRIBUTION_SETTINGS = config["attribution"]
ATTRIBUTION_COUNT = ATTRIBUTION_SETTINGS["images"]  # 0: no attribution stage
# The attribution images that are also map images get a figure of every method's maps.
ATTRIBUTION_MAP_COUNT = min(ATTRIBUTION_COUNT, MAP_IMAGES)


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


# A model's files per shard, by kind, and their suffixes.
SHARD_FILES = {"predictions": "parquet", "distance": "parquet", "maps": "npz", "representations": "npz", "map_images": "npz"}


def crop_path(geometry, shard="{shard}"):
    """The uint8 crops of one shard of the manifest at one crop geometry (wildcards by default)."""
    return result(f"crops/{geometry}/shard_{shard}.npy")


def shard_path(model, kind, shard="{shard}"):
    """One of a model's per-shard files (`SHARD_FILES`: predictions, distance, maps, representations, map images)."""
    return result(f"shards/{model}/{kind}_{shard}.{SHARD_FILES[kind]}")


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
    return crop_path(MODELS[wildcards.model].geometry, wildcards.shard)


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
    return [crop_path(geometry, s) for s in export_shards(image_ids, EXPORT_IMAGES, SHARD_SIZE)]


def model_settings(model):
    """Everything about a model that changes its outputs, and nothing else (the checkpoint
    label and published accuracy only change figures): a change reruns its extraction."""
    return MODELS[model].settings


def get_model_settings_text(wildcards):
    """`model_settings` as report text (`report_param`): a rule in the report shows its parameters."""
    return report_param(model_settings(wildcards.model))


def get_model_settings(wildcards):
    return model_settings(wildcards.model)


# The models whose per-shard files a stage reads (key -> settings). The stage checks that each file
# is that model's, from this config's settings and weights, and of the manifest's rows of its shard
# (`RunShards`); the manifest and any local weights file are the rule's inputs.


def get_shard_models(wildcards):
    return {wildcards.model: model_settings(wildcards.model)}


def get_pair_shard_models(wildcards):
    return {m: model_settings(m) for m in (wildcards.model_a, wildcards.model_b)}


def get_pair_local_weights(wildcards):
    return list(dict.fromkeys(path for m in (wildcards.model_a, wildcards.model_b) for path in local_weights(MODELS[m])))


def get_map_shards(wildcards=None):
    """The first shards, which hold the map images (the first manifest rows). Known once the
    sample checkpoint has written the manifest, which is when its usable images (rejections
    left out) can be held against analysis.map_images."""
    manifest = checkpoints.sample.get().output.manifest
    check_map_images(MAP_IMAGES, len(pd.read_parquet(manifest, columns=["image_id"])), "the manifest's usable images")
    return get_shards()[: max(-(-MAP_IMAGES // SHARD_SIZE), 1)]


def get_attribution_crops(wildcards):
    """The crop shards holding the attribution images (the first manifest rows)."""
    geometry = MODELS[wildcards.model].geometry
    return [result(f"crops/{geometry}/shard_{s}.npy") for s in get_shards()[: max(-(-ATTRIBUTION_COUNT // SHARD_SIZE), 1)]]


def get_attribution_outputs(wildcards=None):
    """The attribution tables and figures (none when attribution.images is 0)."""
    if not ATTRIBUTION_COUNT:
        return []
    files = ["attribution.parquet", "attribution_curves.parquet"] + [
        f"attribution/{m}{s}" for m in MODELS for s in (".npz", ".parquet", "_curves.parquet")
    ]
    files += [f"figures/attribution_{kind}_{m}.png" for m in MODELS for kind in ("curves", "auc")]
    files += [f"figures/attribution_maps_image{i}.png" for i in range(ATTRIBUTION_MAP_COUNT)]
    return [result(f) for f in files]


def get_map_rows(wildcards):
    """How many of the map images (the first manifest rows) shard ``wildcards.shard`` holds: its
    extract job computes their PCA features and explorer rows (0 for most shards, whose jobs
    therefore do not rerun when analysis.map_images changes)."""
    return max(0, min(SHARD_SIZE, MAP_IMAGES - int(wildcards.shard) * SHARD_SIZE))


def get_map_crops(wildcards):
    geometry = MODELS[wildcards.model].geometry
    return [crop_path(geometry, s) for s in get_map_shards()]


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
    return [shard_path(model, "representations", s) for s in get_shards()]


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
    if MAP_IMAGES:
        figures.append("attention_rollout.png")
        figures += [f"cls_attention_heads_{m}_image{i}.png" for m in MODELS for i in range(MAP_IMAGES)]
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
    return [result("explorer.html")] if MAP_IMAGES else []


def get_planned_outputs(wildcards=None):
    """The config's outputs whose names are known before the sample checkpoint has run."""
    planned = get_all_figures() + get_explorer() + get_attention_exports() + [result(f"parameters/{m}.npz") for m in MODELS]
    planned += [result("token_norms.parquet")] + [result(f"token_norms/{m}.parquet") for m in MODELS]
    if CKA:
        planned += [result("cka.parquet")] + [result(f"cka/{a}/{b}.parquet") for a, b in CKA_PAIRS]
    if MAP_IMAGES:
        planned += [result(f"maps/{m}.npz") for m in MODELS]
    planned += [result(f"pca/{m}.npz") for m in PCA_MODELS]
    planned += get_attribution_outputs()
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
    files += [crop_path(g, s) for g in GEOMETRIES for s in shards]
    files += [shard_path(m, kind, s) for m in MODELS for s in shards for kind in SHARD_FILES]
    files += get_kept_attention() + [result(path) for path in get_planned_outputs()]
    return sorted(files)


# Input functions and parameters of one model, one comparison or one crop geometry (wildcards).


def get_prefix_kinds(wildcards):
    return PREFIX_KINDS[wildcards.model]


def memory_for_inputs(base_mb, per_input_mb):
    """mem_mb for jobs that load their inputs whole (tables and arrays that grow with the images),
    as base_mb for the interpreter and libraries plus per_input_mb MB per MB of input (docs/cluster.md)."""
    return lambda wildcards, input: base_mb + math.ceil(per_input_mb * input.size_mb)


def get_model_representations(wildcards):
    return get_representation_shards(wildcards.model)


def get_all_representations(wildcards):
    """Every model's representation shards, model after model."""
    return [path for m in MODELS for path in get_representation_shards(m)]


def get_all_map_representations(wildcards):
    """The representation shards that hold the map images, model after model."""
    return [shard_path(m, "representations", s) for m in MODELS for s in get_map_shards()]


def get_model_maps(wildcards):
    """The per-shard maps files that hold the map images."""
    return [shard_path(wildcards.model, "maps", s) for s in get_map_shards()]


def get_model_map_images(wildcards):
    """The per-shard files of the map images' patch features and explorer rows."""
    return [shard_path(wildcards.model, "map_images", s) for s in get_map_shards()]


def get_all_distances(wildcards):
    return [shard_path(m, "distance", s) for m in MODELS for s in get_shards()]


def get_all_predictions(wildcards):
    return [shard_path(m, "predictions", s) for m in MODELS for s in get_shards()]


def get_all_local_weights(wildcards):
    return [path for m in MODELS for path in local_weights(MODELS[m])]


def get_shard_count(wildcards):
    return len(get_shards())


def get_image_size(wildcards):
    return GEOMETRIES[wildcards.geometry].spec.image_size


def get_geometry(wildcards):
    return GEOMETRIES[wildcards.geometry].preprocess.geometry_dict()


def get_representations_a(wildcards):
    return get_representation_shards(wildcards.model_a)


def get_representations_b(wildcards):
    return get_representation_shards(wildcards.model_b)


def get_output_listing(wildcards):
    return [path.removeprefix(f"{OUT}/") for path in get_all_outputs()]


def get_output_folder(wildcards, output):
    return str(Path(output[0]).parent)
