"""objects.json reading/writing, and overlays."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dextr_lib.core.geometry import xy_to_yx, yx_to_xy
from dextr_lib.errors import DatasetError, InvalidPointsError
from dextr_lib.formats.objects import (FORMAT_VERSION, ImageEntry, ObjectEntry, objects_from_dict,
                                       read_objects, write_objects)
from dextr_lib.formats.overlay import draw_overlay


def test_xy_yx_conversion():
    xy = [[1, 2], [3, 4.5]]
    np.testing.assert_array_equal(xy_to_yx(xy), [[2, 1], [4.5, 3]])
    np.testing.assert_array_equal(yx_to_xy(xy_to_yx(xy)), xy)


def test_round_trip_with_relative_paths(tmp_path):
    pts = np.array([[10, 2], [12, 40.25], [1, 20], [30, 22]])
    entries = [ImageEntry(str(tmp_path / "img" / "a.jpg"),
                          [ObjectEntry(pts, label=3, source=str(tmp_path / "lab" / "a.png"), area=99)], 50, 60),
               ImageEntry(None, [], 5, 6)]
    path = tmp_path / "out" / "objects.json"
    write_objects(entries, path)
    raw = json.loads(path.read_text())
    assert raw["images"][0]["image"] == "../img/a.jpg"
    assert raw["images"][0]["objects"][0]["points_xy"] == [[2, 10], [40.25, 12], [20, 1], [22, 30]]
    assert raw["point_order"] == ["left", "right", "top", "bottom"]
    back = read_objects(path)
    assert back.n_objects == 1 and back.exif_transpose is False
    o = back.images[0].objects[0]
    np.testing.assert_array_equal(o.points, pts)
    assert (o.label, o.area) == (3, 99)
    assert back.images[1].image is None
    assert [p.name for p in path.parent.iterdir()] == ["objects.json"]  # no temp file left


def test_hand_written_file_defaults_to_viewer_orientation():
    f = objects_from_dict({"format": "dextr-objects", "format_version": 1,
                           "images": [{"image": "a.jpg", "objects": [{"points_xy": [[0, 1], [5, 2], [2, 0], [3, 6]]}]}]})
    assert f.exif_transpose is True and f.images[0].objects[0].points[0].tolist() == [1, 0]


@pytest.mark.parametrize(
    "data, error, needle",
    [
        ([], DatasetError, "not a dextr objects file"),
        ({"format": "dextr-objects", "format_version": 9, "images": []}, DatasetError, "format_version"),
        ({"format": "dextr-objects", "format_version": 1, "images": {}}, DatasetError, "list"),
        ({"format": "dextr-objects", "format_version": 1, "images": [{"image": 3, "objects": []}]},
         DatasetError, "images[0].image"),
        ({"format": "dextr-objects", "format_version": 1, "images": [{"objects": [{"points": []}]}]},
         DatasetError, "points_xy"),
        ({"format": "dextr-objects", "format_version": 1,
          "images": [{"objects": [{"points_xy": [[1, 2], [3, 4]]}]}]}, InvalidPointsError, "(2, 2)"),
        ({"format": "dextr-objects", "format_version": 1,
          "images": [{"objects": [{"points_xy": [[1, 1]] * 4}]}]}, InvalidPointsError, "zero size"),
    ],
)
def test_bad_files_name_the_entry(data, error, needle):
    with pytest.raises(error) as e:
        objects_from_dict(data, source="o.json")
    assert needle in str(e.value) and "o.json" in str(e.value)


def test_unreadable_json(tmp_path):
    (tmp_path / "o.json").write_text("{nope")
    with pytest.raises(DatasetError, match="cannot read"):
        read_objects(tmp_path / "o.json")
    with pytest.raises(DatasetError, match="not found"):
        read_objects(tmp_path / "missing.json")


def test_overlay_tints_outlines_and_marks_points(synthetic_sample):
    image, mask, pts = synthetic_sample
    ov = draw_overlay(image, [mask], [pts], alpha=0.5, colors=[(255, 0, 0)])
    assert ov.shape == image.shape and ov.dtype == np.uint8
    assert np.array_equal(ov[~mask & (np.indices(mask.shape)[0] > 60)],
                          image[~mask & (np.indices(mask.shape)[0] > 60)])  # far outside: untouched
    inside = (30, 42)  # disk centre: tinted halfway to red
    np.testing.assert_allclose(ov[inside], np.round(0.5 * image[inside] + [127.5, 0, 0]), atol=1)
    edge = (16, 37)  # a boundary pixel of the disk away from the top point's marker
    assert mask[edge] and not mask[15, 37] and tuple(ov[edge]) == (255, 0, 0)
    y, x = pts[0]  # marker with a white ring around the left point
    assert (ov[y - 4:y + 5, x - 4:x + 5] == 255).all(axis=-1).any()
    with pytest.raises(ValueError, match="shape"):
        draw_overlay(image, [mask[:10]])


def test_objects_carry_corrections_round_trip_and_version_1_files_still_read(tmp_path):
    pts = np.array([[5, 1], [5, 9], [1, 5], [9, 5]], dtype=float)
    pos = np.array([[4.0, 6.0], [5.5, 3.0]])
    write_objects([ImageEntry("a.png", [ObjectEntry(pts, positive=pos), ObjectEntry(pts)])], tmp_path / "o.json")
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["format_version"] == FORMAT_VERSION == 2
    first, second = data["images"][0]["objects"]
    assert first["positive_xy"] == [[6, 4], [3, 5.5]] and "negative_xy" not in first
    assert "positive_xy" not in second
    back = read_objects(tmp_path / "o.json").images[0].objects
    np.testing.assert_array_equal(back[0].positive, pos)
    assert back[0].negative is None and back[1].positive is None
    data["format_version"] = 1
    del first["positive_xy"]
    second["negative_xy"] = []
    old = objects_from_dict(data)
    assert old.images[0].objects[0].positive is None
    assert old.images[0].objects[1].negative.shape == (0, 2)
    first["negative_xy"] = [[1, 2, 3]]
    with pytest.raises(InvalidPointsError, match="negative_xy must be a list of"):
        objects_from_dict(data)
