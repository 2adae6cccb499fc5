from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.pca import run_pca_features  # noqa: E402  (after the thread limit)

p = snakemake.params
run_pca_features(snakemake.wildcards.model, p.model, snakemake.input.maps, p.threshold, snakemake.output[0])
