# The interactive attention explorer: one self-contained page for the map images.
# Its attention comes from one small forward pass over the map images' crops (kept in maps/),
# never from the full run's shards.


rule explorer:
    input:
        maps=[result(f"maps/{m}.npz") for m in MODELS],
        table=result("mean_attention_distance.parquet"),
        weights=lambda w: [path for m in MODELS for path in local_weights(MODELS[m])],
    output:
        report(result("explorer.html"), caption="../report/explorer.rst", category="Explorer"),
    log:
        result("logs/explorer.log"),
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        mem_mb=4000,
    params:
        code=code("explorer.py"),
        page=EXPLORER_PAGE,
        models=report_param({m: model_settings(m) for m in MODELS}),
        labels=report_param(LABELS),
        comparisons=list(COMPARISONS.values()),
        images=EXPLORER_SETTINGS["images"] or MAP_COUNT,
        blocks=EXPLORER_SETTINGS["blocks"],
    script:
        "../scripts/explorer.py"
