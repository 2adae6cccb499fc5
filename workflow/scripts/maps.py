from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.maps import merge_maps  # noqa: E402  (after the thread limit)

i = snakemake.input
merge_maps(i.maps, i.map_images, i.crops, snakemake.params.map_images, snakemake.output[0])
