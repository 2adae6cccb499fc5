from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures.predictions import accuracy_figure  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
accuracy_figure(i.accuracy, i.predictions, i.maps[0] if i.maps else None, p.published, json.loads(p.labels), o[0])
