# The experiment folder holds the current config's outputs only: outputs.json lists them, and
# files of earlier configs are moved to stale/<timestamp>/ (onstart in the Snakefile, and here).


def get_planned_outputs(wildcards=None):
    """The config's outputs whose names are known before the sample checkpoint has run."""
    planned = get_all_figures() + [result(f"parameters/{m}.npz") for m in MODELS]
    if MAP_COUNT:
        planned += [result(f"maps/{m}.npz") for m in MODELS]
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
    kinds = ["predictions_{}.parquet", "distance_{}.parquet", "maps_{}.npz"]
    files += [result(f"shards/{m}/{kind.format(s)}") for m in MODELS for s in shards for kind in kinds]
    files += get_kept_attention() + [result(path) for path in get_planned_outputs()]
    return sorted(files)


rule outputs:
    input:
        get_all_outputs,
    output:
        result("outputs.json"),
    params:
        # The list itself: a config that drops or adds outputs reruns this rule (so a run happens
        # and the onstart handler moves the dropped files away).
        files=lambda w: [path.removeprefix(f"{OUT}/") for path in get_all_outputs()],
        out_dir=OUT,
        code=code("outputs.py"),
    localrule: True
    log:
        result("logs/outputs.log"),
    script:
        "../scripts/outputs.py"
