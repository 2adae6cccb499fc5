from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.outputs import write_outputs  # noqa: E402  (after the thread limit)

write_outputs(snakemake.params.out_dir, snakemake.params.files, snakemake.output[0])
