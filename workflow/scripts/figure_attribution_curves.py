from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads)
import json  # noqa: E402

from vitprobe.pipeline.figures.attribution import attribution_auc, attribution_curves  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
label = json.loads(p.label)  # report text (the rules' report_param)
attribution_curves(i.curves, w.model, label, p.classifier, o.curves)
attribution_auc(i.table, w.model, label, o.auc)
