from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.sample import sample_stage  # noqa: E402  (after the thread limit)

# map_images is read from the config, not given as a parameter: changing it must not resample.
sample_stage(
    snakemake.params.images, snakemake.output.manifest, snakemake.output.rejected, snakemake.config["analysis"]["map_images"]
)
