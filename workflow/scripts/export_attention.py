from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.export import export_attention  # noqa: E402  (after the thread limit)

p = snakemake.params
export_attention(
    snakemake.wildcards.model,
    p.model,
    snakemake.input.manifest,
    list(snakemake.input.crops),
    p.shard_size,
    p.images,
    snakemake.output[0],
    precision=p.precision,
    batch_size=p.batch_size,
)
