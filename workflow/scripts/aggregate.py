from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.aggregate import aggregate  # noqa: E402  (after the thread limit)
from vitprobe.pipeline.run_shards import RunShards  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params
shards = RunShards(i.manifest, p.shard_size, json.loads(p.models))
aggregate(i.per_image, i.predictions, o.per_image, o.mean, o.predictions, o.accuracy, shards)
