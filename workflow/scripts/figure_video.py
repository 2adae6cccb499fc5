from vitprobe.pipeline.runlog import start

start(snakemake.log, snakemake.threads, snakemake.resources)
import json  # noqa: E402

from vitprobe.pipeline.video import attention_video  # noqa: E402  (after the thread limit)

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
video = json.loads(p.video)
attention_video(json.loads(p.model), w.model, i.video, o[0], video["fps"], video["max_frames"])
