from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.cka import cka_pair  # noqa: E402  (after the thread limit)
from vitprobe.pipeline.run_shards import RunShards  # noqa: E402

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards
cka_pair(
    w.model_a, i.a, w.model_b, i.b, snakemake.params.features, snakemake.output[0], RunShards(i.manifest, p.shard_size, p.models)
)
