"""Gradients with respect to intermediate tensors, on every Keras backend.

`keras.ops` has no gradient, so this is the one place that speaks each backend's own autodiff.
The tensors to differentiate against are offsets: zeros that the forward pass adds to an
intermediate (the softmax attention, a block's input tokens, see `VisionTransformer`'s
``probe``). Adding zero changes no value, and the gradient with respect to the offset is the
gradient with respect to the intermediate. Written this way, the same forward function runs
under TensorFlow's tape, ``jax.value_and_grad`` and ``torch.autograd`` inside the compiled
program, in one forward and one backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import keras


def value_and_offset_gradients(fn: Callable, offsets: list) -> tuple:
    """``(aux, gradients)``: ``fn(offsets)`` returns ``(value, aux)`` with a scalar ``value``;
    ``gradients`` is d value / d offset for each offset, in order. ``aux`` holds no gradient
    information (on torch it is detached)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(offsets)
            value, aux = fn(offsets)
        return aux, tape.gradient(value, offsets)
    if backend == "jax":
        import jax

        (_, aux), gradients = jax.value_and_grad(fn, has_aux=True)(offsets)
        return aux, list(gradients)
    if backend == "torch":
        import torch

        # Keras runs prediction under torch.no_grad(); the offsets alone are differentiated.
        with torch.enable_grad():
            offsets = [offset.detach().requires_grad_(True) for offset in offsets]
            value, aux = fn(offsets)
            gradients = torch.autograd.grad(value, offsets)
        return keras.tree.map_structure(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, aux), list(gradients)
    raise ValueError(f"no gradients on the Keras backend {backend!r}: use tensorflow, jax or torch")
