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
        crop_path("{geometry}"),
    log:
        result("logs/prepare/{geometry}_{shard}.log"),
    conda:
        "../../envs/vitprobe.yaml"
    params:
        image_size=get_image_size,
        geometry=get_geometry,
        shard_size=SHARD_SIZE,
        code=code("prepare.py"),
    script:
        "../scripts/prepare.py"
