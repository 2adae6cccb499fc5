# Token norms from the norms each extract job stored: one table per model (a token_norms option
# reruns only these rules and their figures; no model runs), then every model in token_norms.parquet.


rule token_norms:
    input:
        shards=get_model_representations,
        manifest=result("manifest.parquet"),
        weights=get_local_weights,
    output:
        result("token_norms/{model}.parquet"),
    log:
        result("logs/token_norms/{model}.log"),
    benchmark:
        result("benchmarks/token_norms/{model}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=memory_for_inputs(1000, 5),
    params:
        prefix_kinds=get_prefix_kinds,
        rule=NORM_SETTINGS,
        models=get_shard_models,
        shard_size=SHARD_SIZE,
        code=code("token_norms.py"),
    message:
        "token_norms {wildcards.model}, log: {log}"
    script:
        "../scripts/token_norms.py"


rule token_norms_combine:
    input:
        [result(f"token_norms/{m}.parquet") for m in MODELS],
    output:
        report(result("token_norms.parquet"), caption="../report/token_norms_table.rst", category="Tables"),
    log:
        result("logs/token_norms/combine.log"),
    benchmark:
        result("benchmarks/token_norms/combine.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=memory_for_inputs(1000, 10),
    params:
        code=code("token_norms_combine.py"),
    message:
        "token_norms_combine, log: {log}"
    script:
        "../scripts/token_norms_combine.py"


rule figure_token_norms:
    input:
        shards=get_all_representations,
        tables=[result(f"token_norms/{m}.parquet") for m in MODELS],
    output:
        [
            report(result(f"figures/token_norms_{m}.png"), caption="../report/token_norms.rst", category="Representations")
            for m in MODELS
        ],
    log:
        result("logs/figures/token_norms.log"),
    benchmark:
        result("benchmarks/figures/token_norms.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=memory_for_inputs(1000, 10),
    params:
        models=list(MODELS),
        prefix_kinds=PREFIX_KINDS,
        labels=report_param(LABELS),
        code=code("figure_token_norms.py"),
    message:
        "figure_token_norms, log: {log}"
    script:
        "../scripts/figure_token_norms.py"


rule figure_high_norm:
    input:
        maps=[result(f"maps/{m}.npz") for m in MODELS],
        shards=get_all_map_representations,
        tables=[result(f"token_norms/{m}.parquet") for m in MODELS],
    output:
        [
            report(result(f"figures/high_norm_{m}.png"), caption="../report/high_norm.rst", category="Attention maps")
            for m in MODELS
        ],
    log:
        result("logs/figures/high_norm.log"),
    benchmark:
        result("benchmarks/figures/high_norm.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=memory_for_inputs(1000, 10),
    params:
        models=list(MODELS),
        prefix_kinds=PREFIX_KINDS,
        labels=report_param(LABELS),
        code=code("figure_high_norm.py"),
    message:
        "figure_high_norm, log: {log}"
    script:
        "../scripts/figure_high_norm.py"
