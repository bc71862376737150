"""The one module of target readers and the one stem rule, used by points-from-mask and datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dextr_lib.data import build_dataset, pair_files
from dextr_lib.errors import InvalidImageError
from dextr_lib.formats.targets import find_image_for_mask, largest_component, owner_stem, read_label_image, read_mask
from dextr_lib.workflows.points import points_from_masks


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def _rgb_mask_with_dark_blue(path: Path) -> np.ndarray:
    """An RGB mask whose object is a dark blue square (0, 0, 4) plus one bright pixel."""
    arr = np.zeros((20, 24, 3), np.uint8)
    arr[4:10, 5:12] = (0, 0, 4)
    arr[15, 20] = (255, 255, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    expected = np.zeros((20, 24), bool)
    expected[4:10, 5:12] = True
    expected[15, 20] = True
    return expected


# -- the mask rule: any non-zero colour channel is object ---------------------------------------
def test_dark_rgb_pixel_is_object(tmp_path):
    expected = _rgb_mask_with_dark_blue(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), expected)


def test_points_from_mask_and_dataset_agree_on_rgb_masks(tmp_path):
    """Both users read the same pixels as object (they disagreed on (0, 0, 4) before)."""
    expected = _rgb_mask_with_dark_blue(tmp_path / "masks" / "a_mask0.png")
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "masks" / "a.jpg")
    entries = points_from_masks([tmp_path / "masks" / "a_mask0.png"], kind="mask")
    assert entries[0].objects[0].area == expected.sum()
    ds = build_dataset("custom_mask", str(tmp_path / "masks" / "*.jpg"),
                       str(tmp_path / "masks" / "*_mask*.png"), whole_labels=True, use_cache=False)
    assert [r.area for r in ds.objects] == [int(expected.sum())]
    targets = ds.read_targets(ds.objects[0].image)
    np.testing.assert_array_equal(targets.object_mask(ds.objects[0]), expected)


def test_alpha_is_ignored_and_palette_indices_count(tmp_path):
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 3] = 255           # opaque everywhere: alpha says nothing about the object
    rgba[1:3, 1:3, 0] = 9
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert read_mask(tmp_path / "a.png").sum() == 4
    pal = Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 0, 0, 0, 200, 0, 0] + [0] * 759)  # index 1 is black, still object
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), [[False, True], [True, False]])


def test_label_image_modes(tmp_path):
    la = np.zeros((5, 5, 2), np.uint8)
    la[1:3, 1:3, 0] = 7
    la[..., 1] = 255
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    got = read_label_image(tmp_path / "la.png")
    assert got.dtype == np.int32 and set(np.unique(got)) == {0, 7}
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InvalidImageError, match="--kind mask"):
        read_label_image(tmp_path / "rgb.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InvalidImageError, match="cannot read"):
        read_mask(tmp_path / "bad.png")
    with pytest.raises(InvalidImageError, match="not found"):
        read_label_image(tmp_path / "missing.png")


def test_largest_component():
    m = np.zeros((8, 8), bool)
    m[0, 0] = True
    m[3:6, 3:6] = True
    np.testing.assert_array_equal(largest_component(m), m & (np.arange(8)[:, None] > 1))
    assert not largest_component(np.zeros((3, 3), bool)).any()


# -- the stem rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize("target, owner", [
    ("img0", "img0"), ("img0_labels", "img0"), ("img0_mask3", "img0"), ("img0-gt", "img0"),
    ("img0.seg", "img0"), ("img0b_mask0", "img0b"), ("img0_instance_2", "img0"),
    ("img0mask", None), ("img", None),
])
def test_owner_stem(target, owner):
    assert owner_stem(target, sorted(["img0", "img0b", "other"])) == owner


def test_points_from_mask_finds_photos_by_the_same_rule_as_dataset_pairing(tmp_path):
    names = ["X_mask.png", "X_mask12.png", "X-gt.png", "X_instance_3.png", "Xb_mask0.png", "Y_mask.png"]
    for n in names:
        _touch(tmp_path / "labels" / n)
    _touch(tmp_path / "images" / "X.jpg", tmp_path / "images" / "Xb.jpg")
    pairs, _, lone = pair_files([str(tmp_path / "images" / "X.jpg"), str(tmp_path / "images" / "Xb.jpg")],
                                [str(tmp_path / "labels" / n) for n in names])
    for n in names:
        found = find_image_for_mask(tmp_path / "labels" / n)
        paired = [img for img, tgts in pairs.items() if str(tmp_path / "labels" / n) in tgts]
        assert (None if found is None else found.resolve()) == (Path(paired[0]).resolve() if paired else None), n
    assert find_image_for_mask(tmp_path / "labels" / "X-gt.png").name == "X.jpg"  # was None before
    assert find_image_for_mask(tmp_path / "labels" / "Y_mask.png") is None


def test_photo_search_folders_and_order(tmp_path):
    _touch(tmp_path / "images" / "X.jpg", tmp_path / "JPEGImages" / "2007_1.jpg",
           tmp_path / "other" / "X.PNG", tmp_path / "labels" / "X_mask.png",
           tmp_path / "SegmentationObject" / "2007_1.png")
    assert find_image_for_mask(tmp_path / "labels" / "X_mask.png") == tmp_path / "labels" / "../images" / "X.jpg"
    assert find_image_for_mask(tmp_path / "SegmentationObject" / "2007_1.png").name == "2007_1.jpg"
    assert find_image_for_mask(tmp_path / "labels" / "X_mask.png", tmp_path / "other").name == "X.PNG"
    # .jpg is preferred over .png for the same stem; a target is never its own photo.
    _touch(tmp_path / "both" / "Z.png", tmp_path / "both" / "Z.jpg")
    assert find_image_for_mask(tmp_path / "both" / "Z_mask.png").name == "Z.jpg"
    assert find_image_for_mask(tmp_path / "both" / "Z.jpg").name == "Z.png"
    _touch(tmp_path / "alone" / "Q.png")
    assert find_image_for_mask(tmp_path / "alone" / "Q.png") is None


def test_other_masks_given_together_are_not_photos(tmp_path):
    """X_mask.png is not the photo of X_mask_2.png when both are inputs."""
    for n in ("X_mask.png", "X_mask_2.png"):
        m = np.zeros((6, 6), np.uint8)
        m[1:4, 1:4] = 255
        (tmp_path / "l").mkdir(exist_ok=True)
        Image.fromarray(m).save(tmp_path / "l" / n)
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "l" / "X.jpg")
    entries = points_from_masks([tmp_path / "l" / "X_mask.png", tmp_path / "l" / "X_mask_2.png"], kind="mask")
    assert len(entries) == 1 and Path(entries[0].image).name == "X.jpg" and len(entries[0].objects) == 2
