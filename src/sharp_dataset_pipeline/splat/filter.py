"""Keep the most visible Gaussians of a scene. Pure and vectorised.

The score is the one splat-transform's ``--filter-visibility`` uses:
``sigmoid(opacity) · exp(scale_0 + scale_1 + scale_2)`` (opacity as a logit, scales as logs), i.e.
how opaque a splat is times its volume. It is ranked in log space,
``log_sigmoid(opacity) + scale_0 + scale_1 + scale_2``, so neither the exponential nor the sigmoid
can overflow or underflow to a tie.
"""

from __future__ import annotations

import numpy as np

from sharp_dataset_pipeline.splat.gaussians import OPACITY, SCALE, Gaussians


def visibility_log_score(g: Gaussians) -> np.ndarray:
    """``log(sigmoid(opacity) · exp(sum of log scales))`` per Gaussian, float64.

    Non-finite scores (NaN from a NaN input) become ``-inf`` so they rank last.
    """
    v = g.vertices
    opacity = v[:, OPACITY].astype(np.float64)
    with np.errstate(invalid="ignore"):  # NaN inputs are handled just below
        # log(sigmoid(o)) = -log(1 + e^-o), computed without overflow for any o.
        log_alpha = -np.logaddexp(0.0, -opacity)
        score = log_alpha + v[:, SCALE].astype(np.float64).sum(axis=1)
    return np.where(np.isnan(score), -np.inf, score)


def top_visible(g: Gaussians, n: int) -> Gaussians:
    """The ``n`` Gaussians of ``g`` with the highest visibility score, in their original order.

    Ties at the cut-off are broken by lower index (earlier Gaussians win), so the result is
    deterministic. With ``n >= g.count`` every Gaussian is kept (a copy). Metadata (camera,
    extrinsic, colour space, version) is carried over; ``frame`` follows from the new count when
    the file is written. The ``disparity`` quantiles are kept as they were: they describe the depth
    range of the scene SHARP predicted, which viewers use to place the camera, and recomputing them
    on a subset biased toward large opaque splats would change that range for no gain.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n >= g.count:
        keep = np.arange(g.count)
    else:
        keep = _top_indices(visibility_log_score(g), n)
    return Gaussians(
        vertices=g.vertices[keep],
        focal_px=g.focal_px,
        width=g.width,
        height=g.height,
        disparity=g.disparity,
        color_space=g.color_space,
        version=g.version,
        extrinsic=np.array(g.extrinsic, copy=True),
    )


def _top_indices(score: np.ndarray, n: int) -> np.ndarray:
    """Sorted indices of the ``n`` highest scores, lower index first among equal scores."""
    if n == 0:
        return np.empty(0, dtype=np.intp)
    # The n-th highest value is the threshold: everything above it is kept, and as many of the
    # values equal to it as still fit, taken from the lowest indices.
    threshold = np.partition(score, score.size - n)[score.size - n]
    keep = score > threshold
    missing = n - int(keep.sum())
    keep[np.flatnonzero(score == threshold)[:missing]] = True
    return np.flatnonzero(keep)
