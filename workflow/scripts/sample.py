from vitprobe.data.sampling import sample_stage
from vitprobe.runlog import start

start(snakemake.log)
sample_stage(snakemake.params.images, snakemake.output.manifest, snakemake.output.rejected)
