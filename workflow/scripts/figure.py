# One entry point for every figure rule: the rule's name picks the library function.
from vitprobe import figures
from vitprobe.runlog import start

start(snakemake.log)
rule, i, o, p, w = snakemake.rule, snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
if rule == "figure_distance_by_block":
    figures.distance_by_block(i.table, w.model, p.label, o[0])
elif rule == "figure_distance_comparison":
    figures.distance_comparison(i.table, p.models, p.labels, o[0])
elif rule == "figure_rollout":
    figures.rollout(dict(zip(p.models, i.maps)), p.labels, o[0])
elif rule == "figure_cls_heads":
    figures.cls_heads(i.maps, p.label, list(o))
elif rule == "figure_patch_filters":
    figures.patch_filters(i.parameters, p.label, o.filters, o.components, p.filters, p.components)
elif rule == "figure_position_similarity":
    figures.position_similarity(i.parameters, p.label, o.cosine, o.dot)
elif rule == "figure_predictions":
    figures.predictions(i.predictions, i.maps[0] if i.maps else None, p.published, p.labels, o[0])
elif rule == "figure_top1_gallery":
    figures.top1_gallery(i.predictions, i.maps, w.model, p.label, o[0])
elif rule == "figure_video":
    figures.attention_video(p.model, w.model, i.video, o[0], p.video.get("fps", 8), p.video.get("max_frames", 64))
else:
    raise ValueError(f"figure.py has no figure for rule {rule}")
