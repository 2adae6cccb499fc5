from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.prepare import prepare  # noqa: E402  (after the thread limit)

p = snakemake.params
prepare(snakemake.input.manifest, int(snakemake.wildcards.shard), p.shard_size, p.image_size, p.geometry, snakemake.output[0])
