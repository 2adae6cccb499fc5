from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures.distance import distance_by_block  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
labels = json.loads(p.labels)
for model, out in zip(p.models, o):
    distance_by_block(i.table, model, labels[model], out)
