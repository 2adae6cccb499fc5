"""uint8 crops normalised inside the compiled extract program (`vitprobe.compiled.normalize_pixels`)
against the host's numpy normalisation (`vitprobe.data.preprocess.normalize`), on every backend
and compile mode: the same input values, so the same reductions, logits and statistics."""

import os
import subprocess
import sys

import numpy as np
import pytest

import vitprobe
from vitprobe.compiled import normalize_pixels
from vitprobe.data.preprocess import Preprocess, normalize

# Normalised values lie in about [-2.2, 2.7]: two float32 roundings apart at most.
INPUT_ATOL = 5e-7


def crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random uint8 crops with every value 0..255 present, black and white included."""
    x = np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    x.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)
    return x


def test_normalize_pixels_matches_numpy():
    pre = Preprocess(mean=(0.5, 0.25, 0.75), std=(0.2, 0.4, 0.3))
    x = crops(2, 16)
    got = np.asarray(normalize_pixels(x, pre.mean, pre.std))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, normalize(x, pre), rtol=0, atol=INPUT_ATOL)


def assert_same_outputs(a, b):
    for name in a.reductions:
        np.testing.assert_allclose(a.reductions[name], b.reductions[name], rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    for name in a.representations:
        np.testing.assert_allclose(a.representations[name], b.representations[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("compile_mode", ["graph", "xla"])
def test_forward_reduced_takes_uint8_crops(compile_mode):
    # A non-ImageNet mean and std, so the program must take the model's own.
    model = vitprobe.load_model(
        "deit_base_distilled_patch16_224",
        depth=2,
        image_size=64,
        seed=3,
        compile_mode=compile_mode,
        preprocess={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    )
    x = crops(4, 64)
    in_program = model.forward_reduced(x, group_size=4)
    on_host = model.forward_reduced(normalize(x, model.preprocessing), group_size=4)
    assert_same_outputs(in_program, on_host)
    # forward() takes crops too (normalised on the host): the same attention as the float input.
    np.testing.assert_array_equal(model.forward(x).attentions[0], model.forward(normalize(x, model.preprocessing)).attentions[0])


OTHER_BACKEND = """
import numpy as np, keras, vitprobe
from vitprobe.data.preprocess import normalize
assert keras.backend.backend() == {backend!r}
model = vitprobe.load_model("vit_base_patch16_224", depth=2, image_size=64, seed=3)
x = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
a, b = model.forward_reduced(x), model.forward_reduced(normalize(x, model.preprocessing))
for name in a.reductions:
    np.testing.assert_allclose(a.reductions[name], b.reductions[name], rtol=1e-5, atol=1e-5, err_msg=name)
np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
print("ok")
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_normalise_in_program(backend):
    out = subprocess.run(
        [sys.executable, "-c", OTHER_BACKEND.format(backend=backend)],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": backend},
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
