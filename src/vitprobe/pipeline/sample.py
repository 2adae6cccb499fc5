"""The sample stage: enumerate the image source, draw the seeded sample, decode each image
once, and write the manifest and the table of rejected images."""

from __future__ import annotations

import logging

import pandas as pd

from ..atomic import write_parquet
from ..data.manifest import build_manifest, sample_records
from ..data.sources import folder_non_images, load_source
from ..escape import terminal_text

log = logging.getLogger("vitprobe")

# The config's images.path means a different thing per source.
_PATH_OPTION = {"folder": "path", "imagenet2012": "manual_dir", "imagenet_v2": "data_dir"}


def load_configured_source(images: dict) -> list:
    options = {}
    if images["source"] in _PATH_OPTION and images.get("path"):
        options[_PATH_OPTION[images["source"]]] = images["path"]
    if images["source"] == "folder" and not images.get("path"):
        raise ValueError("images.path: a folder source needs the folder's path")
    return load_source(images["source"], **options)


def sample_stage(images: dict, manifest_path: str, rejected_path: str, cka_group: int = 0) -> None:
    """Sample, decode and write the manifest and the table of rejected images. A run that plans
    CKA needs one group of ``cka_group`` (cka.group_size) usable images, which rejections can
    leave too few of: refused here, before any extraction, never after it. A folder's files
    without an image extension are listed in the rejected table too (not sampled, and not
    images that ``images.strict`` stops for)."""
    records = load_configured_source(images)
    chosen = sample_records(records, images["count"], images["seed"])
    manifest, rejected = build_manifest(chosen)
    log.info("sampled %d of %d images from %s; %d rejected", len(chosen), len(records), images["source"], len(rejected))
    for row in rejected.itertuples(index=False):
        log.warning("rejected %s (%s): %s", row.image_id, row.source, row.reason)
    if images["strict"] and len(rejected):
        listing = "\n  ".join(terminal_text(f"{r.source}: {r.reason}") for r in rejected.itertuples(index=False))
        raise ValueError(f"images.strict is set and {len(rejected)} images cannot be used:\n  {listing}")
    if manifest.empty:
        raise ValueError(f"no usable image in source {images['source']} (all {len(chosen)} rejected)")
    if cka_group > len(manifest):
        raise ValueError(
            f"cka.group_size: CKA needs one group of {cka_group} images but only {len(manifest)} of the {len(chosen)} "
            f"sampled images are usable ({len(rejected)} rejected, listed above); add images, or lower cka.group_size "
            f"(and extract.batch_size and extract.shard_size to multiples of it)"
        )
    if images["source"] == "folder":
        skipped = pd.DataFrame(folder_non_images(images["path"]), columns=rejected.columns, dtype=str)
        if len(skipped):
            log.info("%d files without an image extension skipped (listed in %s)", len(skipped), rejected_path)
            rejected = pd.concat([rejected, skipped], ignore_index=True)
    write_parquet(rejected, rejected_path)
    write_parquet(manifest, manifest_path)
