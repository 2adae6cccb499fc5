from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures.parameters import patch_filters  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
for parameters, label, filters, components in zip(i.parameters, json.loads(p.labels), o.filters, o.components):
    patch_filters(parameters, label, filters, components, p.filters, p.components)
