rule aggregate:
    input:
        per_image=get_all_distances,
        predictions=get_all_predictions,
        manifest=result("manifest.parquet"),
        weights=get_all_local_weights,
    output:
        per_image=report(
            result("attention_distance_per_image.parquet"),
            caption="../report/per_image.rst",
            category="Tables",
        ),
        mean=report(
            result("mean_attention_distance.parquet"),
            caption="../report/mean_distance.rst",
            category="Tables",
        ),
        predictions=report(result("predictions.parquet"), caption="../report/predictions.rst", category="Tables"),
        accuracy=report(result("accuracy.parquet"), caption="../report/accuracy_table.rst", category="Tables"),
    log:
        result("logs/aggregate.log"),
    benchmark:
        result("benchmarks/aggregate.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=memory_for_inputs(1000, 10),
    params:
        models=report_param({m: model_settings(m) for m in MODELS}),
        shard_size=SHARD_SIZE,
        code=code("aggregate.py"),
    message:
        "aggregate, log: {log}"
    script:
        "../scripts/aggregate.py"


rule maps:
    input:
        maps=get_model_maps,
        map_images=get_model_map_images,
        crops=get_map_crops,
        manifest=result("manifest.parquet"),
        weights=get_local_weights,
    output:
        result("maps/{model}.npz"),
    log:
        result("logs/maps/{model}.log"),
    benchmark:
        result("benchmarks/maps/{model}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        map_images=MAP_IMAGES,
        models=get_shard_models,
        shard_size=SHARD_SIZE,
        code=code("maps.py"),
    message:
        "maps {wildcards.model}, log: {log}"
    script:
        "../scripts/maps.py"


rule pca_features:
    # The map images' patch features come from the extract program (maps/): no model here.
    input:
        maps=result("maps/{model}.npz"),
    output:
        result("pca/{model}.npz"),
    log:
        result("logs/pca/{model}.log"),
    benchmark:
        result("benchmarks/pca/{model}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        model=get_model_settings,
        threshold=PCA_SETTINGS["threshold"],
        code=code("pca_features.py"),
    message:
        "pca_features {wildcards.model}, log: {log}"
    script:
        "../scripts/pca_features.py"
