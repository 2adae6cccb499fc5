from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures.attribution import attribution_maps  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
attribution_maps(dict(zip(p.models, i.maps)), json.loads(p.labels), list(o))
