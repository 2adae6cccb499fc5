import pandas as pd

from vitprobe.data.manifest import prepare_crops
from vitprobe.data.preprocess import Preprocess
from vitprobe.experiment import shard_slice
from vitprobe.runlog import start

start(snakemake.log)
manifest = pd.read_parquet(snakemake.input.manifest)
rows = manifest.iloc[shard_slice(int(snakemake.wildcards.shard), snakemake.params.shard_size)]
prepare_crops(rows, snakemake.params.image_size, Preprocess(**snakemake.params.geometry), snakemake.output[0])
