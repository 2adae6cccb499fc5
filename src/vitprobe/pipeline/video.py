"""The video stage: last-block CLS attention over every frame of a clip."""

from __future__ import annotations

import numpy as np

from ..plots.video import attention_video_frames, write_video
from .config import model_entry
from .model import build_model


def read_video(path: str, max_frames: int) -> list:
    """The first ``max_frames`` frames of a clip Pillow reads as frames (animated GIF, APNG,
    animated WebP, multi-page TIFF), as RGB PIL images."""
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as video:
            return [frame.convert("RGB") for frame, _ in zip(ImageSequence.Iterator(video), range(max_frames))]
    except OSError as e:
        raise ValueError(
            f"{path}: not a clip Pillow can read ({e}); convert it to .gif, e.g. ffmpeg -i clip.mp4 clip.gif"
        ) from None


def attention_video(
    model_settings: dict, key: str, video: str, out: str, fps: float, max_frames: int, batch_size: int = 8
) -> None:
    """Per-frame last-block CLS attention (mean over heads) overlaid on each frame's crop."""
    model = build_model(model_entry(key, model_settings))
    frames = read_video(video, max_frames)
    if not frames:
        raise ValueError(f"{video}: no frames could be read")
    crops = model.crop(frames)
    maps = []
    for start in range(0, len(crops), batch_size):
        out_batch = model.forward_reduced(crops[start : start + batch_size])
        maps.append(out_batch.reductions["cls"].mean(axis=1))
    write_video(attention_video_frames(crops, np.concatenate(maps)), out, fps=fps)
