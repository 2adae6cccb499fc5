"""What an experiment config means: its models, their preprocessing and shards.

Importable without Keras, so the Snakefile can use it to build the job graph and to
refuse a bad config before any job starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..atomic import write_text
from ..backends import compile_modes
from ..data import sources
from ..data.preprocess import Preprocess, default_preprocess
from ..digest import sha256_of
from ..environment import hub_offline, keras_backend
from ..models.presets import get_preset
from ..models.spec import ViTSpec, get_spec
from ..weights.errors import WeightsError
from ..weights.metadata import checkpoint_arch
from ..weights.source import HELP, WeightsSource, parse_weights


class ConfigError(ValueError):
    """The experiment config cannot run; the message names the key and the fix."""


SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"

# The keys of a model entry that change its outputs (with its preprocessing); the checkpoint
# label and published accuracy only change figures.
_OUTPUT_KEYS = ("arch", "weights", "seed", "spec")


@dataclass(frozen=True)
class ModelEntry:
    key: str
    arch: str
    weights: str
    checkpoint: str
    seed: int
    published_top1: float | None
    preprocess: Preprocess
    spec: ViTSpec
    spec_overrides: dict
    settings: dict  # everything that changes the model's outputs: the extraction rules' parameter

    @property
    def geometry(self) -> str:
        """Name of the crop set this model reads (models with equal geometry share crops)."""
        resize, fraction, interpolation = self.preprocess.geometry()
        return f"{self.spec.image_size}px_{resize}_{fraction:g}_{interpolation}"

    @property
    def label(self) -> str:
        """``key (exact checkpoint)``, used in every figure title."""
        return f"{self.key} ({self.checkpoint})"

    @property
    def map_query(self) -> str:
        """Whose attention the per-head maps and the rollout's final row are: the class token's, or
        (SigLIP: no class token) the attention-pooling head's probe query's."""
        return "MAP-head probe" if self.spec.has_pool_query else "CLS"

    @property
    def has_head(self) -> bool:
        """A classifier head (CLIP's projection head gives no predictions)."""
        return self.spec.has_classifier


def with_preset(key: str, cfg: dict) -> dict:
    """``models.<key>`` with the fields of its ``preset`` filled in: the keys the entry gives
    win, and a ``preprocess`` it gives overrides the preset's field by field."""
    if "preset" not in cfg:
        return dict(cfg)
    try:
        preset = get_preset(cfg["preset"]).as_config()
    except KeyError as e:
        raise ConfigError(f"models.{key}.preset: {e.args[0]}") from None
    given = {k: v for k, v in cfg.items() if k != "preset"}
    return {**preset, **given, "preprocess": {**preset["preprocess"], **given.get("preprocess", {})}}


def with_checkpoint_arch(key: str, cfg: dict) -> dict:
    """``models.<key>`` with ``arch`` read from the checkpoint's own ``config.json`` when the entry gives
    none (`vitprobe.weights.metadata`), its overrides (head, norm eps) under ``spec`` (the entry's win)."""
    if "arch" in cfg or "weights" not in cfg or not parse_weights(cfg["weights"]).is_local:
        return cfg
    try:
        arch, described = checkpoint_arch(cfg["weights"])
    except WeightsError as e:
        raise ConfigError(f"models.{key}.arch: {e}") from None
    return {**cfg, "arch": arch, "spec": {**described, **cfg.get("spec", {})}}


def model_entry(key: str, cfg: dict) -> ModelEntry:
    """The entry for ``models.<key>`` of a config validated by the schema, which fills in its
    defaults (also rebuilt from a rule's params); `validated_entries` for a config as written."""
    cfg = with_checkpoint_arch(key, with_preset(key, cfg))
    if "arch" not in cfg or "weights" not in cfg:
        raise ConfigError(
            f"models.{key}: give a preset, or weights and arch (arch may be left out for a local file with its config.json)"
        )
    arch = cfg["arch"]
    try:
        get_spec(arch)
    except KeyError as e:
        raise ConfigError(f"models.{key}.arch: {e}") from None
    try:
        pre = Preprocess(**{**default_preprocess(arch).as_dict(), **cfg.get("preprocess", {})})
    except ValueError as e:
        raise ConfigError(f"models.{key}.{e}") from None
    weights, seed = cfg["weights"], cfg["seed"]
    overrides = dict(cfg.get("spec", {}))
    try:
        spec = get_spec(arch, **overrides)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"models.{key}.spec: {e}") from None
    # In a fixed order, so that reordering the keys of a config file does not rerun extraction.
    settings = {k: cfg[k] for k in _OUTPUT_KEYS if k in cfg}
    if "spec" in settings:
        settings["spec"] = dict(sorted(settings["spec"].items()))
    return ModelEntry(
        key=key,
        arch=arch,
        weights=weights,
        checkpoint=cfg.get("checkpoint") or _checkpoint_name(key, arch, weights, seed),
        seed=seed,
        published_top1=cfg.get("published_top1"),
        preprocess=pre,
        spec=spec,
        spec_overrides=overrides,
        settings=dict(settings, preprocess=pre.as_dict()),
    )


