from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures.parameters import position_similarity  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
for parameters, label, cosine, dot in zip(i.parameters, json.loads(p.labels), o.cosine, o.dot):
    position_similarity(parameters, label, cosine, dot)
