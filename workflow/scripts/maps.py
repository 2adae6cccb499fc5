from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.maps import merge_maps  # noqa: E402  (after the thread limit)
from vitprobe.pipeline.run_shards import RunShards  # noqa: E402

i, p = snakemake.input, snakemake.params
merge_maps(
    i.maps, i.map_images, i.crops, snakemake.params.map_images, snakemake.output[0], RunShards(i.manifest, p.shard_size, p.models)
)
