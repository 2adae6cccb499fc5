from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.attribution import combine_attribution  # noqa: E402  (after the thread limit)

i, o = snakemake.input, snakemake.output
combine_attribution(list(i.tables), list(i.curves), o.table, o.curves)
