# Every figure reads tables and small arrays only; a figure option reruns only these rules.
# Each rule has its own script, so its code is only what that figure imports. A figure job costs
# more to start (Python, pandas, matplotlib: about 4 of its 5 s) than to draw one model's figure,
# so each figure kind is one job drawing every model's (or comparison's); only the video, which
# runs its model over the clip, is a job of its own.


rule figure_distance_by_block:
    input:
        table=result("mean_attention_distance.parquet"),
    output:
        [
            report(
                result(f"figures/distance_by_block_{model}.png"),
                caption="../report/distance_by_block.rst",
                category="Mean attention distance",
            )
            for model in MODELS
        ],
    log:
        result("logs/figures/distance_by_block.log"),
    benchmark:
        result("benchmarks/figures/distance_by_block.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        code=code("figure_distance_by_block.py"),
        models=list(MODELS),
        labels=report_param(LABELS),
    message:
        "figure_distance_by_block, log: {log}"
    script:
        "../scripts/figure_distance_by_block.py"


rule figure_distance_comparison:
    input:
        table=result("mean_attention_distance.parquet"),
    output:
        [
            report(
                result(f"figures/distance_comparison_{name}.png"),
                caption="../report/distance_comparison.rst",
                category="Mean attention distance",
            )
            for name in COMPARISONS
        ],
    log:
        result("logs/figures/distance_comparison.log"),
    benchmark:
        result("benchmarks/figures/distance_comparison.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        code=code("figure_distance_comparison.py"),
        comparisons=list(COMPARISONS.values()),
        labels=report_param(LABELS),
    message:
        "figure_distance_comparison, log: {log}"
    script:
        "../scripts/figure_distance_comparison.py"


rule figure_rollout:
    input:
        maps=[result(f"maps/{m}.npz") for m in MODELS],
    output:
        report(result("figures/attention_rollout.png"), caption="../report/rollout.rst", category="Attention maps"),
    log:
        result("logs/figures/attention_rollout.log"),
    benchmark:
        result("benchmarks/figures/attention_rollout.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        code=code("figure_rollout.py"),
        models=list(MODELS),
        labels=report_param(LABELS),
        queries=MAP_QUERIES,
    message:
        "figure_rollout, log: {log}"
    script:
        "../scripts/figure_rollout.py"


rule figure_cls_heads:
    input:
        maps=[result(f"maps/{m}.npz") for m in MODELS],
    output:
        [
            report(
                result(f"figures/cls_attention_heads_{model}_image{index}.png"),
                caption="../report/cls_heads.rst",
                category="Attention maps",
            )
            for model in MODELS
            for index in range(MAP_IMAGES)
        ],
    log:
        result("logs/figures/cls_attention_heads.log"),
    benchmark:
        result("benchmarks/figures/cls_attention_heads.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        code=code("figure_cls_heads.py"),
        models=list(MODELS),
        labels=report_param(LABELS),
        queries=MAP_QUERIES,
    message:
        "figure_cls_heads, log: {log}"
    script:
        "../scripts/figure_cls_heads.py"


rule figure_pca:
    input:
        pca=[result(f"pca/{m}.npz") for m in PCA_MODELS],
    output:
        [report(result(f"figures/pca_{m}.png"), caption="../report/pca.rst", category="Representations") for m in PCA_MODELS],
    log:
        result("logs/figures/pca.log"),
    benchmark:
        result("benchmarks/figures/pca.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        code=code("figure_pca.py"),
        labels=report_param([LABELS[m] for m in PCA_MODELS]),
    message:
        "figure_pca, log: {log}"
    script:
        "../scripts/figure_pca.py"


rule figure_patch_filters:
    input:
        parameters=[result(f"parameters/{model}.npz") for model in MODELS],
    output:
        filters=[
            report(
                result(f"figures/patch_embedding_filters_{model}.png"),
                caption="../report/patch_filters.rst",
                category="Embeddings",
            )
            for model in MODELS
        ],
        components=[
            report(
                result(f"figures/patch_embedding_components_{model}.png"),
                caption="../report/patch_components.rst",
                category="Embeddings",
            )
            for model in MODELS
        ],
    log:
        result("logs/figures/patch_embedding.log"),
    benchmark:
        result("benchmarks/figures/patch_embedding.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        code=code("figure_patch_filters.py"),
        labels=report_param([LABELS[model] for model in MODELS]),
        filters=FIGURE_SETTINGS["filters"],
        components=FIGURE_SETTINGS["components"],
    message:
        "figure_patch_filters, log: {log}"
    script:
        "../scripts/figure_patch_filters.py"


rule figure_position_similarity:
    input:
        parameters=[result(f"parameters/{model}.npz") for model in MODELS],
    output:
        cosine=[
            report(
                result(f"figures/position_embedding_cosine_{model}.png"),
                caption="../report/position_cosine.rst",
                category="Embeddings",
            )
            for model in MODELS
        ],
        dot=[
            report(
                result(f"figures/position_embedding_dot_{model}.png"),
                caption="../report/position_dot.rst",
                category="Embeddings",
            )
            for model in MODELS
        ],
    log:
        result("logs/figures/position_embedding.log"),
    benchmark:
        result("benchmarks/figures/position_embedding.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        code=code("figure_position_similarity.py"),
        labels=report_param([LABELS[model] for model in MODELS]),
    message:
        "figure_position_similarity, log: {log}"
    script:
        "../scripts/figure_position_similarity.py"


rule figure_predictions:
    input:
        accuracy=result("accuracy.parquet"),
        predictions=result("predictions.parquet"),
        # The map images, as the first model with a head saw them.
        maps=[result(f"maps/{HEADED[0]}.npz")] if HEADED and MAP_IMAGES else [],
    output:
        report(result("figures/top1_predictions.png"), caption="../report/accuracy.rst", category="Predictions"),
    log:
        result("logs/figures/top1_predictions.log"),
    benchmark:
        result("benchmarks/figures/top1_predictions.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=memory_for_inputs(1000, 10),
    params:
        code=code("figure_predictions.py"),
        published={m: MODELS[m].published_top1 for m in HEADED if MODELS[m].published_top1 is not None},
        labels=report_param(LABELS),
    message:
        "figure_predictions, log: {log}"
    script:
        "../scripts/figure_predictions.py"


rule figure_top1_gallery:
    input:
        predictions=result("predictions.parquet"),
        maps=[result(f"maps/{m}.npz") for m in HEADED],
    output:
        [report(result(f"figures/top1_gallery_{m}.png"), caption="../report/gallery.rst", category="Predictions") for m in HEADED],
    log:
        result("logs/figures/top1_gallery.log"),
    benchmark:
        result("benchmarks/figures/top1_gallery.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=memory_for_inputs(1000, 10),
    params:
        code=code("figure_top1_gallery.py"),
        models=HEADED,
        labels=report_param([LABELS[m] for m in HEADED]),
    message:
        "figure_top1_gallery, log: {log}"
    script:
        "../scripts/figure_top1_gallery.py"


rule figure_video:
    input:
        video=config["video"]["path"] if config.get("video") else [],
        weights=get_local_weights,
    output:
        report(
            result("figures/cls_attention_video_{model}.gif"),
            caption="../report/video.rst",
            category="Attention maps",
        ),
    log:
        result("logs/figures/cls_attention_video_{model}.log"),
    benchmark:
        result("benchmarks/figures/cls_attention_video_{model}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=4000,
    params:
        code=code("figure_video.py"),
        model=get_model_settings_text,
        video=report_param(config.get("video")),
    message:
        "figure_video {wildcards.model}, log: {log}"
    script:
        "../scripts/figure_video.py"
