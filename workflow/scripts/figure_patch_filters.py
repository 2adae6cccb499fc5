import json

from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.figures.parameters import patch_filters  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
patch_filters(i.parameters, json.loads(p.label), o.filters, o.components, p.filters, p.components)
