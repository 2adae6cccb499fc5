from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.figures.attribution import attribution_auc, attribution_curves  # noqa: E402  (after the thread limit)

i, o, p = snakemake.input, snakemake.output, snakemake.params
labels = json.loads(p.labels)  # report text (the rules' report_param)
for model, curves, auc in zip(p.models, o.curves, o.auc):
    attribution_curves(i.curves, model, labels[model], p.classifiers[model], curves)
    attribution_auc(i.table, model, labels[model], auc)
