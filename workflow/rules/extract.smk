rule extract:
    input:
        crops=lambda w: f"{OUT}/crops/{MODELS[w.model].geometry}/shard_{w.shard}.npy",
        manifest=f"{OUT}/manifest.parquet",
        weights=local_weights,
        code=EXTRACT_CODE,
    output:
        **extract_outputs(),
    params:
        model=model_settings,
        batch_size=EXTRACT_SETTINGS["batch_size"],
        shard_size=SHARD_SIZE,
        precision=EXTRACT_SETTINGS["precision"],
        **extract_params(),
    threads: EXTRACT_SETTINGS["threads"]
    resources:
        mem_mb=EXTRACT_SETTINGS["mem_mb"],
        runtime=60,
        gpu=EXTRACT_SETTINGS["gpus"],
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/extract/{{model}}_{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/extract/{{model}}_{{shard}}.tsv"
    script:
        "../scripts/extract.py"


rule model_parameters:
    input:
        weights=local_weights,
        code=MODEL_CODE,
    output:
        f"{OUT}/parameters/{{model}}.npz",
    params:
        model=model_settings,
    resources:
        mem_mb=2000,
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/parameters/{{model}}.log",
    script:
        "../scripts/parameters.py"
