from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.token_norms import combine_token_norms  # noqa: E402  (after the thread limit)

combine_token_norms(list(snakemake.input), snakemake.output[0])
