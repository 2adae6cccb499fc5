import pandas as pd

from vitprobe.data.sources import source_class_names
from vitprobe.experiment import model_entry, shard_slice
from vitprobe.extraction import extract
from vitprobe.runlog import start
from vitprobe.threads import limit_threads

start(snakemake.log)
limit_threads(snakemake.threads)
manifest = pd.read_parquet(snakemake.input.manifest)
outputs = dict(snakemake.output.items())
extract(
    model_entry(snakemake.wildcards.model, snakemake.params.model),
    snakemake.input.crops,
    manifest.iloc[shard_slice(int(snakemake.wildcards.shard), snakemake.params.shard_size)],
    outputs["predictions"],
    list(source_class_names()),
    per_image_path=outputs.get("per_image"),
    maps_path=outputs.get("maps"),
    attention_path=outputs.get("attention"),
    analysis=snakemake.params.get("analysis"),
    batch_size=snakemake.params.batch_size,
    precision=snakemake.params.precision,
    dtype=snakemake.params.get("dtype", "float32"),
)
