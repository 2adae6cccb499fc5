from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
from vitprobe.pipeline.attribution import run_attribution  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
run_attribution(
    snakemake.wildcards.model,
    p.model,
    list(i.crops),
    i.manifest,
    p.settings,
    p.rollout,
    p.batch_size,
    o.maps,
    o.table,
    o.curves,
)
