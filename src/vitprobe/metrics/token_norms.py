"""High-norm tokens (Darcet et al. 2024, "Vision Transformers Need Registers"): large ViTs trained
long enough (DINOv2, OpenCLIP, DeiT III) turn a few patch tokens of low-information background into
stores of global information, with about ten times the norm of the other patches in the later blocks.

Whether a block has such tokens is read from the data, per model and block, over every image: the
patch tokens' norms must fall into a bulk and a separate upper mode, with an empty stretch of norms
between them that is wide compared with the bulk's own spread (`high_norm_threshold`). A block
whose norms only have a long upper tail has no such gap and reports no high-norm tokens, rather
than flagging whatever its top percentile happens to be. Plain numpy: the norms themselves are
computed inside the compiled forward pass (`vitprobe.metrics.representations.token_norms`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The spread of the bulk: the normal-consistent median absolute deviation of the log-norms.
MAD_TO_SIGMA = 1.4826


def high_norm_threshold(norms: np.ndarray, min_gap: float = 2.0) -> float:
    """The norm above which a patch token counts as high-norm, or NaN when the norms have no upper mode.

    The rule, on x = ln(norm) of every patch token given (one model and block, all images):

    1. s = 1.4826 * median(|x - median(x)|), the bulk's robust spread (a standard deviation for
       normal x; the high-norm tokens are a small minority and barely move it);
    2. sort x and take the widest gap between consecutive values at or above the median, so the
       upper mode holds fewer than half of the tokens;
    3. if that gap is at least ``min_gap * s`` wide, the threshold is the geometric midpoint of its
       two ends, exp((x_lo + x_hi) / 2), and the tokens above it (the upper mode) are high-norm;
       otherwise there is no upper mode and the threshold is NaN.

    Measured in units of the bulk's spread, a gap says "separate mode" whatever the norms' scale;
    the log makes it a ratio of norms. For log-norms from one normal mode the widest such gap
    reaches 2 s in about 3 of 1,000 samples of 196 (one image's patches at 224 px, patch 16) and
    in none of 1,000 samples of 2,560 (simulated), while the high-norm tokens of Darcet et al. sit
    several spreads above the bulk. A few tokens inside the valley split the gap; such a block
    reports none.

    Args:
        norms: the patch tokens' L2 norms, any shape (flattened); all finite and positive.
        min_gap: the narrowest gap, in units of s, that separates an upper mode (``token_norms.min_gap``).

    Returns:
        The threshold (a norm), NaN when there is no upper mode or no spread to measure the gap by
        (fewer than 3 tokens, or more than half of them with one norm).
    """
    if not min_gap > 0:
        raise ValueError(f"min_gap must be positive, got {min_gap}")
    norms = np.asarray(norms, dtype=np.float64).ravel()
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        raise ValueError("token norms must be finite and positive")
    if norms.size < 3:
        return float("nan")
    x = np.sort(np.log(norms))
    median = np.median(x)
    spread = MAD_TO_SIGMA * np.median(np.abs(x - median))
    if spread <= 0:
        return float("nan")
    upper = x[np.searchsorted(x, median, side="left") :]
    gaps = np.diff(upper)
    if gaps.size == 0:
        return float("nan")
    widest = int(np.argmax(gaps))
    if gaps[widest] < min_gap * spread:
        return float("nan")
    return float(np.exp((upper[widest] + upper[widest + 1]) / 2))


def token_kinds(prefix_kinds: Sequence[str], num_tokens: int) -> dict[str, np.ndarray]:
    """Token indices of each kind, for a model whose tokens are its prefix tokens (``prefix_kinds``,
    e.g. ``("cls", "register", "register")``, `ViTSpec.prefix_tokens`) then its patches: ``patch``
    first, then each prefix kind in order of first appearance.

    Args:
        prefix_kinds: the kind of each prefix token, in token order.
        num_tokens: every token, prefix and patches.
    """
    prefix = len(prefix_kinds)
    if num_tokens <= prefix:
        raise ValueError(f"{num_tokens} tokens leave no patches after {prefix} prefix tokens")
    kinds = {"patch": np.arange(prefix, num_tokens)}
    for kind in dict.fromkeys(prefix_kinds):
        kinds[kind] = np.array([i for i, k in enumerate(prefix_kinds) if k == kind])
    return kinds