def model_entries(config: dict) -> dict[str, ModelEntry]:
    return {key: model_entry(key, cfg) for key, cfg in config["models"].items()}


def validated_entries(models: dict) -> dict[str, ModelEntry]:
    """The entries of a ``models`` section as written (a benchmark's, a test's), validated by the
    schema with its defaults filled in as the Snakefile validates a whole config."""
    from snakemake.utils import validate

    config = {"experiment": "models", "images": {"source": "bundled"}, "models": copy.deepcopy(models)}
    validate(config, str(SCHEMA))
    return model_entries(config)


def weights_source(key: str, weights: str) -> WeightsSource:
    """``models.<key>.weights`` parsed; a `ConfigError` naming the key when it cannot be."""
    try:
        return parse_weights(weights)
    except WeightsError as e:
        raise ConfigError(f"models.{key}.weights: {e}") from None


def local_weights(entry: ModelEntry) -> list[str]:
    """The weights file of a model when it is a local file (a rule input: replacing it reruns)."""
    return [entry.weights] if parse_weights(entry.weights).is_local else []


def model_identity(entry: ModelEntry) -> str:
    """A digest of what produces a model's outputs: its settings (architecture, weights source,
    seed, spec, preprocessing) and, for a local weights file, the file's sha256 (downloads are
    pinned by the weights lock). Stored in the shards a model writes, and checked by the stages
    that read them, so that another run's shard (another model's, other weights') is refused."""
    digest = hashlib.sha256(json.dumps(entry.settings, sort_keys=True).encode())
    for path in local_weights(entry):
        digest.update(sha256_of(Path(path)).encode())
    return digest.hexdigest()


def _checkpoint_name(key: str, arch: str, weights: str, seed: int) -> str:
    source = weights_source(key, weights)
    if source.kind == "random":
        return f"{arch}, random init seed {seed}"
    if source.kind == "hf-hub":
        return source.value.split("/", 1)[-1]
    return Path(weights.split("?")[0]).name


# Counts of images whose schema default may exceed a small run's sample: (section, key).
SAMPLE_BOUNDED_COUNTS = (("analysis", "map_images"), ("attribution", "images"))


def given_counts(config: dict) -> set[tuple[str, str]]:
    """The `SAMPLE_BOUNDED_COUNTS` the config gives itself (read before the schema fills in defaults)."""
    return {(section, key) for section, key in SAMPLE_BOUNDED_COUNTS if key in (config.get(section) or {})}


def fit_default_counts(config: dict, given: set[tuple[str, str]]) -> list[str]:
    """Lower the schema's default of each `SAMPLE_BOUNDED_COUNTS` entry not in ``given`` to the number
    of images a small run samples (a value the user gave is checked by `check_config` instead).
    Returns a note to log per lowered default."""
    images, notes = check_images(config["images"]), []
    for section, key in SAMPLE_BOUNDED_COUNTS:
        default = config[section][key]
        if (section, key) in given or images is None or default <= images:
            continue
        config[section][key] = images
        notes.append(f"{section}.{key}: the default {default} lowered to the {images} images this run samples")
    return notes


def check_map_images(map_images: int, images: int, what: str) -> None:
    """``analysis.map_images`` against the images there are: before any job, the images the
    config samples; once the sample checkpoint has run, the manifest's usable images (rejected
    ones left out, and a manifest sampled before map_images was raised)."""
    if map_images > images:
        raise ConfigError(
            f"analysis.map_images: {map_images} map images but {what} are {images}; "
            f"lower analysis.map_images to at most {images} (or sample more images)"
        )


