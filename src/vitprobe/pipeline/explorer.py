"""The explorer stage: one self-contained HTML page to poke at the map images' attention.

The page (``explorer_page/``: hand-written HTML, CSS and JavaScript, no libraries) gets every
byte it shows inline: the crops as PNG data URLs, each model's distance-by-block table, the
rollout maps, and the attention rows of the exported blocks. It opens from disk with no server
and no network.

The attention comes from the extract program of the shard that holds the map images (kept in
the maps file, `map_images.ShardMapImages`), never from the full run's shards; no model runs here.
Per (model, image, block), the rows exported are the CLS query and every patch query over the
patch keys, for every head, each quantised to 8 bits against its own maximum (`map_images.
quantise_rows`: the error of a value is at most ``scale / 510``). The codes are zlib-compressed
(the page inflates them with the browser's own ``DecompressionStream``) and base64-encoded; the
scales travel as float32.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import zlib
from importlib import resources

import numpy as np
import pandas as pd
from PIL import Image

from ..atomic import write_text
from ..escape import script_json
from .config import explorer_blocks, model_entry

log = logging.getLogger("vitprobe")
PAGE = resources.files("vitprobe.pipeline") / "explorer_page"


def _packed(array: np.ndarray, compress: bool) -> str:
    raw = np.ascontiguousarray(array).tobytes()
    return base64.b64encode(zlib.compress(raw, 9) if compress else raw).decode("ascii")


def _png_data_url(crop: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def model_export(
    key: str,
    settings: dict,
    label: str,
    maps_path: str,
    distances: pd.DataFrame,
    images: int,
    blocks: list[int] | None,
    crops: dict[str, str],
    attribution_path: str | None = None,
) -> dict:
    """One model's part of the page data (its crops are added to ``crops``, keyed by content,
    so models that saw the same pixels share one copy).

    Args:
        key: the model's key under ``models``.
        settings: its config entry (what `model_entry` reads).
        label: the title it is shown with (key and exact checkpoint).
        maps_path: its maps file (the map images' crops, rollout maps and attention rows, in manifest order).
        distances: the mean attention distance table (every model).
        images: how many of the map images to export.
        blocks: ``explorer.blocks`` (0-based, negative from the last block; ``None``: every block).
        crops: content hash -> PNG data URL, shared between models.
        attribution_path: its attribution maps (``attribution/<model>.npz``), whose first images
            are the first map images; None: no attribution layers.
    """
    entry = model_entry(key, settings)
    spec = entry.spec
    with np.load(maps_path, allow_pickle=False) as maps:
        image_ids = [str(i) for i in maps["image_ids"][:images]]
        pixels = maps["crops"][:images]
        rollout = maps["rollout"][:images]
        codes, scales = maps["codes"][:images], maps["scales"][:images]  # (images, blocks, heads, 1 + P, P)
    exported = explorer_blocks(blocks, spec.depth, key)
    crop_keys = []
    for crop in pixels:
        digest = hashlib.sha256(crop.tobytes()).hexdigest()[:16]
        crops.setdefault(digest, _png_data_url(crop))
        crop_keys.append(digest)
    attention = []
    for image in range(len(image_ids)):
        per_block = []
        for block in exported:
            packed = {
                "codes": _packed(codes[image, block], compress=True),
                "scales": _packed(scales[image, block], compress=False),
            }
            per_block.append(packed)
        attention.append(per_block)
    table = distances[distances["model"] == key].sort_values(["block", "head"])
    export = {
        "key": key,
        "label": label,
        "image_ids": image_ids,
        "grid": spec.grid_size,
        "patch": spec.patch_size,
        "image_size": spec.image_size,
        "heads": spec.num_heads,
        "depth": spec.depth,
        "blocks": exported,
        "crops": crop_keys,
        "rollout": [np.round(r.astype(np.float64), 8).ravel().tolist() for r in rollout],
        "distance": [
            {"block": int(r.block), "head": int(r.head), "px": round(float(r.distance_px), 4)} for r in table.itertuples()
        ],
        "attention": attention,
    }
    if attribution_path is not None:
        export.update(attribution_layers(attribution_path, len(image_ids)))
    return export


def attribution_layers(path: str, images: int) -> dict:
    """A model's attribution maps for the page's images (None where an image has none: the
    attribution stage ran on fewer images) and the target each image's maps explain."""
    with np.load(path, allow_pickle=False) as data:
        methods = [name for name in data.files if name not in ("image_id", "crops", "target")]
        count = min(images, len(data["image_id"]))
        maps = {m: [np.round(data[m][i].astype(np.float64), 8).ravel().tolist() for i in range(count)] for m in methods}
        targets = ["embedding target" if t < 0 else f"class {t}" for t in data["target"][:count].tolist()]
    pad = [None] * (images - count)
    return {"attribution": {m: values + pad for m, values in maps.items()}, "attribution_targets": targets + pad}


def explorer_page(data: dict) -> str:
    """The page with its style, script and ``data`` inline (as `script_json`, so that no string
    in the data can close the script element or put the parser in its escaped state)."""
    html = (PAGE / "explorer.html").read_text()
    payload = script_json(data)
    for marker, text in (
        ("/*STYLE*/", (PAGE / "explorer.css").read_text()),
        ("/*SCRIPT*/", (PAGE / "explorer.js").read_text()),
        ("/*DATA*/", payload),
    ):
        if html.count(marker) != 1:
            raise ValueError(f"{PAGE / 'explorer.html'}: expected the marker {marker} once")
        html = html.replace(marker, text)
    return html


def write_explorer(
    models: dict[str, dict],
    labels: dict[str, str],
    maps: dict[str, str],
    distance_table: str,
    comparisons: list[list[str]],
    images: int,
    blocks: list[int] | None,
    out_path: str,
    attribution: dict[str, str] | None = None,
) -> int:
    """Write the explorer page and return its size in bytes (logged too).

    Args:
        models: model key -> its config entry, in config order.
        labels: model key -> its title (key and exact checkpoint).
        maps: model key -> its maps file.
        distance_table: ``mean_attention_distance.parquet``.
        comparisons: the configured pairs (or groups) of model keys shown side by side.
        images: how many of the map images the page holds.
        blocks: ``explorer.blocks``: 0-based blocks the page holds (negative from the last); ``None``: every block.
        out_path: the page (``explorer.html``).
        attribution: model key -> its attribution maps file, shown as layers; None: no such layers.
    """
    distances = pd.read_parquet(distance_table)
    crops: dict[str, str] = {}
    exports = []
    for key, settings in models.items():
        attribution_path = attribution[key] if attribution else None
        exports.append(model_export(key, settings, labels[key], maps[key], distances, images, blocks, crops, attribution_path))
        log.info("explorer: %s exported (%d images, %d blocks)", key, len(exports[-1]["image_ids"]), len(exports[-1]["blocks"]))
    data = {"models": exports, "crops": crops, "comparisons": [list(c) for c in comparisons]}
    html = explorer_page(data)
    write_text(out_path, html)
    size = len(html.encode("utf-8"))
    log.info("explorer: %s is %.2f MB", out_path, size / 1e6)
    return size
