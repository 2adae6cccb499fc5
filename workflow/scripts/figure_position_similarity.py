import json

from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.figures.parameters import position_similarity  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
position_similarity(i.parameters, json.loads(p.label), o.cosine, o.dot)
