"""The simulated annotator (RITM's next-click rule) against cases worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dextr_lib.core.clicker import Click, error_distances, next_click
from dextr_lib.errors import MismatchError


def _mask(shape, *boxes):
    m = np.zeros(shape, bool)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def test_missed_side_of_a_square_gets_a_positive_click_in_the_middle_of_the_missed_strip():
    # object rows 2..11, cols 2..11; the prediction misses columns 8..11 (a 10x4 strip)
    gt = _mask((14, 14), (2, 12, 2, 12))
    pred = _mask((14, 14), (2, 12, 2, 8))
    click = next_click(gt, pred)
    # the strip's pixels in columns 9 and 10, rows 3..10, are 2 px from the nearest pixel outside
    # it (column 7 or 12, row 1 or 12); the first of them in row-major order is (3, 9)
    assert click == Click(3, 9, True)
    fn, fp = error_distances(gt, pred)
    assert fn.max() == 2.0 and fp.max() == 0.0


def test_false_positive_blob_gets_a_negative_click_at_its_centre():
    gt = _mask((20, 20), (2, 8, 2, 8))
    pred = gt | _mask((20, 20), (11, 16, 11, 16))  # a 5x5 blob outside the object
    assert next_click(gt, pred) == Click(13, 13, False)


def test_larger_error_wins_whatever_its_sign():
    gt = _mask((30, 30), (0, 30, 0, 15))
    pred = gt.copy()
    pred[20:23, 20:23] = True  # 3x3 false positive: depth 2
    pred[5:12, 3:10] = False  # 7x7 hole: depth 4
    assert next_click(gt, pred) == Click(8, 6, True)


def test_a_tie_gives_a_negative_click():
    gt = _mask((20, 20), (0, 20, 0, 10))
    pred = gt.copy()
    pred[3:6, 3:6] = False  # 3x3 false negative, depth 2 at (4, 4)
    pred[13:16, 13:16] = True  # 3x3 false positive, depth 2 at (14, 14)
    fn, fp = error_distances(gt, pred)
    assert fn.max() == fp.max() == 2.0
    assert next_click(gt, pred) == Click(14, 14, False)


def test_ties_inside_one_region_go_to_the_first_pixel_in_row_major_order():
    gt = _mask((10, 10), (2, 4, 1, 9))  # a 2x8 bar missed entirely: every pixel has depth 1
    click = next_click(gt, np.zeros_like(gt))
    assert click == Click(2, 1, True)


def test_the_image_border_counts_as_a_boundary():
    # a missed object filling the left 4 columns: without padding its column 0 would be
    # 4 px deep; with the border as boundary the deepest column is 1 or 2 (depth 2)
    gt = _mask((9, 9), (0, 9, 0, 4))
    fn, _ = error_distances(gt, np.zeros_like(gt))
    assert fn[4, 0] == 1.0
    assert fn.max() == 2.0
    assert next_click(gt, np.zeros_like(gt)) == Click(1, 1, True)


def test_whole_image_missed_clicks_the_centre():
    gt = np.ones((7, 7), bool)
    assert next_click(gt, np.zeros_like(gt)) == Click(3, 3, True)


def test_ignored_pixels_are_no_error_and_split_the_region():
    gt = _mask((12, 12), (1, 11, 1, 11))
    pred = np.zeros_like(gt)
    ignore = np.zeros_like(gt)
    ignore[:, 6] = True  # a void line through the missed object: it bounds the error
    fn, _ = error_distances(gt, pred, ignore=ignore)
    assert fn[:, 6].max() == 0.0
    assert fn.max() == 3.0  # the 10x5 left half is 3 px deep at its middle column
    assert next_click(gt, pred, ignore=ignore) == Click(3, 3, True)
    # an error only on ignored pixels is no error
    assert next_click(gt, pred, ignore=gt) is None


def test_clicked_pixels_are_never_clicked_again():
    gt = _mask((7, 7), (2, 5, 2, 5))  # 3x3 missed: only the centre is 2 deep
    pred = np.zeros_like(gt)
    first = next_click(gt, pred)
    assert first == Click(3, 3, True)
    second = next_click(gt, pred, clicked=[first])
    assert second == Click(2, 2, True)  # the ring's depth-1 pixels, first in row-major order
    # [y, x] pairs (e.g. float extreme points) are rounded to their pixel
    assert next_click(gt, pred, clicked=[(3.2, 2.9), (-5, 40)]) == Click(2, 2, True)


def test_no_error_or_nothing_left_to_click_gives_none():
    gt = _mask((6, 6), (1, 4, 1, 4))
    assert next_click(gt, gt.copy()) is None
    one = np.zeros((6, 6), bool)
    one[2, 2] = True
    assert next_click(one, np.zeros_like(one), clicked=[(2, 2)]) is None


def test_diagonal_distances_are_euclidean():
    gt = _mask((12, 12), (1, 11, 1, 11))
    pred = gt.copy()
    pred[1:11, 1:11] = False
    pred[4:11, 4:11] = True  # the miss is an L along the top and left: its corner is deepest
    fn, _ = error_distances(gt, pred)
    # the L is 3 px thick: its depth is 2 along the arms, and the corner pixel (3, 3) sits
    # sqrt(2) from the inner corner (4, 4)
    assert fn[3, 3] == pytest.approx(math.sqrt(2))
    assert fn.max() == 2.0


def test_shapes_are_checked():
    with pytest.raises(MismatchError):
        next_click(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(MismatchError):
        next_click(np.zeros((4, 4), bool), np.zeros((4, 4), bool), ignore=np.zeros((3, 4), bool))


def _ritm_next_click(gt, pred, ignore, clicked):
    """RITM's rule written out naively (loops, no padding trick), to cross-check on random masks."""
    h, w = gt.shape
    valid = ~ignore
    best = {}
    for positive, err in ((True, gt & ~pred & valid), (False, ~gt & pred & valid)):
        dist = np.zeros((h, w))
        outside = [(y, x) for y in range(-1, h + 1) for x in range(-1, w + 1)
                   if not (0 <= y < h and 0 <= x < w) or not err[y, x]]
        out = np.array(outside, dtype=float)
        for y, x in zip(*np.nonzero(err)):
            if (y, x) not in clicked:
                dist[y, x] = np.sqrt(((out - (y, x)) ** 2).sum(1)).min()
        best[positive] = dist
    fn, fp = best[True], best[False]
    if fn.max() == 0 and fp.max() == 0:
        return None
    positive = fn.max() > fp.max()
    d = fn if positive else fp
    ys, xs = np.where(d == d.max())
    return Click(int(ys[0]), int(xs[0]), bool(positive))


@pytest.mark.parametrize("seed", range(12))
def test_matches_a_naive_transcription_of_the_rule_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(5, 14)), int(rng.integers(5, 14)))
    gt = rng.random(shape) < 0.5
    pred = rng.random(shape) < 0.5
    ignore = rng.random(shape) < 0.1
    if seed % 2:  # errors in a window away from the border (the transform works on their box)
        window = np.zeros(shape, bool)
        window[2:shape[0] - 2, 3:shape[1] - 1] = True
        gt &= window
        pred &= window
    clicked = {(int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))) for _ in range(3)}
    assert next_click(gt, pred, ignore=ignore, clicked=list(clicked)) == _ritm_next_click(gt, pred, ignore, clicked)
