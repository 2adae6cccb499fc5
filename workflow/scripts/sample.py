from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.config import cka_runs  # noqa: E402
from vitprobe.pipeline.sample import sample_stage  # noqa: E402  (after the thread limit)

# The CKA group is read from the config, not given as a parameter: changing it must not resample.
config = snakemake.config
cka_group = config["cka"]["group_size"] if cka_runs(config) else 0
sample_stage(snakemake.params.images, snakemake.output.manifest, snakemake.output.rejected, cka_group)
