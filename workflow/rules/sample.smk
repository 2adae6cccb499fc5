checkpoint sample:
    output:
        manifest=result("manifest.parquet"),
        rejected=result("rejected.parquet"),
    params:
        images=config["images"],
        listing=get_image_listing,
        code=code("sample.py"),
    conda:
        "../../envs/vitprobe.yaml"
    log:
        result("logs/sample.log"),
    script:
        "../scripts/sample.py"


rule prepare:
    input:
        manifest=result("manifest.parquet"),
    output:
        result("crops/{geometry}/shard_{shard}.npy"),
    params:
        image_size=lambda w: GEOMETRIES[w.geometry].spec.image_size,
        geometry=lambda w: GEOMETRIES[w.geometry].preprocess.geometry_dict(),
        shard_size=SHARD_SIZE,
        code=code("prepare.py"),
    conda:
        "../../envs/vitprobe.yaml"
    log:
        result("logs/prepare/{geometry}_{shard}.log"),
    script:
        "../scripts/prepare.py"
