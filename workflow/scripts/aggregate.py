from vitprobe.analysis import aggregate
from vitprobe.runlog import start

start(snakemake.log)
aggregate(
    snakemake.input.per_image,
    snakemake.input.predictions,
    snakemake.output.per_image,
    snakemake.output.mean,
    snakemake.output.predictions,
)
