"""High-norm tokens (Darcet et al. 2024, "Vision Transformers Need Registers"): large ViTs trained
long enough (DINOv2, OpenCLIP, DeiT III) turn a few patch tokens of low-information background into
stores of global information, with about ten times the norm of the other patches in the later blocks.

Whether a block has such tokens is read from the data, per model and block, over every image
(`high_norm_threshold`). The default rule (`mode_threshold`) looks for an upper mode: a band of
log-norms above the bulk holding many more tokens than the bulk's normal tail and the tokens on
either side of it; a block whose norms only have a long, even upper tail reports none, rather than
flagging whatever its top percentile happens to be. It holds from 10 to 10,000 images (see its
docstring and tests/test_norms.py's simulation). The widest-gap rule of earlier versions
(`gap_threshold`) and Darcet et al.'s fixed norm cutoff are options. Plain numpy: the norms
themselves are computed inside the compiled forward pass (`vitprobe.metrics.representations.token_norms`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# The spread of the bulk: the normal-consistent median absolute deviation of the log-norms.
MAD_TO_SIGMA = 1.4826
RULES = ("mode", "gap", "fixed")
# The mode rule's constants (see `mode_threshold`).
_QUARTILE_Z = 0.6744897501960817  # the standard normal's upper quartile
_BULK_EDGE = 2.6  # bands start this many bulk spreads above the bulk's median
_MIN_RATIO = 2.0  # ... and at twice the median norm or more: real bulks are skewed, high-norm tokens far out
_BULK_TAIL_EDGE = 0.5 * math.erfc(_BULK_EDGE / math.sqrt(2))  # the normal's share above _BULK_EDGE
_BAND = 0.1  # band width in log-norm (a 10% range of norms)
_SIGNIFICANCE = 4.5  # the excess of a mode, in Poisson standard deviations of what is expected
_CONTRAST = 0.5  # ... and as a fraction of it: a mode holds at least 1.5 times what is expected


def high_norm_threshold(norms: np.ndarray, rule: str = "mode", *, min_gap: float = 2.0, cutoff: float = 150.0) -> float:
    """The norm above which a patch token counts as high-norm (NaN: none), by ``rule``:
    ``mode`` (`mode_threshold`, the default), ``gap`` (`gap_threshold` with ``min_gap``) or
    ``fixed`` (``cutoff``: Darcet et al. call tokens of norm above 150 in DINOv2 ViT-g/14
    high-norm; the scale differs between models, so a fixed cutoff suits one model family).

    Args:
        norms: the patch tokens' L2 norms (one model and block, all images), any shape.
        rule: ``token_norms.rule``.
        min_gap: ``token_norms.min_gap`` (rule ``gap``).
        cutoff: ``token_norms.cutoff`` (rule ``fixed``), a norm.
    """
    if rule == "mode":
        return mode_threshold(norms)
    if rule == "gap":
        return gap_threshold(norms, min_gap)
    if rule == "fixed":
        if not (math.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a positive norm, got {cutoff}")
        return float(cutoff)
    raise ValueError(f"rule must be one of {RULES}, not {rule!r}")


def _upper_tail(z: np.ndarray) -> np.ndarray:
    """P(Z > z) of a standard normal, elementwise."""
    return 0.5 * np.array([math.erfc(v / math.sqrt(2)) for v in np.ravel(z)]).reshape(np.shape(z))


def _bulk(x: np.ndarray, rounds: int = 3) -> tuple[float, float, float]:
    """(median, spread, upper fraction) of the bulk of sorted log-norms ``x``, from its median and
    lower quartile, which tokens above the bulk do not reach: with a fraction f of such tokens,
    the bulk's quantile p is the sample's quantile p (1 - f). f is the share of tokens more than 3
    spreads above the median beyond the normal's 0.135%, re-estimated ``rounds`` times."""
    n, f = x.size, 0.0
    for _ in range(rounds):
        median = float(np.quantile(x, 0.5 * (1 - f)))
        spread = (median - float(np.quantile(x, 0.25 * (1 - f)))) / _QUARTILE_Z
        if not spread > 0:
            break
        above = n - np.searchsorted(x, median + 3 * spread, side="right")
        f = min(0.5, max(0.0, (above - n * float(_upper_tail(np.array(3.0)))) / n))
    return median, spread, f


