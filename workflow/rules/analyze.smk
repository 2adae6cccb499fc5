rule aggregate:
    input:
        per_image=get_all_distances,
        predictions=get_all_predictions,
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
    conda:
        "../../envs/vitprobe.yaml"
    params:
        code=code("aggregate.py"),
    script:
        "../scripts/aggregate.py"


rule maps:
    input:
        maps=get_model_maps,
        crops=get_map_crops,
    output:
        result("maps/{model}.npz"),
    log:
        result("logs/maps/{model}.log"),
    conda:
        "../../envs/vitprobe.yaml"
    params:
        map_images=MAP_IMAGES,
        code=code("maps.py"),
    script:
        "../scripts/maps.py"


rule pca_features:
    # Its own forward pass over the few map images (the extract program keeps no patch features).
    input:
        crops=get_map_crops,
        manifest=result("manifest.parquet"),
        weights=get_local_weights,
    output:
        result("pca/{model}.npz"),
    log:
        result("logs/pca/{model}.log"),
    benchmark:
        result("benchmarks/pca/{model}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=EXTRACT_SETTINGS["mem_mb"],
    params:
        model=get_model_settings,
        map_images=MAP_IMAGES,
        threshold=PCA_SETTINGS["threshold"],
        code=code("pca_features.py"),
    script:
        "../scripts/pca_features.py"
