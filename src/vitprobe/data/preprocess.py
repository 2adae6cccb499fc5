"""Image preprocessing as data: geometry (resize + centre crop, done once per image) and
normalisation (cheap, per model).

``resize="shorter"`` is the official evaluation (timm, DeiT, AugReg): the shorter side goes
to ``floor(image_size / crop_fraction)``, aspect kept, then a centre crop. ``resize="square"``
is what the probing-vits notebooks do: squash to a square of that size (aspect lost), then crop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # with this std: scaling to [-1, 1]
INCEPTION_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's statistics, kept by EVA-02
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocess:
    resize: str = "shorter"
    crop_fraction: float = 0.9
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.resize not in ("shorter", "square"):
            raise ValueError(f"preprocess.resize must be 'shorter' or 'square', not {self.resize!r}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"preprocess.crop_fraction must be in (0, 1], not {self.crop_fraction}")
        if self.interpolation not in _FILTERS:
            raise ValueError(f"preprocess.interpolation must be one of {sorted(_FILTERS)}, not {self.interpolation!r}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def geometry(self) -> tuple:
        """What decides the crop's pixels; models that share it share crops."""
        return (self.resize, self.crop_fraction, self.interpolation)

    def geometry_dict(self) -> dict:
        return dict(zip(("resize", "crop_fraction", "interpolation"), self.geometry()))

    def as_dict(self) -> dict:
        return asdict(self)


def default_preprocess(arch: str) -> Preprocess:
    """The preprocessing that each family's published weights were evaluated with (timm's pretrained cfgs)."""
    if arch in _LATER_FAMILIES:
        return _LATER_FAMILIES[arch]
    # DINOv2 and the 384 px fine-tunes are evaluated on the full resized image (no margin).
    crop_fraction = 1.0 if "dinov2" in arch or arch.endswith("_384") else 0.9
    if arch.startswith("vit_") and not arch.endswith(".dino") and "dinov2" not in arch:
        # AugReg / original ViT: [-1, 1]
        return Preprocess(crop_fraction=crop_fraction, mean=INCEPTION_MEAN, std=INCEPTION_STD)
    return Preprocess(crop_fraction=crop_fraction)  # DeiT, DINO, DINOv2: ImageNet statistics


# Archs whose name alone would fall in the wrong branch below, with timm's cfg for their weights
# (the CLIP arch with exact GELU is the LAION tower, crop_pct 1.0; the QuickGELU one is OpenAI's, 0.9).
_LATER_FAMILIES = {
    "vit_base_patch16_clip_224": Preprocess(crop_fraction=1.0, mean=CLIP_MEAN, std=CLIP_STD),
    "vit_base_patch16_clip_quickgelu_224": Preprocess(crop_fraction=0.9, mean=CLIP_MEAN, std=CLIP_STD),
    "vit_base_patch16_siglip_224": Preprocess(crop_fraction=0.9, mean=INCEPTION_MEAN, std=INCEPTION_STD),
    "vit_base_patch16_224.mae": Preprocess(crop_fraction=0.9),
    "eva02_base_patch14_224": Preprocess(crop_fraction=0.9, mean=CLIP_MEAN, std=CLIP_STD),
}


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode (L, CMYK, RGBA, P, I;16) to 8-bit RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale the full range down to 8 bits rather than clipping.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparent pixels on white, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def crop(image: Image.Image | np.ndarray, image_size: int, pre: Preprocess) -> np.ndarray:
    """Resize and centre-crop one image to (image_size, image_size, 3) uint8."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = to_rgb(image)
    scaled = math.floor(image_size / pre.crop_fraction)
    w, h = image.size
    if pre.resize == "square":
        new_w = new_h = scaled
    elif w <= h:
        new_w, new_h = scaled, int(scaled * h / w)
    else:
        new_w, new_h = int(scaled * w / h), scaled
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), _FILTERS[pre.interpolation])
    top = int(round((new_h - image_size) / 2.0))
    left = int(round((new_w - image_size) / 2.0))
    return np.asarray(image.crop((left, top, left + image_size, top + image_size)), dtype=np.uint8)


def normalize(crops: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 (B, H, W, 3) crops -> float32 model input."""
    x = np.asarray(crops, dtype=np.float32) / 255.0
    return (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
