from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
import json  # noqa: E402

from vitprobe.pipeline.figures.maps import cls_heads  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
cls_heads(i.maps, json.loads(p.label), list(o), p.query)
