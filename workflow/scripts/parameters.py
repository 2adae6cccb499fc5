from vitprobe.experiment import model_entry
from vitprobe.extraction import export_parameters
from vitprobe.runlog import start

start(snakemake.log)
export_parameters(model_entry(snakemake.wildcards.model, snakemake.params.model), snakemake.output[0])
