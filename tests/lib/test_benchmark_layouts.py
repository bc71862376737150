"""The interactive-segmentation benchmarks' file layouts read by dextr's datasets, as docs/evaluation.md
says (GrabCut, Berkeley, DAVIS, SBD val), with their ignore pixels reaching the clicker and the IoU."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
from scipy.io import savemat

from dextr_lib.core.clicker import next_click
from dextr_lib.data import build_dataset
from dextr_lib.evaluation.metrics import iou


def _photo(path, shape=(30, 40)):
    PIL.Image.fromarray(np.full(shape + (3,), 90, np.uint8)).save(path)


def _build(tmp_path, kind, images, targets, **kw):
    return build_dataset(kind, image_pat=str(images), target_pat=str(targets),
                         cache_dir=str(tmp_path / "cache"), **kw)


def test_grabcut_128_is_ignore_and_the_mask_is_one_object(tmp_path):
    # data_GT/<name>.jpg + boundary_GT/<name>.bmp: 0 background, 128 unknown band, 255 object
    (tmp_path / "data_GT").mkdir()
    (tmp_path / "boundary_GT").mkdir()
    _photo(tmp_path / "data_GT" / "flower.jpg")
    m = np.zeros((30, 40), np.uint8)
    m[5:15, 5:15] = 255
    m[20:25, 30:35] = 255  # a second part of the same object
    band = np.zeros_like(m, bool)
    band[4:16, 4:16] = True
    band[5:15, 5:15] = False
    m[band] = 128
    PIL.Image.fromarray(m).save(tmp_path / "boundary_GT" / "flower.bmp")
    ds = _build(tmp_path, "custom_label", tmp_path / "data_GT" / "*.jpg", tmp_path / "boundary_GT" / "*.bmp",
                ignore_index=128, whole_labels=True)
    assert len(ds.objects) == 1
    targets = ds.read_targets(ds.objects[0].image)
    gt = targets.object_mask(ds.objects[0])
    assert gt.sum() == 100 + 25
    assert np.array_equal(targets.ignore, band)
    # a prediction spilling over the band only: no error, perfect IoU, no click
    pred = gt | band
    assert iou(pred, gt, targets.ignore) == 1.0
    assert next_click(gt, pred, ignore=targets.ignore) is None
    assert next_click(gt, np.zeros_like(gt), ignore=targets.ignore).positive


@pytest.mark.parametrize("layout", [("images", "masks", ".jpg"), ("img", "gt", ".jpg")])
def test_berkeley_and_davis_masks_are_one_object_each(tmp_path, layout):
    # Berkeley: images/ + masks/ (0/255); DAVIS (RITM's copy): img/ + gt/, any non-zero channel
    img_dir, gt_dir, ext = layout
    (tmp_path / img_dir).mkdir()
    (tmp_path / gt_dir).mkdir()
    for name in ("a", "b"):
        _photo(tmp_path / img_dir / f"{name}{ext}")
        m = np.zeros((30, 40, 3), np.uint8)
        m[3:10, 3:20, 0] = 255
        m[15:28, 25:38, 1] = 200  # another region, another colour: still the same object
        PIL.Image.fromarray(m).save(tmp_path / gt_dir / f"{name}.png")
    ds = _build(tmp_path, "custom_mask", tmp_path / img_dir / f"*{ext}", tmp_path / gt_dir / "*.png",
                whole_labels=True)
    assert len(ds.objects) == 2
    gt = ds.read_targets(ds.objects[0].image).object_mask(ds.objects[0])
    assert gt.sum() == 7 * 17 + 13 * 13


def test_sbd_val_instances_from_the_val_list(tmp_path):
    # SBD dataset/: img/<id>.jpg, inst/<id>.mat, val.txt; the val list becomes target patterns
    root = tmp_path / "dataset"
    (root / "img").mkdir(parents=True)
    (root / "inst").mkdir()
    for i in ("2008_000002", "2008_000003", "2008_000007"):
        _photo(root / "img" / f"{i}.jpg")
        seg = np.zeros((30, 40), np.uint8)
        seg[2:12, 2:12] = 1
        seg[15:25, 20:35] = 2
        savemat(root / "inst" / f"{i}.mat", {"GTinst": {"Segmentation": seg, "Categories": np.array([[15], [12]]),
                                                        "Boundaries": np.zeros((2, 1), object)}})
    (root / "val.txt").write_text("2008_000002\n2008_000007\n")
    pats = tmp_path / "sbd_val.txt"
    pats.write_text("".join(f"{root}/inst/{i}.mat\n" for i in ("2008_000002", "2008_000007")))
    with pytest.warns(UserWarning):  # the image outside val.txt has no target
        ds = _build(tmp_path, "custom_label", root / "img" / "*.jpg", f"@{pats}", ignore_index=None)
    assert len(ds.objects) == 4
    assert sorted({o.image.split("/")[-1] for o in ds.objects}) == ["2008_000002.jpg", "2008_000007.jpg"]
    gt = ds.read_targets(ds.objects[0].image).object_mask(ds.objects[0])
    assert gt.sum() in (100, 150)
