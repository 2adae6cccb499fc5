"""uint8 crops normalised inside the compiled extract program (`vitprobe.compiled.normalize_pixels`)
against the host's numpy normalisation (`vitprobe.data.preprocess.normalize`), on every backend
and compile mode: bit-identical input values, so the same reductions, logits and statistics."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import vitprobe
from vitprobe.compiled import ReducingProgram, compile_for_backend, normalize_pixels
from vitprobe.data.preprocess import Preprocess, normalize


def crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random uint8 crops with every value 0..255 present, black and white included."""
    x = np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    x.reshape(-1)[:768] = np.repeat(np.arange(256, dtype=np.uint8), 3)  # every value in every channel
    return x


@pytest.mark.parametrize("compile_mode", ["eager", "graph", "xla"])
def test_normalize_pixels_is_bit_identical_to_numpy(compile_mode):
    pre = Preprocess(mean=(0.5, 0.25, 0.75), std=(0.2, 0.4, 0.3))
    x = crops(2, 16)

    class Normalise(keras.Model):
        def call(self, pixels):
            return normalize_pixels(pixels, pre.mean, pre.std)

    if compile_mode == "eager":
        got = np.asarray(normalize_pixels(x, pre.mean, pre.std))
    else:
        program = Normalise()
        compile_for_backend(program, compile_mode)
        got = program.predict_on_batch(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, normalize(x, pre))


def assert_same_outputs(a: dict, b: dict) -> None:
    """Two `ReducingProgram` outputs: inputs bit-identical, so agreement to float32 noise at most.
    The two programs may still sum in another order where a compiler fuses the input's lookup into
    the patch embedding (XLA picks kernels per CPU), so float32 rounding, not zero, is the bound."""
    for group in ("reductions", "representations"):
        for name in a[group]:
            np.testing.assert_allclose(a[group][name], b[group][name], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-5, atol=1e-6)


def programs(model, compile_mode=None):
    """The extract program taking uint8 crops (normalised inside) and the one taking float images."""
    made = []
    for pixels in ((model.preprocessing.mean, model.preprocessing.std), None):
        reducer, representations = model.reducer(), model.representation_reducer(4)
        made.append(ReducingProgram(reducer, model.keras_model, representations, pixels=pixels, compile_mode=compile_mode))
    return made


@pytest.mark.parametrize("compile_mode", ["graph", "xla"])
def test_program_normalises_uint8_crops(compile_mode):
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
    in_program, on_host = programs(model, compile_mode)
    assert_same_outputs(in_program.predict_on_batch(x), on_host.predict_on_batch(normalize(x, model.preprocessing)))


def test_probe_model_takes_uint8_crops():
    """On a CPU `forward_reduced` and `forward` normalise crops on the host: the float input's numbers."""
    model = vitprobe.load_model("vit_base_patch16_224", depth=2, image_size=64, seed=3)
    x, float_x = crops(2, 64), normalize(crops(2, 64), model.preprocessing)
    a, b = model.forward_reduced(x), model.forward_reduced(float_x)
    for name in a.reductions:
        np.testing.assert_array_equal(a.reductions[name], b.reductions[name], err_msg=name)
    np.testing.assert_array_equal(model.forward(x).attentions[0], model.forward(float_x).attentions[0])


OTHER_BACKEND = """
import sys
sys.path.insert(0, {tests!r})
import keras, vitprobe
from test_pixel_input import assert_same_outputs, crops, normalize, programs
assert keras.backend.backend() == {backend!r}
model = vitprobe.load_model("vit_base_patch16_224", depth=2, image_size=64, seed=3)
x = crops(4, 64)
in_program, on_host = programs(model)
assert_same_outputs(in_program.predict_on_batch(x), on_host.predict_on_batch(normalize(x, model.preprocessing)))
print("ok")
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_normalise_in_program(backend):
    script = OTHER_BACKEND.format(tests=str(Path(__file__).parent), backend=backend)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": backend}
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
