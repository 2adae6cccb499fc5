# Token norms from the norms each extract job stored: one table per model (a token_norms option
# reruns only these rules and their figures; no model runs), then every model in token_norms.parquet.


rule token_norms:
    input:
        get_model_representations,
    output:
        result("token_norms/{model}.parquet"),
    log:
        result("logs/token_norms/{model}.log"),
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=2000,
    params:
        prefix_kinds=get_prefix_kinds,
        rule=NORM_SETTINGS,
        code=code("token_norms.py"),
    script:
        "../scripts/token_norms.py"


rule token_norms_combine:
    input:
        [result(f"token_norms/{m}.parquet") for m in MODELS],
    output:
        report(result("token_norms.parquet"), caption="../report/token_norms_table.rst", category="Tables"),
    log:
        result("logs/token_norms/combine.log"),
    conda:
        "../../envs/vitprobe.yaml"
    params:
        code=code("token_norms_combine.py"),
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
    conda:
        "../../envs/vitprobe.yaml"
    params:
        models=list(MODELS),
        prefix_kinds=PREFIX_KINDS,
        labels=report_param(LABELS),
        code=code("figure_token_norms.py"),
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
    conda:
        "../../envs/vitprobe.yaml"
    params:
        models=list(MODELS),
        prefix_kinds=PREFIX_KINDS,
        labels=report_param(LABELS),
        code=code("figure_high_norm.py"),
    script:
        "../scripts/figure_high_norm.py"
