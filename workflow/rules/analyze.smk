if KEEP_ATTENTION:

    rule reduce:
        input:
            attention=f"{OUT}/attention/{{model}}/shard_{{shard}}.npy",
            sidecar=f"{OUT}/attention/{{model}}/shard_{{shard}}.json",
            code=REDUCTION_CODE + library("api.py", "shards.py", "atomic.py"),
        output:
            **reduction_outputs(),
        params:
            analysis=REDUCER_SETTINGS,
        resources:
            mem_mb=2000,
        conda:
            "../../envs/vitprobe.yaml"
        log:
            f"{OUT}/logs/reduce/{{model}}_{{shard}}.log",
        benchmark:
            f"{OUT}/benchmarks/reduce/{{model}}_{{shard}}.tsv"
        script:
            "../scripts/reduce.py"


rule aggregate:
    input:
        per_image=lambda w: [f"{OUT}/shards/{m}/distance_{s}.parquet" for m in MODELS for s in shards()],
        predictions=lambda w: [f"{OUT}/shards/{m}/predictions_{s}.parquet" for m in MODELS for s in shards()],
        code=ANALYSIS_CODE,
    output:
        per_image=report(
            f"{OUT}/attention_distance_per_image.parquet",
            caption="../report/per_image.rst",
            category="Tables",
        ),
        mean=report(
            f"{OUT}/mean_attention_distance.parquet",
            caption="../report/mean_distance.rst",
            category="Tables",
        ),
        predictions=report(
            f"{OUT}/predictions.parquet", caption="../report/predictions.rst", category="Tables"
        ),
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/aggregate.log",
    script:
        "../scripts/aggregate.py"


rule maps:
    input:
        maps=lambda w: [f"{OUT}/shards/{w.model}/maps_{s}.npz" for s in map_shards(w)],
        crops=map_crop_shards,
        code=ANALYSIS_CODE,
    output:
        f"{OUT}/maps/{{model}}.npz",
    params:
        map_images=MAP_COUNT,
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/maps/{{model}}.log",
    script:
        "../scripts/maps.py"
