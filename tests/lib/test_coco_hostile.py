"""Hostile COCO files: whatever an instances file holds, reading it (and decoding what was read)
gives a result or a DextrError naming the annotation (or image) and the field, never another
exception, a crash of pycocotools or an unbounded allocation."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_api

from dextr_lib.errors import DatasetError, DextrError, LimitError
from dextr_lib.formats import coco
from dextr_lib.utils.limits import reset_limits, set_limits

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 12, 16
_BLOB = np.zeros((H, W), bool)
_BLOB[3:9, 4:11] = True


def valid_file() -> dict:
    """One image with a polygon, a compressed RLE with extreme points and an uncompressed crowd."""
    runs = [int(n) for n in np.diff(np.flatnonzero(np.diff(np.r_[-1, _BLOB.T.ravel(), -1])))]
    return {
        "info": {"description": "hostile-input base"},
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                   {"id": 2, "file_name": "b/b.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "thing"}, {"id": 7, "name": "other"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 20, "bbox": [1, 1, 5, 4],
             "segmentation": [[1, 1, 6, 1, 6, 5, 1, 5]]},
            {"id": 2, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 42, "bbox": [4, 3, 7, 6],
             "segmentation": coco.encode_mask(_BLOB), "score": 0.5,
             "extreme_points": [[7, 3], [4, 5], [7, 8], [10, 5]]},
            {"id": 3, "image_id": 2, "category_id": 1, "iscrowd": 1, "area": 42, "bbox": [4, 3, 7, 6],
             "segmentation": {"size": [H, W], "counts": [0] + runs if _BLOB[0, 0] else runs}},
        ],
    }


def read_everything(data) -> None:
    """What dextr's readers do with a file: load it, decode each mask, its area and box, its clicks."""
    cf = coco.CocoFile(data, path="in.json")
    for ann in cf.annotations:
        img = cf.image(ann["image_id"])
        mask = cf.annotation_mask(ann)
        assert mask.shape == (img["height"], img["width"])
        area, _ = coco.segmentation_area_bbox(ann.get("segmentation", []), img["height"], img["width"])
        assert area == int(mask.sum())
        if "extreme_points" in ann:
            coco.extreme_points_from_coco(ann["extreme_points"])


def test_the_base_file_reads():
    read_everything(valid_file())


def _with(path, value):
    data = valid_file()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


ANN, IMG, CAT = ("annotations", 0), ("images", 0), ("categories", 0)


@pytest.mark.parametrize("path, value, message", [
    # polygons that crash pycocotools (1e12: exit 139) or ask it for gigabytes (1e8)
    (ANN + ("segmentation",), [[0, 0, 1e12, 0, 1e12, 1e12, 0, 1e12]],
     "in.json: annotation 1: 'segmentation': polygon 0 has the point (1e+12, 0), far outside its 16x12 image"),
    (ANN + ("segmentation",), [[0, 0, 1e8, 0, 1e8, 1e8, 0, 1e8]], "polygon 0 has the point (1e+08, 0)"),
    (ANN + ("segmentation",), [[0, 0, 5, 0, float("nan"), 5]], "polygon 0 is not a list of numbers"),
    (ANN + ("segmentation",), [[0, 0, 5, 0, 5]], "polygon 0 has an odd number of coordinates (5)"),
    (ANN + ("segmentation",), [[0, 0, "5", 0, 5, 5]], "polygon 0 is not a list of numbers"),
    (ANN + ("segmentation",), [[0, 0, 16, 0] * 5000], "the polygons' outline is 160000 px long"),
    # ids, sizes and category ids of the wrong type
    (ANN + ("id",), "1", "in.json: annotations[0]: 'id' must be an integer, got '1'"),
    (ANN + ("id",), None, "annotations[0]: 'id' must be an integer, got None"),
    (ANN + ("image_id",), [1], "annotation 1: 'image_id' must be an integer, got [1]"),
    (ANN + ("category_id",), {"id": 1}, "annotation 1: 'category_id' must be an integer, got {'id': 1}"),
    (ANN + ("category_id",), True, "annotation 1: 'category_id' must be an integer, got True"),
    (IMG + ("id",), "1", "in.json: images[0]: 'id' must be an integer, got '1'"),
    (IMG + ("height",), "12", "in.json: image 1: 'height' must be an integer, got '12'"),
    (IMG + ("width",), None, "image 1: 'width' must be an integer, got None"),
    (IMG + ("width",), 0, "image 1: 'width' must be a positive integer, got 0"),
    (IMG + ("file_name",), ["a.png"], "image 1: 'file_name' must be a file name, got ['a.png']"),
    (CAT + ("id",), 1.5, "in.json: categories[0]: 'id' must be an integer, got 1.5"),
    (CAT + ("name",), None, "category 1: 'name' must be text, got None"),
    # RLE
    (("annotations", 1, "segmentation", "size"), ["a", "b"],
     "annotation 2: 'segmentation': RLE 'size' must be [height, width] (two integers), got ['a', 'b']"),
    (("annotations", 1, "segmentation", "counts"), "\u00e9\u00e9",
     "annotation 2: 'segmentation': compressed RLE counts must be ASCII text"),
    (("annotations", 1, "segmentation", "counts"), "", "compressed RLE counts add up to 0 pixels"),
    (("annotations", 1, "segmentation", "counts"), "P", "compressed RLE counts 'P' are not a COCO RLE string"),
    (("annotations", 1, "segmentation", "counts"), "0" * 5 + "\x00", "are not a COCO RLE string"),
    (("annotations", 2, "segmentation", "counts"), [1, -1, 192], "counts must be non-negative integers"),
    # the other fields readers use
    (ANN + ("bbox",), "abc", "annotation 1: 'bbox' must be [x, y, width, height] (four numbers), got 'abc'"),
    (ANN + ("bbox",), [1, 2, 3, float("inf")], "'bbox' must be [x, y, width, height]"),
    (ANN + ("area",), "20", "annotation 1: 'area' must be a number, got '20'"),
    (ANN + ("area",), 10 ** 400, "annotation 1: 'area' must be a number"),
    (ANN + ("score",), [0.5], "annotation 1: 'score' must be a number"),
    (ANN + ("iscrowd",), "0", "annotation 1: 'iscrowd' must be 0 or 1, got '0'"),
    (("annotations", 1, "extreme_points"), [[1, 2]], "annotation 2: 'extreme_points': expected four [x, y]"),
])
def test_bad_values_name_the_annotation_and_field(path, value, message):
    with pytest.raises(DatasetError) as e:
        coco.CocoFile(_with(path, value), path="in.json")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_stated_size_over_the_pixel_limit_is_refused_before_any_decoding():
    data = _with(IMG + ("height",), 10 ** 6)
    data["images"][0]["width"] = 10 ** 6
    data["annotations"] = []
    with pytest.raises(LimitError, match=r"in.json: image 1 is 1000000x1000000 = .*max_pixels"):
        coco.CocoFile(data, path="in.json")
    set_limits(max_pixels=100)
    try:
        with pytest.raises(LimitError, match="image 1 is 16x12"):
            coco.CocoFile(valid_file(), path="in.json")
    finally:
        reset_limits()


