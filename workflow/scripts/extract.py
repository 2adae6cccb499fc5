import pandas as pd

from vitprobe.data.sources import source_class_names
from vitprobe.experiment import model_entry, shard_slice
from vitprobe.extraction import extract
from vitprobe.runlog import start
from vitprobe.threads import limit_threads

start(snakemake.log)
limit_threads(snakemake.threads)
manifest = pd.read_parquet(snakemake.input.manifest)
extract(
    model_entry(snakemake.wildcards.model, snakemake.params.model),
    snakemake.input.crops,
    manifest.iloc[shard_slice(int(snakemake.wildcards.shard), snakemake.params.shard_size)],
    snakemake.output.attention,
    snakemake.output.predictions,
    list(source_class_names()),
    batch_size=snakemake.params.batch_size,
    dtype=snakemake.params.dtype,
)
