# Linear CKA from the Gram matrices each extract job stored: one job per pair of models (a new
# comparison runs only its new pairs; no model reruns), then every pair in cka.parquet.


rule cka_pair:
    input:
        a=get_representations_a,
        b=get_representations_b,
        manifest=result("manifest.parquet"),
        weights=get_pair_local_weights,
    output:
        result("cka/{model_a}/{model_b}.parquet"),
    log:
        result("logs/cka/{model_a}_{model_b}.log"),
    benchmark:
        result("benchmarks/cka/{model_a}_{model_b}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=memory_for_inputs(1000, 2),
    params:
        features=CKA_SETTINGS["features"],
        models=get_pair_shard_models,
        shard_size=SHARD_SIZE,
        code=code("cka_pair.py"),
    message:
        "cka_pair {wildcards.model_a} {wildcards.model_b}, log: {log}"
    script:
        "../scripts/cka_pair.py"


rule cka:
    input:
        [result(f"cka/{a}/{b}.parquet") for a, b in CKA_PAIRS],
    output:
        report(result("cka.parquet"), caption="../report/cka_table.rst", category="Tables"),
    log:
        result("logs/cka/combine.log"),
    benchmark:
        result("benchmarks/cka/combine.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        code=code("cka.py"),
    message:
        "cka, log: {log}"
    script:
        "../scripts/cka.py"


# Every model's own blocks and every comparison: one job (the same code and options).
rule figure_cka:
    input:
        within=[result(f"cka/{m}/{m}.parquet") for m in MODELS],
        between=[result(f"cka/{a}/{b}.parquet") for models in COMPARISONS.values() for a, b in comparison_pairs(models)],
    output:
        within=[
            report(result(f"figures/cka_within_{m}.png"), caption="../report/cka_model.rst", category="Representations")
            for m in MODELS
        ],
        between=[
            report(result(f"figures/cka_between_{name}.png"), caption="../report/cka_comparison.rst", category="Representations")
            for name in COMPARISONS
        ],
    log:
        result("logs/figures/cka.log"),
    benchmark:
        result("benchmarks/figures/cka.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        labels=report_param(LABELS),
        pair_counts=[len(comparison_pairs(models)) for models in COMPARISONS.values()],
        features=CKA_SETTINGS["features"],
        code=code("figure_cka.py"),
    message:
        "figure_cka, log: {log}"
    script:
        "../scripts/figure_cka.py"
