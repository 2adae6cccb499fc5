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
from PIL import ExifTags, Image, ImageOps

from ..models.presets import IMAGENET_MEAN, IMAGENET_STD, arch_preprocess

# The largest resized image (in crops of the output size) that preprocessing builds in memory.
MAX_RESIZED_CROPS = 64
_ORIENTATIONS = range(2, 9)  # EXIF orientations other than "as stored" (1)
_GREY_BLOCK_PIXELS = 1 << 20  # pixels of a deep grey image scaled to 8 bits at a time

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
        # Pixels are scaled to 0..1 before normalising: mean and std are in that convention.
        if not all(math.isfinite(v) and -1 <= v <= 1 for v in self.mean):
            raise ValueError(
                f"preprocess.mean must be finite numbers in the 0-1 convention, not {list(self.mean)}{_convert(self.mean)}"
            )
        if not all(math.isfinite(v) and 0 < v <= 1 for v in self.std):
            raise ValueError(
                f"preprocess.std must be finite positive numbers in the 0-1 convention, not {list(self.std)}{_convert(self.std)}"
            )

    def geometry(self) -> tuple:
        """What decides the crop's pixels; models that share it share crops."""
        return (self.resize, self.crop_fraction, self.interpolation)

    def geometry_dict(self) -> dict:
        return dict(zip(("resize", "crop_fraction", "interpolation"), self.geometry()))

    def as_dict(self) -> dict:
        return asdict(self)


def _convert(values: tuple[float, ...]) -> str:
    """The fix for values given in the 0-255 convention: divided by 255."""
    if all(math.isfinite(v) and 1 < abs(v) <= 255 for v in values):
        return f" (0-255 convention? divide by 255: {[round(v / 255, 4) for v in values]})"
    return ""


def default_preprocess(arch: str) -> Preprocess:
    """The preprocessing that an architecture's published weights were evaluated with, looked
    up in the presets table (`vitprobe.models.presets`, checked against timm's pretrained cfgs).

    Args:
        arch: an architecture name (`vitprobe.models.spec.get_spec`).
    """
    return Preprocess(**arch_preprocess(arch))


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode (L, CMYK, RGBA, P, I;16, I, F) to 8-bit RGB.

    A multi-frame file (animated GIF, multi-page TIFF) gives its first frame. Integer grey
    above 8 bits is scaled from its container's range (16-bit: 0..65535; 32-bit values above
    65535: the image's own min..max); float grey from 0..1 when it lies there, else from its own
    min..max. So deep images are scaled down, never clipped to white or black.

    An image that needs neither is returned itself, decoded, not copied: a 196 MP photo is held once."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image.load()  # the result outlives the caller's open file
    if image.getexif().get(ExifTags.Base.Orientation, 1) in _ORIENTATIONS:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(_grey_to_uint8(np.asarray(image), image.mode), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparent pixels on white, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def _grey_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Deep grey pixels (their own dtype) scaled to uint8, computed in float64 a block of rows at
    a time: a 196 MP 16-bit scan would otherwise take 1.6 GB per float64 temporary."""
    if not np.isfinite(array).all():
        raise ValueError(f"mode {mode} image holds NaN or infinite pixel values")
    low, high = float(array.min()), float(array.max())
    if mode == "F" and low >= 0 and high <= 1:
        low, top = 0.0, 1.0
    elif mode != "F" and low >= 0 and high <= 255 and not mode.startswith("I;16"):
        low, top = 0.0, 255.0
    elif mode != "F" and low >= 0 and high <= 65535:
        low, top = 0.0, 65535.0
    else:  # float outside 0..1, or 32-bit integers outside 0..65535: the image's own range
        top = high if high > low else low + 1.0
    out = np.empty(array.shape, np.uint8)
    rows = max(1, _GREY_BLOCK_PIXELS // max(1, array.shape[1]))
    for start in range(0, array.shape[0], rows):
        block = array[start : start + rows].astype(np.float64)
        out[start : start + rows] = np.clip((block - low) / (top - low) * 255.0 + 0.5, 0, 255)
    return out


def crop(image: Image.Image | np.ndarray, image_size: int, pre: Preprocess) -> np.ndarray:
    """Resize and centre-crop one image to (image_size, image_size, 3) uint8.

    The resized image is at most `MAX_RESIZED_CROPS` crops large, whatever the source's
    geometry: a 1 x 60000 PNG (a few hundred bytes) would otherwise resize to 248 x 14.9
    million pixels before the crop. Beyond that (aspect ratios above about 1:40), only the
    crop's region of the source is resampled (``Image.resize(box=...)``, the crop box mapped to
    source coordinates): the same geometry, within one grey level of resize-then-crop (PIL
    rounds its filter weights for the two differently), one source pixel apart for ``nearest``.
    Up to the limit the crop is exactly resize-then-crop, as timm's evaluation transform."""
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
    top = int(round((new_h - image_size) / 2.0))
    left = int(round((new_w - image_size) / 2.0))
    box = (left, top, left + image_size, top + image_size)
    if (new_w, new_h) == (w, h):
        region = image.crop(box)
    elif new_w * new_h <= MAX_RESIZED_CROPS * image_size**2:
        region = image.resize((new_w, new_h), _FILTERS[pre.interpolation]).crop(box)
    else:
        sx, sy = w / new_w, h / new_h
        source_box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        region = image.resize((image_size, image_size), _FILTERS[pre.interpolation], box=source_box)
    return np.asarray(region, dtype=np.uint8)


def normalize(crops: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 (B, H, W, 3) crops -> float32 model input."""
    x = np.asarray(crops, dtype=np.float32) / 255.0
    return (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
