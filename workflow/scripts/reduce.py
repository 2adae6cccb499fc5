from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.reduce import reduce  # noqa: E402  (after the thread limit)

reduce(snakemake.input.attention, snakemake.output.per_image, snakemake.output.maps, **snakemake.params.analysis)
