# Extraction: by default the reductions run inside the compiled forward pass (rule extract); with
# extract.keep_attention the raw attention is written and kept, and rule reduce reads it.

EXTRACT_RESOURCES = dict(mem_mb=EXTRACT_SETTINGS["mem_mb"], runtime=60, gpu=EXTRACT_SETTINGS["gpus"])
REDUCTIONS = dict(
    per_image=result("shards/{model}/distance_{shard}.parquet"),
    maps=result("shards/{model}/maps_{shard}.npz"),
)

if KEEP_ATTENTION:

    rule extract_attention:
        input:
            crops=get_crops,
            manifest=result("manifest.parquet"),
            weights=get_local_weights,
        output:
            predictions=result("shards/{model}/predictions_{shard}.parquet"),
            attention=result("attention/{model}/shard_{shard}.npy"),
            sidecar=result("attention/{model}/shard_{shard}.json"),
        params:
            model=get_model_settings,
            batch_size=EXTRACT_SETTINGS["batch_size"],
            shard_size=SHARD_SIZE,
            shard_count=lambda w: len(get_shards()),
            precision=EXTRACT_SETTINGS["precision"],
            compile_mode=EXTRACT_SETTINGS["compile"],
            dtype=EXTRACT_SETTINGS["dtype"],
            code=code("extract.py"),
        threads: EXTRACT_SETTINGS["threads"]
        resources:
            **EXTRACT_RESOURCES,
        conda:
            "../../envs/vitprobe.yaml"
        log:
            result("logs/extract/{model}_{shard}.log"),
        benchmark:
            result("benchmarks/extract/{model}_{shard}.tsv")
        script:
            "../scripts/extract.py"

    rule reduce:
        input:
            attention=result("attention/{model}/shard_{shard}.npy"),
            sidecar=result("attention/{model}/shard_{shard}.json"),
        output:
            **REDUCTIONS,
        params:
            analysis=REDUCER_SETTINGS,
            code=code("reduce.py"),
        resources:
            mem_mb=2000,
        conda:
            "../../envs/vitprobe.yaml"
        log:
            result("logs/reduce/{model}_{shard}.log"),
        benchmark:
            result("benchmarks/reduce/{model}_{shard}.tsv")
        script:
            "../scripts/reduce.py"

else:

    rule extract:
        input:
            crops=get_crops,
            manifest=result("manifest.parquet"),
            weights=get_local_weights,
        output:
            predictions=result("shards/{model}/predictions_{shard}.parquet"),
            **REDUCTIONS,
        params:
            model=get_model_settings,
            batch_size=EXTRACT_SETTINGS["batch_size"],
            shard_size=SHARD_SIZE,
            shard_count=lambda w: len(get_shards()),
            precision=EXTRACT_SETTINGS["precision"],
            compile_mode=EXTRACT_SETTINGS["compile"],
            analysis=REDUCER_SETTINGS,
            attention_kernel=EXTRACT_SETTINGS["attention_kernel"],
            code=code("extract.py"),
        threads: EXTRACT_SETTINGS["threads"]
        resources:
            **EXTRACT_RESOURCES,
        conda:
            "../../envs/vitprobe.yaml"
        log:
            result("logs/extract/{model}_{shard}.log"),
        benchmark:
            result("benchmarks/extract/{model}_{shard}.tsv")
        script:
            "../scripts/extract.py"


rule model_parameters:
    input:
        weights=get_local_weights,
    output:
        result("parameters/{model}.npz"),
    params:
        model=get_model_settings,
        code=code("parameters.py"),
    resources:
        mem_mb=2000,
    conda:
        "../../envs/vitprobe.yaml"
    log:
        result("logs/parameters/{model}.log"),
    script:
        "../scripts/parameters.py"
