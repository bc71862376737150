"""Golden masks: every way of predicting gives the same masks as each other and as before.

The masks of a fixed seeded model on fixed inputs were recorded by the code as it was before
the batching engine was extracted from ``DextrModel`` (commit 38871fc), in
``tests/data/golden_masks.npz``; the six entry points that predict (``predict``,
``predict_image``, ``predict_iter``, ``predict_objects``, ``predict_points_file`` and the
serving predictor) must all reproduce them, at batch size 1 and 8 alike, and agree with each
other bit for bit. Against the recording, a pixel whose probability lies within
:data:`MARGIN` of the threshold may differ: another CPU's convolution kernels round differently
in the last bits (one pixel of this model is 1e-6 from the threshold).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from dextr_lib.core.geometry import extreme_points_from_mask
from dextr_lib.formats.coco import decode_segmentation
from dextr_lib.formats.objects import ImageEntry, ObjectEntry, ObjectsFile
from dextr_lib.serving.predictor import Predictor
from dextr_lib.workflows.predict import predict_objects, predict_points_file
from tests.helpers.models import new_tiny_model

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_masks.npz"
#: How close to the threshold a probability may be for its pixel to differ from the recording.
MARGIN = 1e-4
#: each object's probability sum before the refactor.
GOLDEN_PROB_SUMS = [631.82898, 114.58829, 225.22650, 433.10803, 272.90948, 556.94403, 147.26183]


def _photos():
    """Three photos of different sizes with 3, 1 and 3 disks: ``[(rgb, (K, 4, 2) points)]``."""
    rng = np.random.default_rng(7)
    out = []
    for (h, w), disks in [((64, 80), [(30, 42, 15), (10, 10, 6), (50, 65, 9)]),
                          ((48, 56), [(24, 28, 12)]),
                          ((72, 60), [(20, 20, 10), (50, 35, 14), (12, 48, 7)])]:
        yy, xx = np.mgrid[:h, :w]
        rgb = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        points = []
        for k, (cy, cx, r) in enumerate(disks):
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
            rgb[mask] = [220 - 40 * k, 200, 40 + 50 * k]
            points.append(extreme_points_from_mask(mask).astype(np.float64))
        out.append((rgb, np.stack(points)))
    return out


@pytest.fixture(scope="module")
def golden_model():
    return new_tiny_model()


@pytest.fixture(scope="module")
def photos():
    return _photos()


def _assert_golden(probs, threshold: float) -> None:
    with np.load(GOLDEN) as golden:
        assert len(probs) == sum(k.startswith("mask") for k in golden.files)
        for i, p in enumerate(probs):
            shape = tuple(int(v) for v in golden[f"shape{i}"])
            expected = np.unpackbits(golden[f"mask{i}"])[: shape[0] * shape[1]].reshape(shape).astype(bool)
            assert p.shape == shape
            differ = (p >= threshold) != expected
            assert not (differ & (np.abs(p - threshold) >= MARGIN)).any(), f"object {i}: {differ.sum()} pixels"


def _objects_file(tmp_path, photos) -> ObjectsFile:
    entries = []
    for j, (rgb, pts) in enumerate(photos):
        path = tmp_path / f"photo{j}.png"
        PIL.Image.fromarray(rgb).save(path)
        entries.append(ImageEntry(str(path), [ObjectEntry(p) for p in pts], rgb.shape[0], rgb.shape[1]))
    return ObjectsFile(entries, exif_transpose=False)


@pytest.mark.parametrize("batch_size", [1, 8])
def test_every_entry_point_gives_the_golden_masks(golden_model, photos, tmp_path, batch_size):
    model = golden_model
    thr = model.preprocess.threshold
    images = [rgb for rgb, pts in photos for _ in pts]
    points = np.concatenate([pts for _, pts in photos])

    probs = model.predict(images, points, batch_size=batch_size)
    _assert_golden(probs, thr)
    np.testing.assert_allclose([float(p.sum()) for p in probs], GOLDEN_PROB_SUMS, rtol=1e-5)
    scores = [float(p[p >= thr].mean()) if (p >= thr).any() else 0.0 for p in probs]

    def same(masks):  # bit for bit the masks of predict(), whatever the path
        assert len(masks) == len(probs)
        for m, p in zip(masks, probs):
            np.testing.assert_array_equal(m, p >= thr)

    same(model.predict(images, points, batch_size=batch_size, threshold=thr))
    same([m for rgb, pts in photos for m in model.predict_image(rgb, pts, batch_size=batch_size,
                                                                 threshold=thr)])
    iter_probs = list(model.predict_iter(photos, batch_size=batch_size))
    for a, b in zip(iter_probs, probs):
        np.testing.assert_array_equal(a, b)

    objects = _objects_file(tmp_path, photos)
    written = predict_objects(model, objects, tmp_path / "masks", batch_size=batch_size).written
    same([np.asarray(PIL.Image.open(p)) > 0 for p in written])

    cf = predict_points_file(model, objects, tmp_path / "out.json", batch_size=batch_size)
    anns = cf.annotations
    same([decode_segmentation(a["segmentation"], *rgb.shape[:2])
          for a, rgb in zip(anns, images)])
    assert [a["score"] for a in anns] == pytest.approx(scores, rel=1e-5)

    predictor = Predictor(model)
    served = [predictor.predict(f"k{i}", rgb, pts) for i, (rgb, pts) in enumerate(zip(images, points))]
    same([s.mask for s in served])
    assert [s.score for s in served] == pytest.approx(scores, rel=1e-5)
