"""16-bit grayscale (Pillow modes I;16 and I) and float (F) photos are read, scaled to 8 bits as
image viewers show them (the 16-bit range; floats in [0, 1] by 255, other floats by their own
min..max), from real files written by Pillow, through the library and the CLI."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

from dextr_cli.app import app
from dextr_lib.core.images import read_image, scale_to_uint8, to_rgb_array

runner = CliRunner()


def _disk(h=64, w=80):
    yy, xx = np.mgrid[:h, :w]
    return (yy - 30) ** 2 + (xx - 42) ** 2 <= 15 ** 2


def test_16_bit_grayscale_files_scale_by_the_16_bit_range(tmp_path):
    gray = np.where(_disk(), 200 * 257, 40 * 257).astype(np.uint16)
    gray[0, 0] = 65535
    png = tmp_path / "g16.png"
    PIL.Image.fromarray(gray).save(png)  # a 16-bit grayscale PNG
    tif = tmp_path / "g16.tif"
    PIL.Image.fromarray(gray).save(tif)
    for path in (png, tif):
        with PIL.Image.open(path) as im:
            assert im.mode in ("I;16", "I")  # what Pillow opens these files as
        rgb = read_image(path)
        assert rgb.dtype == np.uint8 and rgb.shape == (64, 80, 3)
        assert rgb[30, 42].tolist() == [200] * 3 and rgb[5, 5].tolist() == [40] * 3 and rgb[0, 0, 0] == 255
    as_i = PIL.Image.fromarray(gray.astype(np.int32))
    np.testing.assert_array_equal(to_rgb_array(as_i), read_image(png))
    np.testing.assert_array_equal(to_rgb_array(gray), read_image(png))  # a uint16 array too


def test_float_files_scale_by_unit_range_or_their_own_range(tmp_path):
    unit = np.where(_disk(), 0.8, 0.2).astype(np.float32)
    path = tmp_path / "unit.tif"
    PIL.Image.fromarray(unit).save(path)
    rgb = read_image(path)
    assert rgb[30, 42, 0] == 204 and rgb[5, 5, 0] == 51
    depth = np.where(_disk(), 1500.0, 300.0).astype(np.float32)  # physical units, e.g. millimetres
    depth[0, 0] = np.nan
    path = tmp_path / "depth.tif"
    PIL.Image.fromarray(depth).save(path)
    rgb = read_image(path)
    assert rgb[30, 42, 0] == 255 and rgb[5, 5, 0] == 0 and rgb[0, 0, 0] == 0
    assert scale_to_uint8(np.full((2, 2), 7.0)).tolist() == [[0, 0], [0, 0]]  # flat: no division by 0


def test_cli_predicts_on_a_16_bit_photo(tmp_path, model_file):
    gray = np.where(_disk(), 60000, 9000).astype(np.uint16)
    photo = tmp_path / "scan.png"
    PIL.Image.fromarray(gray).save(photo)
    out = tmp_path / "m.png"
    r = runner.invoke(app, ["predict", str(photo), "-m", str(model_file), "-p", "27,30", "-p", "57,30",
                            "-p", "42,15", "-p", "42,45", "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "label image" not in r.output
    with PIL.Image.open(out) as m:
        assert m.size == (80, 64)


@pytest.mark.parametrize("mode", ["I;16", "F"])
def test_deep_photos_are_no_longer_taken_for_label_images(mode):
    data = np.arange(64 * 80, dtype=np.uint16 if mode == "I;16" else np.float32).reshape(64, 80)
    im = PIL.Image.fromarray(data)
    assert im.mode == mode
    rgb = to_rgb_array(im)
    assert rgb.shape == (64, 80, 3) and rgb.dtype == np.uint8