def mode_threshold(norms: np.ndarray) -> float:
    """The norm below the upper mode of the patch tokens' norms, or NaN when there is none.

    On x = ln(norm) of every patch token given (one model and block, all images):

    1. the bulk: its median m and spread s (a normal's standard deviation) from the median and
       lower quartile, corrected for the share of tokens above the bulk (`_bulk`);
    2. every band [x_i, x_i + 0.1) that starts at a token above m + 2.6 s and above twice the median
       norm (ln 2 above m: the norms of real blocks are skewed, and a shoulder of the bulk at 1.2x
       the median is no high-norm mode; Darcet et al.'s tokens sit near 10x): its count c, and what it
       would hold without a mode, e: the bulk's normal tail in the band plus the density of the
       tokens beyond that tail on either side of it (below the band, down to m + 2.6 s, so that a
       skewed bulk's falling tail is its own background; above it,
       up to the largest token), whichever is higher, so that an even tail is no mode;
    3. the band whose excess c - e is largest against min(c - e - 4.5 sqrt(e) - 3, c - 1.5 e) is
       the upper mode if both are non-negative (significant, and 1.5 times denser than around it);
    4. the mode's lower edge is the highest token of that band above which the band keeps 99% of its
       excess (so the even background at the band's start is left out); the threshold is a fifth of
       a band (2% in norm) below it.

    Simulated (tests/test_norms.py; patch log-norms normal with spread 0.1-0.4, 10 to 10,000
    images of 196 patches, 0-1% intermediate tokens spread evenly between 2 spreads and the
    artifacts): artifacts of 0.5-5% of the tokens at 3-20x the median are found with a mean
    recall of at least 0.95 and a mean false-positive rate below 0.2% in every setting, and
    draws without artifacts (with 0-1% of tokens spread up to 20x the median) flag nothing in
    99% or more. A block must hold a handful of high-norm tokens to be found (8 or more, at 10
    images); the hardest setting is the smallest: few images, artifacts at 3x a wide bulk.

    Args:
        norms: the patch tokens' L2 norms, any shape (flattened); all finite and positive.
    """
    x = _log_norms(norms)
    if x.size < 3:
        return float("nan")
    n = x.size
    median, spread, f = _bulk(x)
    if not spread > 0:
        return float("nan")
    edge = median + _BULK_EDGE * spread  # where the tokens around a band are counted from
    tail = x[np.searchsorted(x, edge, side="right") :]
    first = np.searchsorted(tail, median + math.log(_MIN_RATIO), side="right") if edge < median + math.log(_MIN_RATIO) else 0
    upper = tail[first:]  # the bands' starts
    if upper.size < 3:
        return float("nan")
    ends = np.searchsorted(upper, upper + _BAND, side="left")
    counts = ends - np.arange(upper.size)
    z = (upper - median) / spread
    bulk_tail = (1 - f) * n * _upper_tail(z)
    in_band = bulk_tail - (1 - f) * n * _upper_tail(z + _BAND / spread)
    from_edge = (1 - f) * n * _BULK_TAIL_EDGE
    below = np.maximum(first + np.arange(upper.size) - (from_edge - bulk_tail), 0)
    below_density = below * _BAND / np.maximum(upper - edge, _BAND)
    above_density = (upper.size - ends) * _BAND / np.maximum(upper[-1] - upper - _BAND, _BAND)
    expected = in_band + np.maximum(below_density, above_density)
    excess = counts - expected
    score = np.minimum(excess - _SIGNIFICANCE * np.sqrt(expected) - 3, excess - _CONTRAST * expected)
    best = int(np.argmax(score))
    if score[best] < 0:
        return float("nan")
    # The mode's lower edge: the highest token of the band from which up the band still holds 99% of
    # its excess (the even background at the band's start is trimmed), then a fifth of a band below.
    band = upper[best : ends[best]]
    top = upper[best] + _BAND
    z_band = (band - median) / spread
    trimmed = np.arange(band.size, 0, -1) - (
        (1 - f) * n * (_upper_tail(z_band) - float(_upper_tail(np.array((top - median) / spread))))
        + (expected[best] - in_band[best]) * (top - band) / _BAND
    )
    edge = band[np.flatnonzero(trimmed >= 0.99 * excess[best])[-1]]
    return float(np.exp(edge - _BAND / 5))


def _log_norms(norms: np.ndarray) -> np.ndarray:
    norms = np.asarray(norms, dtype=np.float64).ravel()
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        raise ValueError("token norms must be finite and positive")
    return np.sort(np.log(norms))


def gap_threshold(norms: np.ndarray, min_gap: float = 2.0) -> float:
    """The norm above which a patch token counts as high-norm, or NaN when the norms have no upper mode.

    The widest-gap rule (the default of earlier versions), on x = ln(norm) of every patch token
    given (one model and block, all images):

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
    reports none, which is why it fails on many images (a gap needs an empty stretch, and among
    many tokens a few always fall inside it): `mode_threshold` is the default.

    Args:
        norms: the patch tokens' L2 norms, any shape (flattened); all finite and positive.
        min_gap: the narrowest gap, in units of s, that separates an upper mode (``token_norms.min_gap``).

    Returns:
        The threshold (a norm), NaN when there is no upper mode or no spread to measure the gap by
        (fewer than 3 tokens, or more than half of them with one norm).
    """
    if not min_gap > 0:
        raise ValueError(f"min_gap must be positive, got {min_gap}")
    x = _log_norms(norms)
    if x.size < 3:
        return float("nan")
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
