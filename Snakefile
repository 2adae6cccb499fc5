# vitprobe: from an image sample to the figures of Dosovitskiy et al. 2020, Raghu et al. 2021
# and the keras.io "Investigating Vision Transformer representations" example.
#
#   snakemake --cores N                                  # the paper experiment (config.yaml)
#   snakemake --cores N --configfile config/demo.yaml    # the offline demo, or any config
#
# A --configfile replaces config.yaml instead of being merged into it, so a run uses exactly
# the models and images its file names.

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from vitprobe.pipeline.config import ConfigError, check_config, check_images, raw_attention_bytes

min_version("9.0")

if not config:
    with open(workflow.source_path("config.yaml")) as f:
        config.update(yaml.safe_load(f))

validate(config, "workflow/schemas/config.schema.yaml")
try:
    MODELS = check_config(config)
except ConfigError as e:
    raise WorkflowError(f"config: {e}") from None

OUT = f"results/{config['experiment']}"

if config["extract"]["keep_attention"]:
    _images = check_images(config["images"])
    if _images:
        _gib = raw_attention_bytes(MODELS, _images, config["extract"]["dtype"]) / 2**30
        logger.info(f"extract.keep_attention is set: the raw attention shards will keep {_gib:.1f} GiB under {OUT}/attention")


include: "workflow/rules/common.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        result("manifest.parquet"),
        result("predictions.parquet"),
        result("accuracy.parquet"),
        result("mean_attention_distance.parquet"),
        result("attention_distance_per_image.parquet"),
        get_all_figures,
        get_kept_attention,
        get_attention_exports,
    default_target: True


onsuccess:
    logger.info(f"Done. Figures: {OUT}/figures/  Tables: {OUT}/*.parquet  Logs: {OUT}/logs/")
    config_args = "".join(f" --configfile {path}" for path in workflow.overwrite_configfiles)
    logger.info(f"Report: snakemake --report {OUT}/report.html{config_args}")
