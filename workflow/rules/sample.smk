checkpoint sample:
    output:
        manifest=result("manifest.parquet"),
        rejected=result("rejected.parquet"),
    log:
        result("logs/sample.log"),
    conda:
        "../../envs/vitprobe.yaml"
    params:
        images=config["images"],
        listing=get_image_listing,
        code=code("sample.py"),
    script:
        "../scripts/sample.py"


rule prepare:
    input:
        manifest=result("manifest.parquet"),
    output:
        result("crops/{geometry}/shard_{shard}.npy"),
    log:
        result("logs/prepare/{geometry}_{shard}.log"),
    conda:
        "../../envs/vitprobe.yaml"
    params:
        image_size=lambda w: GEOMETRIES[w.geometry].spec.image_size,
        geometry=lambda w: GEOMETRIES[w.geometry].preprocess.geometry_dict(),
        shard_size=SHARD_SIZE,
        code=code("prepare.py"),
    script:
        "../scripts/prepare.py"
