from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.extract import run_extract  # noqa: E402  (after the thread limit)

p = snakemake.params
run_extract(
    snakemake.wildcards.model,
    p.model,
    snakemake.input.crops,
    snakemake.input.manifest,
    int(snakemake.wildcards.shard),
    p.shard_count,
    p.shard_size,
    dict(snakemake.output.items()),
    batch_size=p.batch_size,
    precision=p.precision,
    group_size=p.group_size,
    analysis=p.get("analysis"),  # rule extract
    attention_kernel=p.get("attention_kernel", "auto"),  # rule extract
    compile_mode=p.compile_mode,
    threads=snakemake.threads,
    dtype=p.get("dtype"),  # rule extract_attention
    map_rows=p.map_rows,
)
