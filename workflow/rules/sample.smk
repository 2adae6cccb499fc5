checkpoint sample:
    output:
        manifest=result("manifest.parquet"),
        rejected=result("rejected.parquet"),
    log:
        result("logs/sample.log"),
    benchmark:
        result("benchmarks/sample.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        # Checking a 196 MP JPEG takes 163 MB (decoded at 1/8 scale), a 3 GB non-image 150 MB
        # (refused from its header); a PNG near the 200 MP limit decodes whole.
        mem_mb=2000,
    params:
        images=config["images"],
        listing=get_image_listing,
        code=code("sample.py"),
    message:
        "sample, log: {log}"
    script:
        "../scripts/sample.py"


rule prepare:
    input:
        manifest=result("manifest.parquet"),
    output:
        crop_path("{geometry}"),
    log:
        result("logs/prepare/{geometry}_{shard}.log"),
    benchmark:
        result("benchmarks/prepare/{geometry}_{shard}.tsv")
    conda:
        "../../envs/vitprobe.yaml"
    resources:
        # Cropping a 196 MP JPEG (under the 200 MP limit) peaks at 911 MB: decoded whole (4 bytes a
        # pixel), held once. A transparent PNG that size is composited on white in copies.
        mem_mb=3000,
    params:
        image_size=get_image_size,
        geometry=get_geometry,
        shard_size=SHARD_SIZE,
        code=code("prepare.py"),
    message:
        "prepare {wildcards.geometry} shard {wildcards.shard}, log: {log}"
    script:
        "../scripts/prepare.py"
