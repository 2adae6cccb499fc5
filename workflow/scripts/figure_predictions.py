import json

from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.figures.predictions import predictions  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
predictions(i.accuracy, i.predictions, i.maps[0] if i.maps else None, p.published, json.loads(p.labels), o[0])
