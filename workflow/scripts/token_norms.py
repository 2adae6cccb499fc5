from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.token_norms import model_token_norms  # noqa: E402  (after the thread limit)

p = snakemake.params
model_token_norms(snakemake.wildcards.model, list(snakemake.input), p.prefix_kinds, p.rule, snakemake.output[0])
