"""dextr_lib.formats.coco: masks <-> COCO segmentations, ExtremeNet points, instances files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from dextr_lib.core.geometry import extreme_points_from_mask
from dextr_lib.errors import DatasetError
from dextr_lib.formats import coco

# pycocotools' annToMask on NumPy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _random_masks(rng, n, h=37, w=53):
    """Blobby masks with holes, several parts and border contact: RLE must survive all of them."""
    masks = []
    for _ in range(n):
        m = rng.random((h, w)) < 0.25
        m[rng.integers(0, h):, : rng.integers(1, w)] ^= True
        masks.append(m)
    return masks


def _write_and_load(tmp_path, cf: coco.CocoFile) -> COCO:
    path = cf.save(tmp_path / "instances.json")
    return COCO(str(path))


def test_rle_round_trip_through_pycocotools_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    masks = _random_masks(rng, 6) + [np.zeros((37, 53), bool), np.ones((37, 53), bool)]
    cf = coco.CocoFile()
    img = cf.add_image("a.jpg", height=37, width=53)
    cat = cf.category_id("thing")
    ids = [cf.add_annotation(coco.annotation_from_mask(m, ann_id=None, image_id=img, category_id=cat))
           for m in masks]
    api = _write_and_load(tmp_path, cf)
    for aid, m in zip(ids, masks):
        ann = api.loadAnns(aid)[0]
        np.testing.assert_array_equal(api.annToMask(ann).astype(bool), m)
        assert ann["area"] == int(m.sum())
        assert isinstance(ann["segmentation"]["counts"], str)


def test_encode_decode_and_bbox_area():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    m[7, 1] = True
    rle = coco.encode_mask(m)
    assert rle["size"] == [10, 12] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(coco.decode_segmentation(rle, 10, 12), m)
    ann = coco.annotation_from_mask(m, ann_id=5, image_id=1, category_id=2, score=0.75)
    assert ann["bbox"] == [1, 2, 8, 6]  # x, y, w, h over both parts
    assert ann["area"] == 19 and ann["iscrowd"] == 0 and ann["score"] == 0.75 and ann["id"] == 5


def test_uncompressed_rle_is_decoded_column_major():
    # 3 x 2 image, column-major: 1 background, 3 object, 2 background
    seg = {"size": [3, 2], "counts": [1, 3, 2]}
    expect = np.array([[0, 1], [1, 0], [1, 0]], bool)
    np.testing.assert_array_equal(coco.decode_segmentation(seg, 3, 2), expect)


def test_polygons_decode_like_pycocotools_and_plane_convention():
    # pixel i covers [i, i + 1): the square from 1 to 4 covers columns 1..3
    m = coco.decode_segmentation([[1, 1, 4, 1, 4, 3, 1, 3]], 6, 6)
    expect = np.zeros((6, 6), bool)
    expect[1:3, 1:4] = True
    np.testing.assert_array_equal(m, expect)
    # degenerate polygons (< 3 vertices) enclose nothing instead of being read as a box
    assert not coco.decode_segmentation([[1, 1, 4, 3]], 6, 6).any()
    assert not coco.decode_segmentation([], 6, 6).any()


def test_mask_to_polygons_round_trip_close_and_holes_filled():
    yy, xx = np.mgrid[:60, :70]
    disk = (yy - 30) ** 2 + (xx - 30) ** 2 <= 20 ** 2
    square = np.zeros((60, 70), bool)
    square[5:15, 55:68] = True
    ring = disk & ~((yy - 30) ** 2 + (xx - 30) ** 2 <= 5 ** 2)
    polys = coco.mask_to_polygons(ring | square)
    assert len(polys) == 2 and all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
    back = coco.decode_segmentation(polys, 60, 70)
    target = disk | square  # the hole cannot be a COCO polygon: filled
    iou = (back & target).sum() / (back | target).sum()
    assert iou > 0.97
    # an axis-aligned rectangle comes back exactly (its outline runs on pixel edges)
    np.testing.assert_array_equal(coco.decode_segmentation(coco.mask_to_polygons(square), 60, 70), square)
    # a mask touching the border still gives a closed outline
    edge = np.zeros((8, 8), bool)
    edge[:, :3] = True
    np.testing.assert_array_equal(coco.decode_segmentation(coco.mask_to_polygons(edge), 8, 8), edge)


def test_polygon_annotation_in_pycocotools(tmp_path):
    m = np.zeros((30, 40), bool)
    m[4:20, 6:30] = True
    cf = coco.CocoFile()
    img = cf.add_image("p.png", 30, 40)
    aid = cf.add_annotation(coco.annotation_from_mask(
        m, ann_id=None, image_id=img, category_id=cf.category_id("box"), polygons=True))
    api = _write_and_load(tmp_path, cf)
    ann = api.loadAnns(aid)[0]
    assert isinstance(ann["segmentation"], list)
    np.testing.assert_array_equal(api.annToMask(ann).astype(bool), m)


def test_extreme_points_follow_extremenet_order():
    m = np.zeros((20, 30), bool)
    m[5:15, 8:25] = True
    m[2, 12] = True    # top
    m[17, 20] = True   # bottom
    m[9, 3:8] = True   # left tip at x=3
    m[11, 25:28] = True  # right tip at x=27
    yx = extreme_points_from_mask(m)  # left, right, top, bottom as [y, x]
    ep = coco.extreme_points_to_coco(yx)
    # ExtremeNet: [x, y] pairs, top, left, bottom, right
    assert ep == [[12, 2], [3, 9], [20, 17], [27, 11]]
    assert all(isinstance(v, int) for p in ep for v in p)
    np.testing.assert_array_equal(coco.extreme_points_from_coco(ep), yx)
    # a flat list of 8 numbers is accepted too; floats survive
    np.testing.assert_array_equal(coco.extreme_points_from_coco(sum(ep, [])), yx)
    f = yx + 0.25
    np.testing.assert_allclose(coco.extreme_points_from_coco(coco.extreme_points_to_coco(f)), f)
    ann = coco.annotation_from_mask(m, ann_id=1, image_id=1, category_id=1)
    assert ann["extreme_points"] == ep
    given = coco.annotation_from_mask(m, ann_id=1, image_id=1, category_id=1, points_yx=f)
    np.testing.assert_allclose(coco.extreme_points_from_coco(given["extreme_points"]), f)


@pytest.mark.parametrize("bad", [[[1, 2], [3, 4]], "abc", [[1, 2]] * 4 + [[0, 0]], [[1, float("nan")]] * 4])
def test_bad_extreme_points(bad):
    with pytest.raises(DatasetError, match="top, left, bottom, right"):
        coco.extreme_points_from_coco(bad, where="annotation 3")


@pytest.mark.parametrize("seg, msg", [
    ({"size": [4, 4], "counts": [1, 2]}, "add up to 3"),
    ({"size": [5, 4], "counts": "00"}, "differs"),
    ([[1, 2, 3]], "odd number"),
    ([["a", 1, 2, 3, 4, 5]], "not a list of numbers"),
    (7, "expected polygons"),
])
def test_bad_segmentations(seg, msg):
    with pytest.raises(DatasetError, match=msg):
        coco.decode_segmentation(seg, 4, 4, where="annotation 9")


def test_cocofile_edits_and_atomic_save(tmp_path):
    cf = coco.CocoFile()
    a = cf.add_image("a.jpg", 10, 10)
    assert cf.add_image("a.jpg", 10, 10) == a
    with pytest.raises(DatasetError, match="already"):
        cf.add_image("a.jpg", 11, 10)
    b = cf.add_image("b.jpg", 10, 10)
    dog, cat = cf.category_id("dog"), cf.category_id("cat")
    assert cf.category_id("dog") == dog and cf.categories == {dog: "dog", cat: "cat"}
    with pytest.raises(DatasetError, match="unknown category 'cow'.*cat, dog"):
        cf.category_id("cow", create=False)
    m = np.zeros((10, 10), bool)
    m[2:4, 2:6] = True
    i1 = cf.add_annotation(coco.annotation_from_mask(m, ann_id=None, image_id=a, category_id=dog))
    i2 = cf.add_annotation(coco.annotation_from_mask(~m, ann_id=None, image_id=b, category_id=cat))
    i3 = cf.add_annotation(coco.annotation_from_mask(m, ann_id=None, image_id=a, category_id=cat))
    assert (i1, i2, i3) == (1, 2, 3)
    with pytest.raises(DatasetError, match="already"):
        cf.add_annotation({**cf.annotation(i1)})
    with pytest.raises(DatasetError, match="image_id 99"):
        cf.add_annotation({"image_id": 99, "category_id": dog})
    cf.replace_annotation(i1, coco.annotation_from_mask(~m, ann_id=None, image_id=b, category_id=dog))
    assert [x["id"] for x in cf.annotations_of(a)] == [i3]
    assert [x["id"] for x in cf.annotations_of(b)] == [i2, i1]  # in the order they joined b
    removed = cf.remove_annotation(i2)
    assert removed["id"] == i2 and len(cf) == 2
    with pytest.raises(DatasetError, match="no annotation with id 2"):
        cf.annotation(i2)
    path = tmp_path / "out" / "instances.json"
    cf.extra["info"] = {"description": "test"}
    cf.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["instances.json"]  # no temporary left
    back = coco.CocoFile.load(path)
    assert back.to_dict() == json.loads(path.read_text()) == cf.to_dict()
    np.testing.assert_array_equal(back.annotation_mask(i1), ~m)
    assert back.path == path
    back.add_annotation(coco.annotation_from_mask(m, ann_id=None, image_id=b, category_id=dog))
    back.save()
    assert len(coco.CocoFile.load(path)) == 3


@pytest.mark.parametrize("data, msg", [
    ({"images": {}}, "'images' must be a list"),
    ({"images": [{"id": 1, "file_name": "a"}]}, r"images\[0\]: missing 'height', 'width'"),
    ({"images": [{"id": 1, "file_name": "a", "height": 1, "width": 1}] * 2}, "repeats image id 1"),
    ({"images": [], "categories": [], "annotations": [{"id": 1, "image_id": 1, "category_id": 1}]},
     "image_id 1, which is not in 'images'"),
    ({"images": [{"id": 1, "file_name": "a", "height": 1, "width": 1}], "categories": [],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 4}]}, "category_id 4"),
])
def test_invalid_files_name_the_problem(tmp_path, data, msg):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=msg):
        coco.CocoFile.load(path)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(DatasetError, match="COCO file not found: .*nope.json"):
        coco.CocoFile.load(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read COCO file"):
        coco.CocoFile.load(tmp_path / "x.json")
