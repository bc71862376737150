"""One rule for points and their image at every entry point (library, CLI, /api/predict, the
CVAT endpoint): points may lie a little outside the image; points wholly outside it, or any point
beyond the margin, are refused with a message that says so, and names a likely X/Y swap."""
from __future__ import annotations

import base64

import pytest
from typer.testing import CliRunner

from dextr_cli.app import app
from dextr_lib.core.geometry import check_points_in_image, point_margin, xy_to_yx
from dextr_lib.errors import InvalidPointsError

runner = CliRunner()
# The synthetic photo is 80x64 (W x H); [x, y] points.
BELOW_RIGHT = [[200, 170], [260, 170], [230, 150], [230, 200]]
ABOVE_LEFT = [[-60, -30], [-20, -30], [-40, -50], [-40, -10]]
NEAR_CORNER = [[-10, -10], [-2, -10], [-6, -14], [-6, -3]]  # within the margin, yet all outside
SLIGHTLY_OUT = [[-5, 30], [90, 30], [40, -4], [40, 70]]  # an object touching the border


def test_the_rule():
    assert point_margin((64, 80)) == 16 and point_margin((3000, 4000)) == 200
    check_points_in_image(xy_to_yx(SLIGHTLY_OUT), (64, 80))
    for pts, words in ((BELOW_RIGHT, "x=200, y=170 lies outside the 80x64 image"),
                       (ABOVE_LEFT, "x=-60, y=-30 lies outside"),
                       (NEAR_CORNER, "the four points enclose no part of the 80x64 image")):
        with pytest.raises(InvalidPointsError, match=words) as e:
            check_points_in_image(xy_to_yx(pts), (64, 80))
        assert "swap" not in str(e.value)
    # a wide, short photo (200x50) with the object's points given as [y, x]
    swapped = [[30, 20], [30, 150], [10, 90], [45, 90]]
    with pytest.raises(InvalidPointsError, match="x and y swapped: were X and Y given the wrong way round"):
        check_points_in_image(xy_to_yx(swapped), (50, 200))
    with pytest.raises(InvalidPointsError, match="object 2: "):  # (N, 4, 2): which object
        check_points_in_image(xy_to_yx([SLIGHTLY_OUT, BELOW_RIGHT]), (64, 80))


def test_library_refuses_points_outside_the_image(tiny_model, synthetic_sample):
    image = synthetic_sample[0]
    for pts in (BELOW_RIGHT, ABOVE_LEFT):
        with pytest.raises(InvalidPointsError, match="outside the 80x64 image"):
            tiny_model.predict([image], [xy_to_yx(pts)])
        with pytest.raises(InvalidPointsError, match="outside the 80x64 image"):
            tiny_model.predict_image(image, [xy_to_yx(pts)])
    assert tiny_model.predict([image], [xy_to_yx(SLIGHTLY_OUT)])[0].shape == (64, 80)


@pytest.mark.parametrize("points", [BELOW_RIGHT, ABOVE_LEFT])
def test_cli_refuses_points_outside_the_photo(photo, model_file, tmp_path, points):
    out = tmp_path / "m.png"
    args = ["predict", str(photo), "-m", str(model_file), "--out", str(out), "--device", "cpu"]
    args += [a for x, y in points for a in ("-p", f"{x},{y}")]
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "lies outside the 80x64 image" in " ".join(r.output.split()) and not out.exists()


@pytest.fixture
def client(make_client, photos):
    return make_client(photos)


@pytest.mark.parametrize("points", [BELOW_RIGHT, ABOVE_LEFT, NEAR_CORNER])
def test_servers_refuse_points_outside_the_photo(client, photo, points):
    r = client.post("/api/predict", json={"image_id": "disk.png", "points": points})
    assert r.status_code == 400 and "80x64 image" in r.json()["detail"], r.text
    # CVAT sends canvas coordinates (pixel i spans [i, i + 1)).
    body = {"image": base64.b64encode(photo.read_bytes()).decode(), "neg_points": [], "obj_bbox": None,
            "pos_points": [[x + 0.5, y + 0.5] for x, y in points]}
    r = client.post("/api/function_invocations", json=body, headers={"x-nuclio-function-name": "dextr"})
    assert r.status_code == 400 and "80x64 image" in r.json()["detail"], r.text
    ok = client.post("/api/predict", json={"image_id": "disk.png", "points": SLIGHTLY_OUT})
    assert ok.status_code == 200, ok.text
