checkpoint sample:
    input:
        code=SAMPLE_CODE,
    output:
        manifest=f"{OUT}/manifest.parquet",
        rejected=f"{OUT}/rejected.parquet",
    params:
        images=config["images"],
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/sample.log",
    script:
        "../scripts/sample.py"


rule prepare:
    input:
        manifest=f"{OUT}/manifest.parquet",
        code=SAMPLE_CODE,
    output:
        f"{OUT}/crops/{{geometry}}/shard_{{shard}}.npy",
    params:
        image_size=lambda w: GEOMETRIES[w.geometry].spec.image_size,
        geometry=lambda w: GEOMETRIES[w.geometry].preprocess.geometry_dict(),
        shard_size=SHARD_SIZE,
    conda:
        "../../envs/vitprobe.yaml"
    log:
        f"{OUT}/logs/prepare/{{geometry}}_{{shard}}.log",
    script:
        "../scripts/prepare.py"