def check_config(config: dict, root: str | os.PathLike = ".") -> dict[str, ModelEntry]:
    """Checks beyond the JSON Schema, on the config it validated (every default filled in); raises
    `ConfigError` before any job runs."""
    entries = model_entries(config)
    images = check_images(config["images"], Path(root) / "results" / str(config["experiment"]))
    if images is not None:
        check_map_images(config["analysis"]["map_images"], images, "the images the run samples")
    for key, entry in entries.items():
        w = entry.weights
        source = weights_source(key, w)
        if source.kind == "hf-hub" and hub_offline() and not _in_hub_cache(source.value):
            raise ConfigError(
                f"models.{key}.weights: {w} is not in the Hugging Face cache and HF_HUB_OFFLINE=1. "
                "Download it once with network, or give a local .safetensors path."
            )
        if source.is_local and not Path(root, w).is_file():
            raise ConfigError(f"models.{key}.weights: file {Path(root, w)} not found. {HELP}")
    for key, entry in entries.items():
        if config["extract"]["keep_attention"] and entry.spec.has_pool_query:
            raise ConfigError(
                f"extract.keep_attention: models.{key} ({entry.arch}) has an attention-pooling head whose (heads, 1, N) "
                "attention does not fit the (blocks, heads, N, N) attention shards; set keep_attention: false "
                "(its reductions are computed inside the forward pass)"
            )
        if config["extract"]["attention_kernel"] == "fused" and not entry.spec.supports_fused_attention:
            raise ConfigError(
                f"extract.attention_kernel: fused cannot run models.{key} ({entry.arch}): the kernel needs a class token, "
                "no relative position bias and no attention-pooling head; set attention_kernel: auto or unfused"
            )
    if config["extract"]["attention_kernel"] == "fused":
        analysis, backend = config["analysis"], keras_backend()
        if backend != "jax" or analysis["head_fusion"] != "mean" or analysis["discard_ratio"] != 0:
            raise ConfigError(
                f"extract.attention_kernel: fused needs KERAS_BACKEND=jax (it is {backend}), analysis.head_fusion: mean "
                f"and analysis.discard_ratio: 0 (they are {analysis['head_fusion']}, {analysis['discard_ratio']}); "
                "set attention_kernel: auto or unfused"
            )
    mode, backend = config["extract"]["compile"], keras_backend()
    if mode != "auto" and mode not in compile_modes(backend):
        raise ConfigError(
            f"extract.compile: {mode} is not a compile mode of the {backend} backend (KERAS_BACKEND); "
            f"set auto or one of {', '.join(compile_modes(backend))}"
        )
    for pair in config["comparisons"]:
        for key in pair:
            if key not in entries:
                raise ConfigError(f"comparisons: {key!r} is not a key under models ({', '.join(entries)})")
    check_cka(config, images)
    video = config.get("video")
    if video and video["model"] not in entries:
        raise ConfigError(f"video.model: {video['model']!r} is not a key under models")
    if video and Path(video["path"]).suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(
            f"video.path: {video['path']!r} is not a clip Pillow reads as frames ({', '.join(VIDEO_SUFFIXES)}); "
            "convert it first, e.g. ffmpeg -i clip.mp4 clip.gif"
        )
    check_explorer(config, entries)
    check_pca(config)
    check_attribution(config, entries, images)
    return entries


def check_attribution(config: dict, entries: dict[str, ModelEntry], images: int | None) -> None:
    """The attribution stage's images fit the sample, a class index fits every classifier, and a
    label target has labels to read."""
    attribution = config.get("attribution")  # filled in by the schema's defaults; absent: not validated
    if not attribution:
        return
    count, target = attribution["images"], attribution["target"]
    if images is not None and count > images:
        raise ConfigError(
            f"attribution.images: {count} images but the run samples {images}; lower attribution.images to at most {images}"
        )
    if not count:
        return
    if isinstance(target, int):
        for key, entry in entries.items():
            if entry.has_head and target >= entry.spec.num_classes:
                raise ConfigError(
                    f"attribution.target: class {target} but models.{key} has {entry.spec.num_classes} classes; "
                    f"give a class index below {entry.spec.num_classes}, predicted or label"
                )
    if "transformer_attribution" in attribution["methods"]:
        refusals = {key: entry.spec.transformer_attribution_refusal for key, entry in entries.items()}
        if all(refusals.values()):
            reasons = "; ".join(f"models.{key}: {reason}" for key, reason in refusals.items())
            raise ConfigError(
                f"attribution.methods: transformer_attribution applies to none of the models ({reasons}); remove it"
            )
    if target == "label":
        source, path = config["images"]["source"], config["images"].get("path")
        if source == "folder" and not (Path(path).expanduser() / "labels.csv").is_file():
            raise ConfigError(
                f"attribution.target: label needs labels, and {Path(path) / 'labels.csv'} does not exist; "
                "add a labels.csv (filename,label) to the folder or set attribution.target: predicted"
            )


# The clips read_frames (Pillow) takes: animated GIF, APNG, animated WebP, multi-page TIFF.
VIDEO_SUFFIXES = (".gif", ".png", ".apng", ".webp", ".tif", ".tiff")


