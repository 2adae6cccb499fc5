from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.cka import cka_pair  # noqa: E402  (after the thread limit)

i, w = snakemake.input, snakemake.wildcards
cka_pair(w.model_a, i.a, w.model_b, i.b, snakemake.params.features, snakemake.output[0])
