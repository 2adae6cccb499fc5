from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.explorer import write_explorer  # noqa: E402  (after the thread limit)

i, p = snakemake.input, snakemake.params
models = json.loads(p.models)
maps = dict(zip(models, i.maps))
attribution = dict(zip(models, i.attribution)) if i.attribution else None
write_explorer(models, json.loads(p.labels), maps, i.table, p.comparisons, p.images, p.blocks, snakemake.output[0], attribution)
