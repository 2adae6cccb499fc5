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


rule figure_cka_model:
    input:
        result("cka/{model}/{model}.parquet"),
    output:
        report(result("figures/cka_within_{model}.png"), caption="../report/cka_model.rst", category="Representations"),
    log:
        result("logs/figures/cka_within_{model}.log"),
    benchmark:
        result("benchmarks/figures/cka_within_{model}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        labels=get_model_labels,
        features=CKA_SETTINGS["features"],
        code=code("figure_cka.py"),
    message:
        "figure_cka_model {wildcards.model}, log: {log}"
    script:
        "../scripts/figure_cka.py"


rule figure_cka_comparison:
    input:
        get_comparison_cka_tables,
    output:
        report(result("figures/cka_between_{comparison}.png"), caption="../report/cka_comparison.rst", category="Representations"),
    log:
        result("logs/figures/cka_between_{comparison}.log"),
    benchmark:
        result("benchmarks/figures/cka_between_{comparison}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        labels=get_comparison_labels,
        features=CKA_SETTINGS["features"],
        code=code("figure_cka.py"),
    message:
        "figure_cka_comparison {wildcards.comparison}, log: {log}"
    script:
        "../scripts/figure_cka.py"
