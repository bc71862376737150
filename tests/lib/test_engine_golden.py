"""Golden masks: every way of predicting gives the same masks as each other and as before.

The masks of a fixed seeded model on fixed inputs were recorded (as a hash) before the batching
engine was extracted from ``DextrModel`` (commit 559c37b); the six entry points that predict
(``predict``, ``predict_image``, ``predict_iter``, ``predict_objects``, ``predict_points_file``
and the serving predictor) must all reproduce them, at batch size 1 and 8 alike. The binary
masks are pinned exactly; the probabilities only to float tolerance, so the test holds on any
CPU's kernels.
"""
from __future__ import annotations

import hashlib

import numpy as np
import PIL.Image
import pytest
import torch

import dextr_lib
from dextr_lib.core.geometry import extreme_points_from_mask
from dextr_lib.formats.coco import decode_segmentation
from dextr_lib.formats.objects import ImageEntry, ObjectEntry, ObjectsFile
from dextr_lib.serving.predictor import Predictor
from dextr_lib.workflows.predict import predict_objects, predict_points_file

#: sha256 of the 7 binary masks (threshold 0.5, C order, concatenated) before the refactor.
GOLDEN_MASKS = "cedfe81528f6c352d28ab86f120c271ad34eb739f306874189f97ae5297b27a8"
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
    torch.manual_seed(0)
    return dextr_lib.create_model("resunet18", target_size=64, padding=4, blob_sigma=4.0)


@pytest.fixture(scope="module")
def photos():
    return _photos()


def _digest(masks) -> str:
    h = hashlib.sha256()
    for m in masks:
        h.update(np.ascontiguousarray(m, dtype=bool).tobytes())
    return h.hexdigest()


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
    assert _digest([p >= thr for p in probs]) == GOLDEN_MASKS
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
