"""Datasets: stem pairing, label decoding, object indexing and its cache, VOC/SBD readers."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dextr_lib.data as dsmod
from dextr_lib.data import build_dataset, expand_patterns, pair_files
from dextr_lib.errors import DatasetError, InvalidImageError
from dextr_lib.formats.targets import read_label_image


def _touch(paths):
    for p in paths:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_bytes(b"")
    return [str(p) for p in paths]


def _palette_png(path: Path, label: np.ndarray) -> None:
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in (i, (i * 7) % 256, (i * 13) % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _rgb(path: Path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


def _label_with_regions() -> np.ndarray:
    """40x50: label 1 has two regions (areas 20 and 6), label 2 one (area 12), a void band."""
    lab = np.zeros((40, 50), np.uint8)
    lab[2:6, 2:7] = 1  # 20 px
    lab[30:32, 40:43] = 1  # 6 px, not touching the first region
    lab[10:13, 20:24] = 2  # 12 px
    lab[:, 48:] = 255
    return lab


# -- pairing ------------------------------------------------------------------------------------
def test_pairing_takes_the_longest_stem_followed_by_a_separator(tmp_path):
    images = _touch([tmp_path / "im" / n for n in ("img0.jpg", "img0b.jpg", "img1.jpg", "img2.jpg")])
    targets = _touch([tmp_path / "tg" / n for n in (
        "img0_mask10.png", "img0_mask2.png", "img0_mask0.png",  # img0's, in numeric order
        "img0b_mask0.png", "img0b.png",  # img0b's, never img0's
        "img1-labels.png",  # '-' is a separator too
        "img12_mask0.png", "other.png",  # nobody's: img1 must not take img12
    )])
    pairs, lone_images, lone_targets = pair_files(images, targets)
    name = lambda ps: [os.path.basename(p) for p in ps]  # noqa: E731
    assert {os.path.basename(k): name(v) for k, v in pairs.items()} == {
        "img0.jpg": ["img0_mask0.png", "img0_mask2.png", "img0_mask10.png"],
        "img0b.jpg": ["img0b.png", "img0b_mask0.png"],
        "img1.jpg": ["img1-labels.png"],
    }
    assert name(lone_images) == ["img2.jpg"]
    assert sorted(name(lone_targets)) == ["img12_mask0.png", "other.png"]


def test_pairing_rejects_duplicate_image_stems(tmp_path):
    images = _touch([tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png"])
    with pytest.raises(DatasetError, match="share the stem 'x'"):
        pair_files(images, [])


def test_patterns_unite_and_list_files(tmp_path):
    files = _touch([tmp_path / f"p{i:02d}.png" for i in range(12)])
    got = expand_patterns([str(tmp_path / "p0[0-2].png"), str(tmp_path / "p11.png")])
    assert [os.path.basename(f) for f in got] == ["p00.png", "p01.png", "p02.png", "p11.png"]
    lst = tmp_path / "list.txt"
    lst.write_text("# two files\np05.png\n\np07.png\n")
    assert [os.path.basename(f) for f in expand_patterns("@" + str(lst))] == ["p05.png", "p07.png"]
    assert len(expand_patterns(str(tmp_path / "*.png"))) == len(files)
    with pytest.raises(DatasetError, match="nothing_here"):
        expand_patterns(str(tmp_path / "nothing_here*.png"))


def test_no_match_names_both_patterns(tmp_path):
    _touch([tmp_path / "a.jpg", tmp_path / "lab" / "b.png"])
    with pytest.raises(DatasetError) as e:
        build_dataset("custom_label", str(tmp_path / "*.jpg"), str(tmp_path / "lab" / "*.png"), cache_dir=tmp_path / "c")
    assert "*.jpg" in str(e.value) and "lab" in str(e.value)


# -- label decoding -----------------------------------------------------------------------------
def test_palette_labels_are_indices_not_colours(tmp_path):
    lab = _label_with_regions()
    _palette_png(tmp_path / "l.png", lab)
    assert Image.open(tmp_path / "l.png").mode == "P"
    np.testing.assert_array_equal(read_label_image(str(tmp_path / "l.png")), lab)


def test_16bit_labels(tmp_path):
    lab = np.zeros((20, 30), np.uint16)
    lab[3:8, 4:9] = 300
    lab[10:15, 10:20] = 65000
    Image.fromarray(lab).save(tmp_path / "l16.png")
    assert Image.open(tmp_path / "l16.png").mode.startswith("I")
    got = read_label_image(str(tmp_path / "l16.png"))
    assert set(np.unique(got)) == {0, 300, 65000}


def test_rgb_label_image_is_an_error(tmp_path):
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InvalidImageError, match="mode 'RGB'"):
        read_label_image(str(tmp_path / "rgb.png"))


# -- indexing -----------------------------------------------------------------------------------
def _label_dataset(tmp_path: Path) -> Path:
    _rgb(tmp_path / "images" / "a.jpg", 40, 50)
    _palette_png(tmp_path / "labels" / "a.png", _label_with_regions())
    return tmp_path


def test_objects_are_connected_regions_with_ignore(tmp_path):
    root = _label_dataset(tmp_path)
    ds = build_dataset("custom_label", str(root / "images/*.jpg"), str(root / "labels/*.png"),
                       cache_dir=root / "cache")
    got = sorted((o.label, o.region, o.area, o.box) for o in ds.objects)
    assert got == [(1, 1, 20, (2, 2, 5, 6)), (1, 2, 6, (30, 40, 31, 42)), (2, 1, 12, (10, 20, 12, 23))]
    (image, idx), = ds.image_groups()
    t = ds.read_targets(image)
    assert t.ignore is not None and t.ignore.sum() == 80 and t.ignore[:, 48:].all()
    for i in idx:
        m = t.object_mask(ds.objects[i])
        assert m.sum() == ds.objects[i].area and not (m & t.ignore).any()
    # No ignore index: 255 becomes an object of its own.
    ds = build_dataset("custom_label", str(root / "images/*.jpg"), str(root / "labels/*.png"),
                       ignore_index=None, cache_dir=root / "cache")
    assert 255 in {o.label for o in ds.objects}


def test_whole_labels_and_min_area(tmp_path):
    root = _label_dataset(tmp_path)
    pats = (str(root / "images/*.jpg"), str(root / "labels/*.png"))
    ds = build_dataset("custom_label", *pats, whole_labels=True, cache_dir=root / "c")
    assert sorted((o.label, o.region, o.area) for o in ds.objects) == [(1, 0, 26), (2, 0, 12)]
    t = ds.read_targets(ds.objects[0].image)
    assert t.object_mask([o for o in ds.objects if o.label == 1][0]).sum() == 26
    ds = build_dataset("custom_label", *pats, min_object_area=10, cache_dir=root / "c")
    assert sorted((o.label, o.area) for o in ds.objects) == [(1, 20), (2, 12)]


def test_index_is_cached_and_invalidated_by_mtime(tmp_path, monkeypatch):
    root = _label_dataset(tmp_path)
    pats = (str(root / "images/*.jpg"), str(root / "labels/*.png"))
    calls = []
    real = dsmod.read_label_image
    monkeypatch.setattr(dsmod, "read_label_image", lambda p: calls.append(p) or real(p))
    progress = []
    first = build_dataset("custom_label", *pats, cache_dir=root / "c", on_progress=lambda d, t: progress.append((d, t)))
    assert len(calls) == 1 and progress == [(1, 1)] and not first.from_cache
    second = build_dataset("custom_label", *pats, cache_dir=root / "c")
    assert len(calls) == 1, "the second build must not decode the labels again"
    assert second.from_cache and second.objects == first.objects
    # A different setting or a changed file rebuilds the index.
    build_dataset("custom_label", *pats, cache_dir=root / "c", min_object_area=7)
    assert len(calls) == 2
    lab = root / "labels" / "a.png"
    os.utime(lab, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    build_dataset("custom_label", *pats, cache_dir=root / "c")
    assert len(calls) == 3


def test_custom_mask_stacks_in_numeric_order_and_warnings(tmp_path):
    _rgb(tmp_path / "im" / "x.jpg", 20, 20)
    _rgb(tmp_path / "im" / "lonely.jpg", 20, 20)
    sizes = {0: 2, 1: 3, 2: 4, 10: 5}
    for k, s in sizes.items():
        m = np.zeros((20, 20), np.uint8)
        m[:s, :s] = 255
        Image.fromarray(m).save(tmp_path / "im" / f"x_mask{k}.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "im" / "orphan_mask0.png")
    warnings = []
    ds = build_dataset("custom_mask", str(tmp_path / "im/*.jpg"), str(tmp_path / "im/*_mask*.png"),
                       cache_dir=tmp_path / "c", on_warning=warnings.append)
    assert [(os.path.basename(o.target), o.label, o.area) for o in ds.objects] == [
        ("x_mask0.png", 1, 4), ("x_mask1.png", 2, 9), ("x_mask2.png", 3, 16), ("x_mask10.png", 4, 25)]
    assert any("1 images have no target" in w and "lonely.jpg" in w for w in warnings)
    assert any("1 of" in w and "targets match none of the" in w and "orphan_mask0.png" in w for w in warnings)
    t = ds.read_targets(ds.objects[0].image)
    assert t.ignore is None and t.object_mask(ds.objects[3]).sum() == 25

    # targets of other splits are said once (the index cache remembers); images without a target
    # may be a mistake and are said on every run; another unmatched target is said again
    def build():
        seen = []
        build_dataset("custom_mask", str(tmp_path / "im/*.jpg"), str(tmp_path / "im/*_mask*.png"),
                      cache_dir=tmp_path / "c", on_warning=seen.append)
        return seen
    again = build()
    assert any("lonely.jpg" in w for w in again) and not any("match none" in w for w in again)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "im" / "other_mask0.png")
    third = build()
    assert any("2 of" in w and "match none" in w and "other_mask0.png" in w for w in third)
    assert not any("match none" in w for w in build())


# -- real data ----------------------------------------------------------------------------------
def test_pascal_voc_on_voc_mini(shared_data, tmp_path):
    root = shared_data / "voc_mini" / "VOC2012"
    ds = build_dataset("pascal_voc", split="train", pascal_voc_root=str(root), cache_dir=tmp_path)
    assert {Path(i).stem for i, _ in ds.image_groups()} == {"2011_000003", "2011_000006"}
    assert {o.class_name for o in ds.objects} >= {"person", "chair", "sofa"}
    assert all(o.class_id is not None and 1 <= o.class_id <= 20 for o in ds.objects)
    img, idx = ds.image_groups()[0]
    t = ds.read_targets(img)
    assert t.ignore is not None and t.ignore.any()  # void pixels come from SegmentationClass
    assert not any((t.object_mask(ds.objects[i]) & t.ignore).any() for i in idx)
    val = build_dataset("pascal_voc", split="val", pascal_voc_root=str(root), cache_dir=tmp_path)
    assert {Path(i).stem for i, _ in val.image_groups()} == {"2011_000025"}
    with pytest.raises(DatasetError, match=r"\[paths\] pascal_voc"):
        build_dataset("pascal_voc", split="train")


def test_sbd_adds_images_but_never_voc_val(shared_data, tmp_path):
    from scipy.io import savemat

    voc = shared_data / "voc_mini" / "VOC2012"
    sbd = tmp_path / "sbd"
    (sbd / "img").mkdir(parents=True)
    (sbd / "inst").mkdir()
    for name in ("2011_000025", "2008_000001"):  # the first is a VOC val image
        _rgb(sbd / "img" / f"{name}.jpg", 30, 40)
        seg = np.zeros((30, 40), np.uint8)
        seg[5:10, 5:15] = 1
        seg[20:25, 20:30] = 2
        savemat(sbd / "inst" / f"{name}.mat", {"GTinst": {
            "Segmentation": seg, "Categories": np.array([[12], [15]], np.uint8),
            "Boundaries": np.zeros((2, 1), object)}})
    (sbd / "train.txt").write_text("2011_000025\n2008_000001\n")
    ds = build_dataset("pascal_voc", split="train", pascal_voc_root=str(voc), sbd_root=str(sbd), cache_dir=tmp_path / "c")
    stems = {Path(i).stem for i, _ in ds.image_groups()}
    assert stems == {"2011_000003", "2011_000006", "2008_000001"}
    sbd_objs = [o for o in ds.objects if "2008_000001" in o.image]
    assert [(o.label, o.class_name, o.area) for o in sbd_objs] == [(1, "dog", 50), (2, "person", 50)]
    t = ds.read_targets(sbd_objs[0].image)
    assert t.object_mask(sbd_objs[1]).sum() == 50


def test_custom_mask_on_coco128seg(shared_data, tmp_path):
    root = shared_data / "coco128seg"
    ds = build_dataset("custom_mask", [str(root / "images" / "00000000000[9].jpg"), str(root / "images" / "000000000025.jpg")],
                       str(root / "masks" / "*.png"), min_object_area=100, whole_labels=True,
                       cache_dir=tmp_path, on_warning=lambda m: None)
    assert len(ds.image_groups()) == 2 and len(ds) >= 3
    for image, idx in ds.image_groups():
        rgb = ds.read_image(image)
        t = ds.read_targets(image)
        assert rgb.shape[:2] == t.shape
        for i in idx:
            assert t.object_mask(ds.objects[i]).sum() == ds.objects[i].area >= 100
