# Extraction: by default the reductions run inside the compiled forward pass (rule extract); with
# extract.keep_attention the raw attention is written to self-describing .npz shards and kept, and
# rule reduce reads them. Rule export_attention writes a few images' attention as Parquet on request.

EXTRACT_RESOURCES = dict(mem_mb=EXTRACT_SETTINGS["mem_mb"], runtime=60, gpu=EXTRACT_SETTINGS["gpus"])
REDUCTIONS = dict(
    per_image=shard_path("{model}", "distance"),
    maps=shard_path("{model}", "maps"),
)
# Gram matrices per image group and token norms, from the block outputs inside the forward pass.
REPRESENTATIONS = shard_path("{model}", "representations")
# The map images' patch features and attention rows (PCA views, explorer), from the same program;
# empty in the shards that hold none.
MAP_IMAGE_ROWS = shard_path("{model}", "map_images")

if KEEP_ATTENTION:

    rule extract_attention:
        input:
            crops=get_crops,
            manifest=result("manifest.parquet"),
            weights=get_local_weights,
        output:
            predictions=shard_path("{model}", "predictions"),
            attention=result("attention/{model}/shard_{shard}.npz"),
            representations=REPRESENTATIONS,
            map_images=MAP_IMAGE_ROWS,
        log:
            result("logs/extract/{model}_{shard}.log"),
        benchmark:
            result("benchmarks/extract/{model}_{shard}.tsv")
        conda:
            "../../envs/vitprobe.yaml"
        threads: EXTRACT_SETTINGS["threads"]
        resources:
            **EXTRACT_RESOURCES,
        params:
            model=get_model_settings,
            batch_size=EXTRACT_SETTINGS["batch_size"],
            shard_size=SHARD_SIZE,
            shard_count=get_shard_count,
            precision=EXTRACT_SETTINGS["precision"],
            group_size=CKA_SETTINGS["group_size"] if CKA else None,
            compile_mode=EXTRACT_SETTINGS["compile"],
            dtype=EXTRACT_SETTINGS["dtype"],
            map_rows=get_map_rows,
            code=code("extract_attention.py"),
        message:
            "extract_attention {wildcards.model} shard {wildcards.shard}, log: {log}"
        script:
            "../scripts/extract_attention.py"

    rule reduce:
        input:
            attention=result("attention/{model}/shard_{shard}.npz"),
            # What the shard must belong to: the manifest's rows and the model's weights.
            manifest=result("manifest.parquet"),
            weights=get_local_weights,
        output:
            **REDUCTIONS,
        log:
            result("logs/reduce/{model}_{shard}.log"),
        benchmark:
            result("benchmarks/reduce/{model}_{shard}.tsv")
        conda:
            "../../envs/vitprobe.yaml"
        resources:
            mem_mb=2000,
        params:
            analysis=REDUCER_SETTINGS,
            model=get_model_settings,
            shard_size=SHARD_SIZE,
            code=code("reduce.py"),
        message:
            "reduce {wildcards.model} shard {wildcards.shard}, log: {log}"
        script:
            "../scripts/reduce.py"

else:

    rule extract:
        input:
            crops=get_crops,
            manifest=result("manifest.parquet"),
            weights=get_local_weights,
        output:
            **REDUCTIONS,
            predictions=shard_path("{model}", "predictions"),
            representations=REPRESENTATIONS,
            map_images=MAP_IMAGE_ROWS,
        log:
            result("logs/extract/{model}_{shard}.log"),
        benchmark:
            result("benchmarks/extract/{model}_{shard}.tsv")
        conda:
            "../../envs/vitprobe.yaml"
        threads: EXTRACT_SETTINGS["threads"]
        resources:
            **EXTRACT_RESOURCES,
        params:
            model=get_model_settings,
            batch_size=EXTRACT_SETTINGS["batch_size"],
            shard_size=SHARD_SIZE,
            shard_count=get_shard_count,
            precision=EXTRACT_SETTINGS["precision"],
            group_size=CKA_SETTINGS["group_size"] if CKA else None,
            compile_mode=EXTRACT_SETTINGS["compile"],
            map_rows=get_map_rows,
            analysis=REDUCER_SETTINGS,
            attention_kernel=EXTRACT_SETTINGS["attention_kernel"],
            code=code("extract.py"),
        message:
            "extract {wildcards.model} shard {wildcards.shard}, log: {log}"
        script:
            "../scripts/extract.py"


rule export_attention:
    input:
        manifest=result("manifest.parquet"),
        crops=get_export_crops,
        weights=get_local_weights,
    output:
        result("export/attention_{model}.parquet"),
    log:
        result("logs/export/attention_{model}.log"),
    benchmark:
        result("benchmarks/export/attention_{model}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    threads: EXTRACT_SETTINGS["threads"]
    resources:
        **EXTRACT_RESOURCES,
    params:
        model=get_model_settings,
        images=EXPORT_IMAGES,
        shard_size=SHARD_SIZE,
        batch_size=EXTRACT_SETTINGS["batch_size"],
        precision=EXTRACT_SETTINGS["precision"],
        code=code("export_attention.py"),
    message:
        "export_attention {wildcards.model}, log: {log}"
    script:
        "../scripts/export_attention.py"


rule model_parameters:
    input:
        weights=get_local_weights,
    output:
        result("parameters/{model}.npz"),
    log:
        result("logs/parameters/{model}.log"),
    benchmark:
        result("benchmarks/parameters/{model}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=2000,
    params:
        model=get_model_settings,
        code=code("parameters.py"),
    message:
        "model_parameters {wildcards.model}, log: {log}"
    script:
        "../scripts/parameters.py"
