import json

from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.figures.distance import distance_by_block  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
distance_by_block(i.table, w.model, json.loads(p.label), o[0])
