from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures import consecutive  # noqa: E402
from vitprobe.pipeline.figures.representations import cka  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
labels = json.loads(p.labels)
for table, out in zip(i.within, o.within):
    cka([table], labels, p.features, out)
for tables, out in zip(consecutive(list(i.between), p.pair_counts), o.between):
    cka(tables, labels, p.features, out)