def check_pca(config: dict) -> None:
    """``analysis.pca.threshold`` is a number of standard deviations; NaN passes the schema's range."""
    threshold = config["analysis"]["pca"]["threshold"]
    if not math.isfinite(threshold):
        raise ConfigError(f"analysis.pca.threshold: {threshold} is not a finite number; give standard deviations, e.g. 0")


def check_finite(value, key: str = "") -> None:
    """Every number of the config is finite: YAML's ``.nan`` and ``.inf`` pass the schema's
    ranges (a comparison with NaN is false) and would fail inside a job, or run to nonsense."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value} is not a finite number; give a number (YAML's .nan and .inf are not settings)")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_finite(v, f"{key}[{i}]")


def check_explorer(config: dict, entries: dict[str, ModelEntry]) -> None:
    """The explorer shows map images only, and only blocks that every model has."""
    explorer = config["explorer"]
    images, map_images = explorer["images"], config["analysis"]["map_images"]
    if images is not None and images > map_images:
        raise ConfigError(
            f"explorer.images: {images} exceeds analysis.map_images ({map_images}); the explorer shows map images only. "
            "Raise analysis.map_images or lower explorer.images"
        )
    for key, entry in entries.items():
        explorer_blocks(explorer["blocks"], entry.spec.depth, key)


def explorer_blocks(blocks: list[int] | None, depth: int, key: str = "") -> list[int]:
    """``explorer.blocks`` for a model of ``depth`` blocks as sorted 0-based indices (negative
    ones count from the last block); ``None`` gives every block."""
    if blocks is None:
        return list(range(depth))
    wrong = [b for b in blocks if not -depth <= b < depth]
    if wrong:
        raise ConfigError(
            f"explorer.blocks: {wrong} out of range for models.{key} ({depth} blocks: 0..{depth - 1} or -{depth}..-1)"
        )
    return sorted({b % depth for b in blocks})


def check_cka(config: dict, count: int | None) -> None:
    """The CKA groups are formed inside one compiled batch and never span shards: the batch and
    shard sizes must be multiples of the group size (a run of fewer images than one group skips
    CKA: see `cka_runs`)."""
    group = config["cka"]["group_size"]
    if count is not None and count < group:
        return
    for key in ("batch_size", "shard_size"):
        value = config["extract"][key]
        if value != "auto" and value % group:  # auto is resolved to a multiple (`pipeline.shard_size`)
            raise ConfigError(
                f"extract.{key}: {value} is not a multiple of cka.group_size {group}; "
                f"set extract.{key} to {max(group, value - value % group)} or cka.group_size to a divisor of it"
            )


def cka_runs(config: dict) -> bool:
    """Whether the run holds one whole CKA group; a smaller run (a few test images) skips CKA."""
    count = check_images(config["images"])
    return count is None or count >= config["cka"]["group_size"]


def check_images(images: dict, results: str | os.PathLike | None = None) -> int | None:
    """Refuse an image source that cannot deliver ``count`` images, or a folder that holds the
    ``results`` folder (the run would analyse its own figures), before any job runs.
    Returns the number of images the run will sample, when it is cheap to know."""
    kind, path, count = images["source"], images["path"], images["count"]
    if kind == "imagenet2012":
        tar = Path(path or sources.DEFAULT_MANUAL_DIR).expanduser() / sources.IMAGENET_VAL_TAR
        if not tar.is_file():
            raise ConfigError(
                f"images.source: imagenet2012 needs {tar} (ImageNet validation tar, 6.7 GB, from image-net.org "
                f"after registering); set images.path to the folder that holds it. {sources.alternatives('imagenet2012')}"
            )
        available = sources.IMAGENET_VAL_COUNT  # the sample step verifies the tar holds exactly these
    elif kind == "folder":
        if not path or not Path(path).expanduser().is_dir():
            raise ConfigError(f"images.path: {path!r} is not a folder; images.source: folder needs a folder of images")
        folder, out = Path(path).expanduser().resolve(), Path(results or "results").resolve()
        if out.is_relative_to(folder) or folder.is_relative_to(out):
            raise ConfigError(
                f"images.path: {folder} holds (or lies inside) this run's results folder {out}: the run would analyse its own "
                "outputs. Keep the images and the results apart (run snakemake from another folder or move the images)"
            )
        try:
            available = len(sources.folder(path))
        except ValueError as e:  # a bad labels.csv
            raise ConfigError(f"images.path: {e}") from None
        if not available:
            raise ConfigError(
                f"images.path: folder {path} holds no image files ({', '.join(sources.IMAGE_EXTENSIONS)}); "
                "add images or point images.path at the folder that holds them"
            )
    elif kind == "bundled":
        available = len(sources.BUNDLED)
    else:  # imagenet_v2: known once downloaded; the sample step checks count
        return count
    if count and count > available:
        raise ConfigError(f"images.count: {count} images requested but the {kind} source has {available}; lower images.count")
    return count or available


def image_listing(images: dict, cache: str | os.PathLike | None = None) -> str:
    """A fingerprint of what a folder source holds (every image file's path and sha256, and
    labels.csv's content): the sample checkpoint's parameter, so that adding, removing,
    renaming or changing an image (even in place at the same size), or relabelling one,
    resamples. Other sources are fixed.

    Args:
        images: the config's ``images``.
        cache: a JSON file of the sha256 of each file by path, size, mtime and ctime (the
            ctime changes with every write and cannot be set back), so that a rerun reads only
            the files that changed; rewritten when it changes.
    """
    if images["source"] != "folder" or not images.get("path") or not Path(images["path"]).expanduser().is_dir():
        return ""
    root = Path(images["path"]).expanduser().resolve()
    known = _read_hash_cache(cache)
    hashes, digest = {}, hashlib.sha256()
    for record in sources.folder(root):
        file = root / record.image_id
        if not file.is_file():  # a dangling link or a folder named like an image: rejected by the sample stage
            digest.update(f"{record.image_id}\tnot a file\n".encode())
            continue
        st = file.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        entry = known.get(str(file))
        sha256 = entry[1] if entry and entry[0] == stamp else sha256_of(file)
        hashes[str(file)] = (stamp, sha256)
        digest.update(f"{record.image_id}\t{sha256}\n".encode())
    if (root / "labels.csv").is_file():
        digest.update((root / "labels.csv").read_bytes())
    if cache is not None and hashes != known:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        write_text(cache, json.dumps(hashes, sort_keys=True))
    return digest.hexdigest()


def _read_hash_cache(cache: str | os.PathLike | None) -> dict:
    try:
        return {path: tuple(entry) for path, entry in json.loads(Path(cache).read_text()).items()}
    except (TypeError, OSError, ValueError, AttributeError):  # none yet, or unreadable: hash every file
        return {}


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key that appears twice in one mapping (PyYAML keeps the
    last one silently, so a second ``models:`` would drop every model of the first)."""

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in lines:
                raise ConfigError(
                    f"{self.name}: key {key!r} appears twice in one mapping (lines {lines[key]} and "
                    f"{key_node.start_mark.line + 1}); YAML would keep only the last. Merge them into one."
                )
            lines.setdefault(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def load_config_file(path: str | os.PathLike) -> dict:
    """A YAML config file; `ConfigError` naming the key and both lines when a key is duplicated."""
    with open(path) as f:
        return yaml.load(f, Loader=_StrictLoader) or {}


def _in_hub_cache(source: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(source, "model.safetensors"), str)


def raw_attention_bytes(entries: dict[str, ModelEntry], images: int, dtype: str) -> int:
    """Disk taken by the raw attention shards of every model for ``images`` images."""
    itemsize = 2 if dtype == "float16" else 4
    return sum(images * e.spec.depth * e.spec.num_heads * e.spec.num_tokens**2 * itemsize for e in entries.values())


def shard_count(num_images: int, shard_size: int) -> int:
    return max(1, math.ceil(num_images / shard_size))


def shard_slice(index: int, shard_size: int) -> slice:
    return slice(index * shard_size, (index + 1) * shard_size)


def export_rows(image_ids: list[str], selection: int | list[str]) -> list[int]:
    """Manifest rows of the images ``export.attention_parquet`` selects: the first ``selection``
    rows, or the rows of the named image ids (in the order given)."""
    if isinstance(selection, int):
        return list(range(min(selection, len(image_ids))))
    row = {image_id: k for k, image_id in enumerate(image_ids)}
    missing = [image_id for image_id in selection if image_id not in row]
    if missing:
        known = ", ".join(image_ids[:5]) + (", ..." if len(image_ids) > 5 else "")
        raise ConfigError(
            f"export.attention_parquet: {missing} not in the manifest (image ids: {known}); "
            "name ids from manifest.parquet's image_id column, or give a count"
        )
    return [row[image_id] for image_id in selection]


def export_shards(image_ids: list[str], selection: int | list[str], shard_size: int) -> list[int]:
    """The shards (in order) that hold the images ``export.attention_parquet`` selects."""
    return sorted({row // shard_size for row in export_rows(image_ids, selection)})
