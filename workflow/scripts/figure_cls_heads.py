from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures import per_model  # noqa: E402
from vitprobe.pipeline.figures.maps import cls_heads  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
labels = json.loads(p.labels)
outs = per_model(list(o), p.models)  # each model's figures, one per map image
for model, maps in zip(p.models, i.maps):
    cls_heads(maps, labels[model], outs[model], p.queries[model])
