from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
import json  # noqa: E402

from vitprobe.pipeline.figures.distance import distance_comparison  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
distance_comparison(i.table, p.models, json.loads(p.labels), o[0])
