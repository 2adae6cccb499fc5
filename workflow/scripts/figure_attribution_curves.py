from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
from vitprobe.pipeline.figures.attribution import attribution_auc, attribution_curves  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
attribution_curves(i.curves, w.model, p.label, p.classifier, o.curves)
attribution_auc(i.table, w.model, p.label, o.auc)
