"""top_visible: the right Gaussians, in order, ties by index, metadata kept, no overflow."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sharp_dataset_pipeline.splat.filter import top_visible, visibility_log_score
from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.splat.ply import encode_ply, validate_ply


def _scene(opacity, scales) -> Gaussians:
    n = len(opacity)
    v = np.zeros((n, 14), dtype=np.float32)
    v[:, 0] = np.arange(n)  # x records the original index
    v[:, 2] = 1.0 + np.arange(n)
    v[:, 6] = opacity
    v[:, 7:10] = np.asarray(scales, dtype=np.float32).reshape(n, 3)
    v[:, 10] = 1.0
    return Gaussians(vertices=v, focal_px=100.0, width=40, height=30)


def _brute_force(g: Gaussians, n: int) -> list[int]:
    scores = []
    for i, row in enumerate(g.vertices.tolist()):
        alpha = 1.0 / (1.0 + math.exp(-row[6]))
        scores.append((-alpha * math.exp(row[7] + row[8] + row[9]), i))
    return sorted(i for _, i in sorted(scores)[:n])


@pytest.mark.parametrize("n", [0, 1, 5, 37, 99, 100])
def test_matches_a_brute_force_ranking(make_gaussians, n):
    g = make_gaussians(100, seed=21)
    kept = top_visible(g, n)
    assert kept.count == n
    assert kept.vertices[:, 0].tolist() == g.vertices[_brute_force(g, n), 0].tolist()


def test_keeps_original_order_and_whole_rows():
    g = _scene(opacity=[0, 5, -5, 5, 0], scales=[[0, 0, 0]] * 5)
    kept = top_visible(g, 3)
    assert kept.vertices[:, 0].tolist() == [0, 1, 3]  # the two 5s and the first 0, in file order
    np.testing.assert_array_equal(kept.vertices, g.vertices[[0, 1, 3]])


def test_ties_at_the_cut_are_broken_by_lower_index():
    g = _scene(opacity=[1.0] * 10, scales=[[0.1, 0.2, 0.3]] * 10)
    assert top_visible(g, 4).vertices[:, 0].tolist() == [0, 1, 2, 3]
    h = _scene(opacity=[0, 2, 0, 0, 2, 0], scales=[[0, 0, 0]] * 6)
    assert top_visible(h, 3).vertices[:, 0].tolist() == [0, 1, 4]


def test_n_at_or_above_count_keeps_everything_as_a_copy(make_gaussians):
    g = make_gaussians(50, seed=2)
    for n in (50, 51, 10_000):
        kept = top_visible(g, n)
        np.testing.assert_array_equal(kept.vertices, g.vertices)
    kept.vertices[0, 0] = 1e9
    assert g.vertices[0, 0] != 1e9


def test_negative_n_is_refused(make_gaussians):
    with pytest.raises(ValueError):
        top_visible(make_gaussians(3), -1)


def test_extreme_values_rank_without_overflow_or_false_ties():
    # Log scores -800, -700, -900.7, -1200. Computed directly, sigmoid(-1000) is 0, exp(300) overflows
    # float32 and exp(-900) is 0: the naive score gives NaN and false ties, log space keeps the order.
    g = _scene(opacity=[-1100, -1000, 0, 30], scales=[[100] * 3, [100] * 3, [-300] * 3, [-400] * 3])
    scores = visibility_log_score(g)
    assert np.isfinite(scores).all()
    assert top_visible(g, 1).vertices[:, 0].tolist() == [1]
    assert top_visible(g, 2).vertices[:, 0].tolist() == [0, 1]
    assert top_visible(g, 3).vertices[:, 0].tolist() == [0, 1, 2]


def test_nan_ranks_last():
    g = _scene(opacity=[np.nan, -3.0, 0.0], scales=[[0, 0, 0]] * 3)
    assert top_visible(g, 2).vertices[:, 0].tolist() == [1, 2]


def test_metadata_is_kept_and_the_written_file_counts_the_kept_gaussians(make_gaussians):
    g = make_gaussians(200, seed=4)
    g.extrinsic = np.diag([1.0, 2.0, 3.0, 1.0]).astype(np.float32)
    g.color_space = 1
    kept = top_visible(g, 64)
    assert (kept.focal_px, kept.width, kept.height) == (g.focal_px, g.width, g.height)
    assert kept.disparity == g.disparity  # kept on purpose, not recomputed from the subset
    assert kept.color_space == 1 and kept.version == g.version
    np.testing.assert_array_equal(kept.extrinsic, g.extrinsic)
    assert validate_ply(encode_ply(kept)).count == 64
