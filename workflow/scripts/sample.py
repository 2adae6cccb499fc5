from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.sample import sample_stage  # noqa: E402  (after the thread limit)

sample_stage(snakemake.params.images, snakemake.output.manifest, snakemake.output.rejected)
