from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.aggregate import aggregate  # noqa: E402  (after the thread limit)

i, o = snakemake.input, snakemake.output
aggregate(i.per_image, i.predictions, o.per_image, o.mean, o.predictions, o.accuracy)
