from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
import json  # noqa: E402

from vitprobe.pipeline.figures.token_norms import high_norm_maps  # noqa: E402  (after the thread limit)

i, p = snakemake.input, snakemake.params
high_norm_maps(i.maps, list(i.shards), i.table, p.prefix_kinds, json.loads(p.label), snakemake.output[0])
