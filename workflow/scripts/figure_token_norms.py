from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures import per_model  # noqa: E402
from vitprobe.pipeline.figures.token_norms import norm_histograms  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
labels = json.loads(p.labels)
shards = per_model(list(i.shards), p.models)
for model, table, out in zip(p.models, i.tables, o):
    norm_histograms(shards[model], table, p.prefix_kinds[model], labels[model], out)
