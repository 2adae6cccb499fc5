from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures.distance import distance_comparison  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
labels = json.loads(p.labels)
for models, out in zip(p.comparisons, o):
    distance_comparison(i.table, models, labels, out)
