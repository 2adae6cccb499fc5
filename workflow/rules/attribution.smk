# Class-specific attribution (docs/attribution.md): one job per model computes the maps of the
# first attribution.images manifest images in its compiled forward and backward pass and tests
# each map's faithfulness; then one table for every model, and the figures.


rule attribution:
    input:
        crops=get_attribution_crops,
        manifest=result("manifest.parquet"),
        weights=get_local_weights,
    output:
        maps=result("attribution/{model}.npz"),
        table=result("attribution/{model}.parquet"),
        curves=result("attribution/{model}_curves.parquet"),
    log:
        result("logs/attribution/{model}.log"),
    benchmark:
        result("benchmarks/attribution/{model}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    threads: EXTRACT_SETTINGS["threads"]
    resources:
        **EXTRACT_RESOURCES,
    params:
        model=get_model_settings,
        settings=ATTRIBUTION_SETTINGS,
        rollout={k: ANALYSIS_SETTINGS[k] for k in ("head_fusion", "discard_ratio")},
        batch_size=EXTRACT_SETTINGS["batch_size"],
        code=code("attribution.py"),
    message:
        "attribution {wildcards.model}, log: {log}"
    script:
        "../scripts/attribution.py"


rule attribution_table:
    input:
        tables=[result(f"attribution/{m}.parquet") for m in MODELS],
        curves=[result(f"attribution/{m}_curves.parquet") for m in MODELS],
    output:
        table=report(result("attribution.parquet"), caption="../report/attribution_table.rst", category="Tables"),
        curves=result("attribution_curves.parquet"),
    log:
        result("logs/attribution/table.log"),
    benchmark:
        result("benchmarks/attribution/table.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=2000,
    params:
        code=code("attribution_table.py"),
    message:
        "attribution_table, log: {log}"
    script:
        "../scripts/attribution_table.py"


rule figure_attribution_curves:
    input:
        table=result("attribution.parquet"),
        curves=result("attribution_curves.parquet"),
    output:
        curves=[
            report(
                result(f"figures/attribution_curves_{m}.png"), caption="../report/attribution_curves.rst", category="Attribution"
            )
            for m in MODELS
        ],
        auc=[
            report(result(f"figures/attribution_auc_{m}.png"), caption="../report/attribution_auc.rst", category="Attribution")
            for m in MODELS
        ],
    log:
        result("logs/figures/attribution_curves.log"),
    benchmark:
        result("benchmarks/figures/attribution_curves.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        models=list(MODELS),
        labels=report_param(LABELS),
        classifiers={m: MODELS[m].has_head for m in MODELS},
        code=code("figure_attribution_curves.py"),
    message:
        "figure_attribution_curves, log: {log}"
    script:
        "../scripts/figure_attribution_curves.py"


rule figure_attribution_maps:
    input:
        maps=[result(f"attribution/{m}.npz") for m in MODELS],
    output:
        [
            report(
                result(f"figures/attribution_maps_image{index}.png"),
                caption="../report/attribution_maps.rst",
                category="Attribution",
            )
            for index in range(ATTRIBUTION_MAP_COUNT)
        ],
    log:
        result("logs/figures/attribution_maps.log"),
    benchmark:
        result("benchmarks/figures/attribution_maps.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=1000,
    params:
        models=list(MODELS),
        labels=report_param(LABELS),
        code=code("figure_attribution_maps.py"),
    message:
        "figure_attribution_maps, log: {log}"
    script:
        "../scripts/figure_attribution_maps.py"
