from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures.maps import rollout  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
rollout(dict(zip(p.models, i.maps)), json.loads(p.labels), o[0], p.queries)
