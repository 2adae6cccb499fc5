from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.maps import merge_maps  # noqa: E402  (after the thread limit)

merge_maps(snakemake.input.maps, snakemake.input.crops, snakemake.params.map_images, snakemake.output[0])
