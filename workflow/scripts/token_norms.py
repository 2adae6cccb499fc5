from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.run_shards import RunShards  # noqa: E402
from vitprobe.pipeline.token_norms import model_token_norms  # noqa: E402  (after the thread limit)

i, p = snakemake.input, snakemake.params
shards = RunShards(i.manifest, p.shard_size, p.models)
model_token_norms(snakemake.wildcards.model, list(i.shards), p.prefix_kinds, p.rule, snakemake.output[0], shards)
