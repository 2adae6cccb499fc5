from vitprobe.reduction import reduce
from vitprobe.runlog import start

start(snakemake.log)
reduce(snakemake.input.attention, snakemake.output.per_image, snakemake.output.maps, **snakemake.params.analysis)
