"""What an experiment config means: its models, their preprocessing and shards.

Importable without Keras, so the Snakefile can use it to build the job graph and to
refuse a bad config before any job starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..backends import compile_modes
from ..data import sources
from ..data.preprocess import Preprocess, default_preprocess
from ..models.presets import get_preset
from ..models.spec import SPECS, ViTSpec, get_spec
from ..weights.errors import WeightsError
from ..weights.source import HELP, WeightsSource, parse_weights


class ConfigError(ValueError):
    """The experiment config cannot run; the message names the key and the fix."""


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
    def has_head(self) -> bool:
        return self.spec.num_classes > 0


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


def model_entry(key: str, cfg: dict) -> ModelEntry:
    """The entry for ``models.<key>`` of a config (also rebuilt from a rule's params)."""
    cfg = with_preset(key, cfg)
    if "arch" not in cfg or "weights" not in cfg:
        raise ConfigError(f"models.{key}: give a preset, or both arch and weights")
    arch = cfg["arch"]
    if arch not in SPECS:
        raise ConfigError(f"models.{key}.arch: unknown architecture {arch!r}. Known: {', '.join(sorted(SPECS))}")
    try:
        pre = Preprocess(**{**default_preprocess(arch).as_dict(), **cfg.get("preprocess", {})})
    except ValueError as e:
        raise ConfigError(f"models.{key}.{e}") from None
    weights, seed = cfg["weights"], cfg.get("seed", 0)
    overrides = dict(cfg.get("spec", {}))
    try:
        spec = get_spec(arch, **overrides)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"models.{key}.spec: {e}") from None
    settings = {k: v for k, v in cfg.items() if k in _OUTPUT_KEYS}
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


def weights_source(key: str, weights: str) -> WeightsSource:
    """``models.<key>.weights`` parsed; a `ConfigError` naming the key when it cannot be."""
    try:
        return parse_weights(weights)
    except WeightsError as e:
        raise ConfigError(f"models.{key}.weights: {e}") from None


def local_weights(entry: ModelEntry) -> list[str]:
    """The weights file of a model when it is a local file (a rule input: replacing it reruns)."""
    return [entry.weights] if parse_weights(entry.weights).is_local else []


def _checkpoint_name(key: str, arch: str, weights: str, seed: int) -> str:
    source = weights_source(key, weights)
    if source.kind == "random":
        return f"{arch}, random init seed {seed}"
    if source.kind == "hf-hub":
        return source.value.split("/", 1)[-1]
    return Path(weights.split("?")[0]).name


def check_config(config: dict, root: str | os.PathLike = ".") -> dict[str, ModelEntry]:
    """Checks beyond the JSON Schema; raises `ConfigError` before any job runs."""
    entries = model_entries(config)
    check_images(config["images"])
    for key, entry in entries.items():
        w = entry.weights
        source = weights_source(key, w)
        if source.kind == "hf-hub" and os.environ.get("HF_HUB_OFFLINE") == "1" and not _in_hub_cache(source.value):
            raise ConfigError(
                f"models.{key}.weights: {w} is not in the Hugging Face cache and HF_HUB_OFFLINE=1. "
                "Download it once with network, or give a local .safetensors path."
            )
        if source.is_local and not Path(root, w).is_file():
            raise ConfigError(f"models.{key}.weights: file {Path(root, w)} not found. {HELP}")
    if config["extract"].get("attention_kernel") == "fused":
        analysis, backend = config["analysis"], os.environ.get("KERAS_BACKEND", "tensorflow")
        if backend != "jax" or analysis["head_fusion"] != "mean" or analysis["discard_ratio"] != 0:
            raise ConfigError(
                f"extract.attention_kernel: fused needs KERAS_BACKEND=jax (it is {backend}), analysis.head_fusion: mean "
                f"and analysis.discard_ratio: 0 (they are {analysis['head_fusion']}, {analysis['discard_ratio']}); "
                "set attention_kernel: auto or unfused"
            )
    mode, backend = config["extract"].get("compile", "auto"), os.environ.get("KERAS_BACKEND", "tensorflow")
    if mode != "auto" and mode not in compile_modes(backend):
        raise ConfigError(
            f"extract.compile: {mode} is not a compile mode of the {backend} backend (KERAS_BACKEND); "
            f"set auto or one of {', '.join(compile_modes(backend))}"
        )
    for pair in config.get("comparisons", []):
        for key in pair:
            if key not in entries:
                raise ConfigError(f"comparisons: {key!r} is not a key under models ({', '.join(entries)})")
    video = config.get("video")
    if video and video["model"] not in entries:
        raise ConfigError(f"video.model: {video['model']!r} is not a key under models")
    return entries


def check_images(images: dict) -> int | None:
    """Refuse an image source that cannot deliver ``count`` images, before any job runs.
    Returns the number of images the run will sample, when it is cheap to know."""
    kind, path, count = images["source"], images.get("path"), images.get("count")
    if kind == "imagenet2012":
        tar = Path(path or sources.DEFAULT_MANUAL_DIR).expanduser() / sources.IMAGENET_VAL_TAR
        if not tar.is_file():
            raise ConfigError(
                f"images.source: imagenet2012 needs {tar} (ImageNet validation tar, 6.7 GB, from image-net.org "
                f"after registering); set images.path to the folder that holds it. {sources.alternatives('imagenet2012')}"
            )
        available = sources.IMAGENET_VAL_COUNT  # the sample step verifies the tar holds exactly these
    elif kind == "folder":
        if not path or not Path(path).is_dir():
            raise ConfigError(f"images.path: {path!r} is not a folder; images.source: folder needs a folder of images")
        available = len(sources.folder(path))
    elif kind == "bundled":
        available = len(sources.BUNDLED)
    else:  # imagenet_v2: known once downloaded; the sample step checks count
        return count
    if count and count > available:
        raise ConfigError(f"images.count: {count} images requested but the {kind} source has {available}; lower images.count")
    return count or available


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
