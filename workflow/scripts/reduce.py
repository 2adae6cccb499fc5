from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.reduce import reduce  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
reduce(i.attention, i.manifest, w.model, p.model, int(w.shard), p.shard_size, o.per_image, o.maps, **p.analysis)
