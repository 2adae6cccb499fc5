from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
import json  # noqa: E402

from vitprobe.pipeline.figures.representations import cka  # noqa: E402  (after the thread limit)

p = snakemake.params
cka(list(snakemake.input), json.loads(p.labels), p.features, snakemake.output[0])
