from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
import json  # noqa: E402

from vitprobe.pipeline.figures.pca import pca_maps  # noqa: E402  (after the thread limit)

pca_maps(snakemake.input.pca, json.loads(snakemake.params.label), snakemake.output[0])
