from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.config import model_entry  # noqa: E402  (after the thread limit)
from vitprobe.pipeline.parameters import export_parameters  # noqa: E402

export_parameters(model_entry(snakemake.wildcards.model, snakemake.params.model), snakemake.output[0])
