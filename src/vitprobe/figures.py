"""The figure stages: read the pipeline's tables and arrays, call `plots`."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import metrics, plots
from .data.preprocess import normalize


def distance_by_block(mean_table: str, model: str, label: str, out: str) -> None:
    plots.plot_distance_by_block(pd.read_parquet(mean_table), model, label, out)


def distance_comparison(mean_table: str, models: Sequence[str], labels: Mapping[str, str], out: str) -> None:
    title = "Mean attention distance: " + " vs ".join(models)
    plots.plot_distance_comparison(pd.read_parquet(mean_table), list(models), dict(labels), out, title)


def rollout(maps_files: Mapping[str, str], labels: Mapping[str, str], out: str) -> None:
    """Image | rollout per model, each model's map over the crop that model saw."""
    maps = {model: np.load(path, allow_pickle=False) for model, path in maps_files.items()}
    first = next(iter(maps.values()))
    plots.plot_rollout(
        {m: d["crops"] for m, d in maps.items()},
        {m: d["rollout"] for m, d in maps.items()},
        dict(labels),
        out,
        image_ids=first["image_ids"].tolist(),
    )


def cls_heads(maps_file: str, label: str, outs: list[str]) -> None:
    """One figure per map image (``outs[i]`` for image i)."""
    data = np.load(maps_file, allow_pickle=False)
    for index, out in enumerate(outs):
        title = f"Last-block CLS attention per head, image {data['image_ids'][index]}"
        plots.plot_cls_heads(data["crops"][index], data["cls"][index], label, out, title=title)


def patch_filters(parameters: str, label: str, out_filters: str, out_components: str, count: int, components: int) -> None:
    kernel = np.load(parameters, allow_pickle=False)["patch_kernel"]
    count = min(count, kernel.shape[-1])
    components = min(components, kernel.shape[-1], int(np.prod(kernel.shape[:3])))
    plots.plot_patch_filters(
        metrics.patch_embedding_filters(kernel, count), label, out_filters, f"Patch-embedding filters (first {count})"
    )
    plots.plot_patch_filters(
        metrics.patch_embedding_components(kernel, components),
        label,
        out_components,
        f"Principal components of the patch-embedding filters (first {components})",
    )


def position_similarity(parameters: str, label: str, out_cosine: str, out_dot: str) -> None:
    data = np.load(parameters, allow_pickle=False)
    cosine, dot = metrics.position_embedding_similarity(data["pos_embed"], int(data["grid_size"]))
    plots.plot_position_similarity(cosine, dot, label, out_cosine, out_dot)


def predictions(
    predictions: str, maps_file: str | None, published: Mapping[str, float], labels: Mapping[str, str], out: str
) -> None:
    """Accuracy per model next to the published figure, and every model's top-1 on the map images."""
    table = pd.read_parquet(predictions)
    if maps_file is None:
        plots.plot_predictions(table, None, dict(published), dict(labels), out)
        return
    data = np.load(maps_file, allow_pickle=False)
    plots.plot_predictions(table, data["crops"], dict(published), dict(labels), out, image_ids=data["image_ids"].tolist())


def top1_gallery(predictions: str, maps_file: str, model: str, label: str, out: str) -> None:
    data = np.load(maps_file, allow_pickle=False)
    plots.plot_top1_gallery(data["crops"], data["image_ids"].tolist(), pd.read_parquet(predictions), model, label, out)


def read_video(path: str, max_frames: int) -> list:
    """Frames of a video as PIL images: GIF/APNG/TIFF through Pillow; other formats need imageio."""
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as video:
            return [frame.convert("RGB") for frame, _ in zip(ImageSequence.Iterator(video), range(max_frames))]
    except OSError:
        pass
    try:
        import imageio.v3 as iio
    except ImportError:
        raise ValueError(f"{path}: Pillow cannot read this video; install imageio with ffmpeg or convert it to .gif") from None
    frames = []
    for frame in iio.imiter(path):
        if len(frames) == max_frames:
            break
        frames.append(Image.fromarray(frame).convert("RGB"))
    return frames


def attention_video(model_settings: dict, key: str, video: str, out: str, fps: float, max_frames: int, batch_size: int = 8) -> None:
    """Per-frame last-block CLS attention (mean over heads) overlaid on each frame's crop."""
    from .experiment import model_entry
    from .extraction import build_model

    model = build_model(model_entry(key, model_settings))
    frames = read_video(video, max_frames)
    if not frames:
        raise ValueError(f"{video}: no frames could be read")
    crops = model.crop(frames)
    maps = []
    for start in range(0, len(crops), batch_size):
        out_batch = model.forward_reduced(normalize(crops[start : start + batch_size], model.preprocessing))
        maps.append(out_batch.reductions["cls"].mean(axis=1))
    plots.write_video(plots.attention_video_frames(crops, np.concatenate(maps)), out, fps=fps)
