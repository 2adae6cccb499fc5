# Every figure reads tables and small arrays only; a figure option reruns only these rules.

rule figure_distance_by_block:
    input:
        table=f"{OUT}/mean_attention_distance.parquet",
        code=FIGURE_CODE,
    output:
        report(
            f"{OUT}/figures/distance_by_block_{{model}}.png",
            caption="../report/distance_by_block.rst",
            category="Mean attention distance",
        ),
    params:
        label=lambda w: LABELS[w.model],
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/figures/distance_by_block_{{model}}.log",
    script:
        "../scripts/figure.py"


rule figure_distance_comparison:
    input:
        table=f"{OUT}/mean_attention_distance.parquet",
        code=FIGURE_CODE,
    output:
        report(
            f"{OUT}/figures/distance_comparison_{{comparison}}.png",
            caption="../report/distance_comparison.rst",
            category="Mean attention distance",
        ),
    params:
        models=lambda w: COMPARISONS[w.comparison],
        labels=LABELS,
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/figures/distance_comparison_{{comparison}}.log",
    script:
        "../scripts/figure.py"


rule figure_rollout:
    input:
        maps=expand(f"{OUT}/maps/{{model}}.npz", model=MODELS),
        code=FIGURE_CODE,
    output:
        report(f"{OUT}/figures/attention_rollout.png", caption="../report/rollout.rst", category="Attention maps"),
    params:
        models=list(MODELS),
        labels=LABELS,
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/figures/attention_rollout.log",
    script:
        "../scripts/figure.py"


rule figure_cls_heads:
    input:
        maps=f"{OUT}/maps/{{model}}.npz",
        code=FIGURE_CODE,
    # One job per model for all its map images: a figure job costs more to start than to draw.
    output:
        [
            report(
                f"{OUT}/figures/cls_attention_heads_{{model}}_image{index}.png",
                caption="../report/cls_heads.rst",
                category="Attention maps",
            )
            for index in range(MAP_COUNT)
        ],
    params:
        label=lambda w: LABELS[w.model],
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/figures/cls_attention_heads_{{model}}.log",
    script:
        "../scripts/figure.py"


rule figure_patch_filters:
    input:
        parameters=f"{OUT}/parameters/{{model}}.npz",
        code=FIGURE_CODE,
    output:
        filters=report(
            f"{OUT}/figures/patch_embedding_filters_{{model}}.png",
            caption="../report/patch_filters.rst",
            category="Embeddings",
        ),
        components=report(
            f"{OUT}/figures/patch_embedding_components_{{model}}.png",
            caption="../report/patch_components.rst",
            category="Embeddings",
        ),
    params:
        label=lambda w: LABELS[w.model],
        filters=FIGURE_SETTINGS["filters"],
        components=FIGURE_SETTINGS["components"],
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/figures/patch_embedding_{{model}}.log",
    script:
        "../scripts/figure.py"


rule figure_position_similarity:
    input:
        parameters=f"{OUT}/parameters/{{model}}.npz",
        code=FIGURE_CODE,
    output:
        cosine=report(
            f"{OUT}/figures/position_embedding_cosine_{{model}}.png",
            caption="../report/position_cosine.rst",
            category="Embeddings",
        ),
        dot=report(
            f"{OUT}/figures/position_embedding_dot_{{model}}.png",
            caption="../report/position_dot.rst",
            category="Embeddings",
        ),
    params:
        label=lambda w: LABELS[w.model],
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/figures/position_embedding_{{model}}.log",
    script:
        "../scripts/figure.py"


rule figure_predictions:
    input:
        predictions=f"{OUT}/predictions.parquet",
        # The map images, as the first model with a head saw them.
        maps=[f"{OUT}/maps/{HEADED[0]}.npz"] if HEADED and MAP_COUNT else [],
        code=FIGURE_CODE,
    output:
        report(f"{OUT}/figures/top1_predictions.png", caption="../report/accuracy.rst", category="Predictions"),
    params:
        published={m: MODELS[m].published_top1 for m in HEADED if MODELS[m].published_top1 is not None},
        labels=LABELS,
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/figures/top1_predictions.log",
    script:
        "../scripts/figure.py"


rule figure_top1_gallery:
    input:
        predictions=f"{OUT}/predictions.parquet",
        maps=f"{OUT}/maps/{{model}}.npz",
        code=FIGURE_CODE,
    output:
        report(f"{OUT}/figures/top1_gallery_{{model}}.png", caption="../report/gallery.rst", category="Predictions"),
    params:
        label=lambda w: LABELS[w.model],
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/figures/top1_gallery_{{model}}.log",
    script:
        "../scripts/figure.py"


rule figure_video:
    input:
        video=config["video"]["path"] if config.get("video") else [],
        weights=local_weights,
        code=MODEL_CODE + FIGURE_CODE + ATTENTION_METRICS_CODE,
    output:
        report(
            f"{OUT}/figures/cls_attention_video_{{model}}.gif",
            caption="../report/video.rst",
            category="Attention maps",
        ),
    params:
        model=model_settings,
        video=config.get("video"),
    resources:
        mem_mb=4000,
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/figures/cls_attention_video_{{model}}.log",
    script:
        "../scripts/figure.py"