def test_deep_nesting_and_pipes_are_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"images": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(DatasetError, match="deep.json: JSON nested too deeply"):
        coco.CocoFile.load(deep)
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(DatasetError, match="not a regular file"):
        coco.CocoFile.load(tmp_path / "dir.json")


def test_degenerate_polygons_and_margins_still_read():
    """Outlines a little outside the image and polygons of fewer than 3 vertices (left out, as
    detectron2 does) are common in real files: they read."""
    data = _with(ANN + ("segmentation",), [[-3, -2, 20, -2, 20, 14, -3, 14], [1, 1, 4, 4]])
    cf = coco.CocoFile(data)
    assert cf.annotation_mask(1).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=30), st.integers(1, 9))
def test_the_rle_string_check_reads_runs_as_pycocotools_writes_them(runs, h):
    """The runs read back from pycocotools' own strings are the runs it encoded."""
    runs = [0] + runs  # starting with background
    total = sum(runs)
    w = -(-total // h) if total else 1
    runs[-1] += h * w - total
    rle = mask_api.frPyObjects({"size": [h, w], "counts": runs}, h, w)
    back = coco._rle_string_runs(rle["counts"])
    decoded = mask_api.decode(rle)
    assert int(back.sum()) == h * w
    flat = np.repeat(np.arange(len(back)) % 2, back).astype(np.uint8)
    np.testing.assert_array_equal(flat.reshape(w, h).T, decoded)


# -- the hypothesis suite: any JSON-ish mutation of a valid file -------------------------------
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
numbers = st.one_of(
    st.integers(min_value=-(10 ** 20), max_value=10 ** 20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2, 12, 16, 1e12, -1e12, 1e8, 2 ** 31, 2 ** 63, 10 ** 400, 0.5, True, False]),
)
scalars = st.one_of(st.none(), numbers, st.text(max_size=8), st.sampled_from(["0", "P", "\u00e9", "00", "1"]))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20,
)


def _paths(node, prefix=()):
    """Every path into a JSON tree (the root included)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


PATHS = list(_paths(valid_file()))


@st.composite
def mutated_files(draw):
    data = valid_file()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node = data
        try:
            for key in path[:-1]:
                node = node[key]
            if not path:
                data = draw(json_values)
                continue
            what = draw(st.sampled_from(["replace", "delete", "number"]))
            if what == "delete" and isinstance(node, dict):
                node.pop(path[-1], None)
            elif what == "number":
                node[path[-1]] = draw(numbers)
            else:
                node[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):  # an earlier mutation changed the tree
            continue
    return data


@SETTINGS
@given(mutated_files())
def test_any_mutation_reads_or_raises_a_dextr_error(data):
    try:
        read_everything(copy.deepcopy(data))
    except DextrError as e:
        assert "\n" not in str(e)


@SETTINGS
@given(mutated_files())
def test_any_mutation_through_a_file_reads_or_raises_a_dextr_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("coco") / "in.json"
    try:
        path.write_text(json.dumps(data))
    except ValueError:  # out-of-range floats are not JSON (json writes them as NaN/Infinity)
        return
    try:
        coco.CocoFile.load(path)
    except DextrError:
        pass


# -- file names relative to an images root -----------------------------------------------------
def test_file_names_are_relative_to_the_images_root(tmp_path):
    photos = [tmp_path / "data" / "images" / "a.jpg", tmp_path / "data" / "images" / "sub" / "b.jpg"]
    root = coco.common_folder(photos)
    assert root == tmp_path / "data" / "images"
    assert [coco.image_file_name(p, root) for p in photos] == ["a.jpg", "sub/b.jpg"]
    with pytest.raises(DatasetError, match="is not inside the images folder"):
        coco.image_file_name(tmp_path / "elsewhere" / "c.jpg", root)
