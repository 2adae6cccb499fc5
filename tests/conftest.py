import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REFERENCE = TESTS / "reference"


def run_reference(script: str, *args, env: dict | None = None) -> None:
    """Run a reference script (timm, onnxruntime) in its own Python process."""
    result = subprocess.run(
        [sys.executable, str(REFERENCE / script), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if result.returncode:
        raise AssertionError(f"{script} failed:\n{result.stdout}\n{result.stderr}")


# Parity cases: timm model + kwargs on the reference side, the vitprobe arch + spec
# overrides on ours. Depth is cut where the full depth adds run time but no coverage
# (one full-depth ViT-B/16 stays).
PARITY_CASES = [
    dict(id="vit_b16", model="vit_base_patch16_224", kwargs={}, arch="vit_base_patch16_224", overrides={}),
    dict(id="vit_t16", model="vit_tiny_patch16_224", kwargs=dict(depth=2), arch="vit_tiny_patch16_224", overrides=dict(depth=2)),
    dict(id="vit_s32_384", model="vit_small_patch32_384", kwargs=dict(depth=2), arch="vit_small_patch32_384", overrides=dict(depth=2)),
    dict(id="vit_b8", model="vit_base_patch8_224", kwargs=dict(depth=1), arch="vit_base_patch8_224", overrides=dict(depth=1)),
    dict(id="vit_l16_384", model="vit_large_patch16_384", kwargs=dict(depth=1), arch="vit_large_patch16_384", overrides=dict(depth=1)),
    dict(id="deit_s", model="deit_small_patch16_224", kwargs=dict(depth=2), arch="deit_small_patch16_224", overrides=dict(depth=2)),
    dict(id="deit_t_dist", model="deit_tiny_distilled_patch16_224", kwargs=dict(depth=2), arch="deit_tiny_distilled_patch16_224", overrides=dict(depth=2)),
    dict(id="dino_s16", model="vit_small_patch16_224.dino", kwargs=dict(depth=2), arch="vit_small_patch16_224.dino", overrides=dict(depth=2)),
    dict(id="dinov2_s14", model="vit_small_patch14_dinov2", kwargs=dict(depth=2, img_size=224, num_classes=0), arch="vit_small_patch14_dinov2", overrides=dict(depth=2, image_size=224, pos_embed_grid=16)),
    dict(id="dinov2_s14_reg4", model="vit_small_patch14_reg4_dinov2", kwargs=dict(depth=2, img_size=224, num_classes=0), arch="vit_small_patch14_reg4_dinov2", overrides=dict(depth=2, image_size=224, pos_embed_grid=16)),
    # Position-embedding resampling, judged by timm's own checkpoint filter:
    # a 224 checkpoint run at 384 (upsampling), a 518 DINOv2 checkpoint run at 224 (downsampling).
    dict(id="vit_t16_224_to_384", model="vit_tiny_patch16_224", kwargs=dict(depth=2, img_size=384), checkpoint_kwargs=dict(depth=2), arch="vit_tiny_patch16_224", overrides=dict(depth=2, image_size=384)),
    # The later families (depth cut to 1-2 blocks; every block has the same code).
    dict(id="clip_b16_openai", model="vit_base_patch16_clip_quickgelu_224", kwargs=dict(depth=2), arch="vit_base_patch16_clip_quickgelu_224", overrides=dict(depth=2)),
    dict(id="clip_b16_laion", model="vit_base_patch16_clip_224.laion2b", kwargs=dict(depth=1), arch="vit_base_patch16_clip_224", overrides=dict(depth=1)),
    dict(id="siglip_b16", model="vit_base_patch16_siglip_224", kwargs=dict(depth=2), arch="vit_base_patch16_siglip_224", overrides=dict(depth=2)),
    dict(id="mae_b16", model="vit_base_patch16_224.mae", kwargs=dict(depth=1), arch="vit_base_patch16_224.mae", overrides=dict(depth=1)),
    dict(id="deit3_s16", model="deit3_small_patch16_224", kwargs=dict(depth=2), arch="deit3_small_patch16_224", overrides=dict(depth=2)),
    dict(id="deit3_b16", model="deit3_base_patch16_224", kwargs=dict(depth=1), arch="deit3_base_patch16_224", overrides=dict(depth=1)),
    dict(id="beitv2_b16", model="beitv2_base_patch16_224", kwargs=dict(depth=2), arch="beitv2_base_patch16_224", overrides=dict(depth=2)),
    dict(id="eva02_b14", model="eva02_base_patch14_224.mim_in22k", kwargs=dict(depth=2), arch="eva02_base_patch14_224", overrides=dict(depth=2)),
    dict(id="dinov2_518_to_224", model="vit_small_patch14_dinov2", kwargs=dict(depth=1, img_size=224, num_classes=0), checkpoint_kwargs=dict(depth=1, num_classes=0), arch="vit_small_patch14_dinov2", overrides=dict(depth=1, image_size=224)),
]


@pytest.fixture(scope="session")
def timm_reference(tmp_path_factory):
    """Run every timm parity case once per session (in its own process); returns the folder."""
    reference_cases = [{k: c[k] for k in ("id", "model", "kwargs", "checkpoint_kwargs") if k in c} for c in PARITY_CASES]
    out = tmp_path_factory.mktemp("timm_ref")
    cases_file = out / "cases.json"
    cases_file.write_text(json.dumps(reference_cases))
    run_reference("timm_reference.py", cases_file, out)
    return out
