from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.cka import combine_cka  # noqa: E402  (after the thread limit)

combine_cka(list(snakemake.input), snakemake.output[0])
