from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures.pca import pca_maps  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
for pca, label, out in zip(i.pca, json.loads(p.labels), o):
    pca_maps(pca, label, out)
