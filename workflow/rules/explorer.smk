# The interactive attention explorer: one self-contained page for the map images.
# Its attention rows come from the extract program of the shards that hold the map images (kept
# in maps/), never from the full run's shards; no model runs here.


rule explorer:
    input:
        maps=[result(f"maps/{m}.npz") for m in MODELS],
        table=result("mean_attention_distance.parquet"),
        attribution=[result(f"attribution/{m}.npz") for m in MODELS] if ATTRIBUTION_MAP_COUNT else [],
    output:
        report(result("explorer.html"), caption="../report/explorer.rst", category="Explorer"),
    log:
        result("logs/explorer.log"),
    benchmark:
        result("benchmarks/explorer.tsv")
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
        images=EXPLORER_SETTINGS["images"] or MAP_IMAGES,
        blocks=EXPLORER_SETTINGS["blocks"],
    message:
        "explorer, log: {log}"
    script:
        "../scripts/explorer.py"
