from vitprobe.analysis import merge_maps
from vitprobe.runlog import start

start(snakemake.log)
merge_maps(snakemake.input.maps, snakemake.input.crops, snakemake.params.map_images, snakemake.output[0])
