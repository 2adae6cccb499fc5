from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.extract import run_extract_attention  # noqa: E402  (after the thread limit)

p = snakemake.params
run_extract_attention(
    snakemake.wildcards.model,
    p.model,
    snakemake.input.crops,
    snakemake.input.manifest,
    int(snakemake.wildcards.shard),
    p.shard_count,
    p.shard_size,
    **dict(snakemake.output.items()),  # predictions, attention, representations, map_images
    batch_size=p.batch_size,
    precision=p.precision,
    group_size=p.group_size,
    dtype=p.dtype,
    compile_mode=p.compile_mode,
    threads=snakemake.threads,
    map_rows=p.map_rows,
)
