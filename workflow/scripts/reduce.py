from vitprobe.analysis import reduce
from vitprobe.runlog import start

start(snakemake.log)
settings = snakemake.params.analysis
reduce(
    snakemake.input.attention,
    snakemake.output.per_image,
    snakemake.output.maps,
    snakemake.params.map_image_ids,
    renormalize=settings["renormalize"],
    head_fusion=settings["head_fusion"],
    discard_ratio=settings["discard_ratio"],
)
