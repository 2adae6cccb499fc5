"""The video stage: last-block CLS attention over every frame of a clip."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..data.manifest import MAX_IMAGE_PIXELS
from ..plots.video import attention_video_frames, write_video
from .config import model_entry
from .model import build_model


def read_frames(path: str, max_frames: int) -> Iterator:
    """Up to ``max_frames`` frames of a clip Pillow reads as frames (animated GIF, APNG, animated
    WebP, multi-page TIFF) as RGB PIL images, one decoded at a time (the caller crops each before
    the next is read); the header's frame size is refused above the decompression-bomb limit
    before any frame is decoded."""
    from PIL import Image, ImageSequence

    try:
        video = Image.open(path)
    except OSError as e:
        raise ValueError(
            f"{path}: not a clip Pillow can read ({e}); convert it to .gif, e.g. ffmpeg -i clip.mp4 clip.gif"
        ) from None
    with video:
        width, height = video.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(
                f"{path}: frames of {width} x {height} pixels exceed the limit of {MAX_IMAGE_PIXELS:,} pixels; scale the video down"
            )
        for frame, _ in zip(ImageSequence.Iterator(video), range(max_frames)):
            yield frame.convert("RGB")


def attention_video(
    model_settings: dict, key: str, video: str, out: str, fps: float, max_frames: int, batch_size: int = 8
) -> None:
    """Per-frame last-block CLS attention (mean over heads) overlaid on each frame's crop."""
    model = build_model(model_entry(key, model_settings))
    crops = [model.crop([frame])[0] for frame in read_frames(video, max_frames)]  # one full frame in memory at a time
    if not crops:
        raise ValueError(f"{video}: no frames could be read")
    crops = np.stack(crops)
    maps = []
    for start in range(0, len(crops), batch_size):
        out_batch = model.forward_reduced(crops[start : start + batch_size])
        maps.append(out_batch.reductions["cls"].mean(axis=1))
    write_video(attention_video_frames(crops, np.concatenate(maps)), out, fps=fps)
