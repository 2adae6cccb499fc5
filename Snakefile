# vitprobe: from an image sample to the figures of Dosovitskiy et al. 2020, Raghu et al. 2021
# and the keras.io "Investigating Vision Transformer representations" example.
#
#   snakemake --cores N                                  # the paper experiment (config.yaml)
#   snakemake --cores N --configfile config/demo.yaml    # the offline demo, or any config
#
# A --configfile replaces config.yaml instead of being merged into it, so a run uses exactly
# the models and images its file names.

import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from vitprobe.pipeline.config import (
    ConfigError,
    check_config,
    check_finite,
    cka_runs,
    fit_default_counts,
    given_counts,
    check_images,
    load_config_file,
    raw_attention_bytes,
)
from vitprobe.pipeline.outputs import quarantine, report_command, stale_outputs
from vitprobe.pipeline.shard_size import resolve_shard_size

min_version("9.0")

# Downloaded weights are checked against the lock beside this Snakefile, wherever snakemake is
# started from (found by the working directory, a run from another folder would skip the check
# and pin whatever it downloaded in a new lock). Jobs, local or on a cluster, inherit it.
os.environ.setdefault("VITPROBE_WEIGHTS_LOCK", str(Path(workflow.basedir) / "weights.lock.json"))


envvars:
    "VITPROBE_WEIGHTS_LOCK",


try:
    if not config:
        config.update(load_config_file(workflow.source_path("config.yaml")))
    # Snakemake reads a --configfile itself, keeping the last of duplicated keys: read again strictly.
    for path in workflow.overwrite_configfiles:
        load_config_file(path)
    given = given_counts(config)
    check_finite(config)  # before the schema, whose ranges pass NaN and name only the bound an Inf breaks
    validate(config, "workflow/schemas/config.schema.yaml")
    for note in fit_default_counts(config, given):
        logger.info(note)
    MODELS = check_config(config)
    _sizing = resolve_shard_size(config, MODELS, check_images(config["images"]))
    if config["extract"]["shard_size"] == "auto":
        logger.info(f"extract.shard_size: {_sizing.size} images per extract job ({_sizing.reason})")
    config["extract"]["shard_size"] = _sizing.size
except ConfigError as e:
    raise WorkflowError(f"config: {e}") from None

OUT = f"results/{config['experiment']}"
CKA = cka_runs(config)
if not CKA:
    logger.info(f"cka: the run samples fewer images than one group (cka.group_size {config['cka']['group_size']}): no CKA")

if config["extract"]["keep_attention"]:
    _images = check_images(config["images"])
    if _images:
        _gib = raw_attention_bytes(MODELS, _images, config["extract"]["dtype"]) / 2**30
        logger.info(f"extract.keep_attention is set: the raw attention shards will keep {_gib:.1f} GiB under {OUT}/attention")


include: "workflow/rules/common.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/cka.smk"
include: "workflow/rules/norms.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/explorer.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/outputs.smk"


rule all:
    default_target: True
    input:
        result("manifest.parquet"),
        result("predictions.parquet"),
        result("accuracy.parquet"),
        result("mean_attention_distance.parquet"),
        result("attention_distance_per_image.parquet"),
        [result("cka.parquet")] if CKA else [],
        result("token_norms.parquet"),
        get_all_figures,
        get_explorer,
        get_kept_attention,
        result("outputs.json"),
        get_attention_exports,
        get_attribution_outputs,
        # Every intermediate (crop and model shards) as a target too: one that was deleted is
        # rebuilt on the next run, not at the next unrelated change.
        get_all_outputs,
    message:
        "all: every output of the run is in place"


onstart:
    # Outputs of an earlier config (a dropped model's figures, shards and maps) leave before any
    # job runs; the outputs rule moves what only the finished sample reveals (extra shards).
    quarantine(OUT, stale_outputs(OUT, get_planned_outputs(), owned=get_owned_folders()))


onsuccess:
    logger.info(f"Done. Figures: {OUT}/figures/  Tables: {OUT}/*.parquet  Logs: {OUT}/logs/")
    if MAP_IMAGES:
        logger.info(f"Explorer: open {OUT}/explorer.html in a browser (self-contained, works offline)")
    logger.info(f"Report: {report_command(OUT, workflow.overwrite_configfiles)}")
