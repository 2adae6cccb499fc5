from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures.predictions import top1_gallery  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
for model, maps, label, out in zip(p.models, i.maps, json.loads(p.labels), o):
    top1_gallery(i.predictions, maps, model, label, out)
