"""The ``coco`` dataset kind and predicting into COCO files, on small hand-made files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dextr_lib.core.geometry import extreme_points_from_mask
from dextr_lib.data import build_dataset
from dextr_lib.errors import DatasetError, MismatchError
from dextr_lib.evaluation.evaluator import evaluate
from dextr_lib.formats import coco
from dextr_lib.inference.preprocessing import get_profile
from dextr_lib.workflows.predict import predict_coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 40, 50


def _uncompressed(mask: np.ndarray) -> dict:
    """Column-major run lengths starting with background, as COCO stores crowd regions."""
    flat = mask.T.ravel().astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


@pytest.fixture
def coco_dir(tmp_path):
    """Three images: a polygon dog, an RLE person and a crowd region; an uncompressed-RLE person
    with stored extreme_points; an image without annotations."""
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(imgs / name)
    person = np.zeros((H, W), bool)
    person[5:30, 30:45] = True
    crowd = np.zeros((H, W), bool)
    crowd[20:40, 0:40] = True
    person_b = np.zeros((H, W), bool)
    person_b[10:20, 10:30] = True
    data = {
        "info": {"description": "hand-made"},
        "images": [
            {"id": 1, "file_name": "a.png", "height": H, "width": W},
            {"id": 2, "file_name": "b.png", "height": H, "width": W},
            {"id": 3, "file_name": "c.png", "height": H, "width": W},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        "annotations": [
            # dog: the square 2..22 x 4..26 -> columns 2..21, rows 4..25
            {"id": 10, "image_id": 1, "category_id": 18, "iscrowd": 0,
             "segmentation": [[2, 4, 22, 4, 22, 26, 2, 26]], "area": 440, "bbox": [2, 4, 20, 22]},
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentation": coco.encode_mask(person), "area": int(person.sum()), "bbox": [30, 5, 15, 25]},
            {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 1,
             "segmentation": _uncompressed(crowd), "area": int(crowd.sum()), "bbox": [0, 20, 40, 20]},
            {"id": 20, "image_id": 2, "category_id": 1, "iscrowd": 0,
             "segmentation": _uncompressed(person_b), "area": 200, "bbox": [10, 10, 20, 10],
             "extreme_points": [[20, 11], [10, 15], [21, 19], [29, 14]]},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    masks = {10: None, 11: person, 20: person_b, "crowd": crowd}
    dog = np.zeros((H, W), bool)
    dog[4:26, 2:22] = True
    masks[10] = dog
    return path, imgs, masks


def test_objects_classes_and_masks(coco_dir, tmp_path):
    path, imgs, masks = coco_dir
    ds = build_dataset("coco", annotations=path, images_dir=imgs, cache_dir=tmp_path / "cache")
    assert ds.kind == "coco" and not ds.from_cache
    assert [(r.label, r.class_name, r.class_id, r.area) for r in ds.objects] == [
        (10, "dog", 18, 440), (11, "person", 1, 375), (20, "person", 1, 200)]
    assert [p for p, _ in ds.image_groups()] == [str(imgs / "a.png"), str(imgs / "b.png")]  # c: empty
    assert ds.objects[0].box == (4, 2, 25, 21)
    targets = ds.read_targets(str(imgs / "a.png"))
    for rec in ds.objects[:2]:
        np.testing.assert_array_equal(targets.object_mask(rec), masks[rec.label])
    # crowd pixels are ignored, except where a real object lies
    np.testing.assert_array_equal(targets.ignore, masks["crowd"] & ~masks[10] & ~masks[11])
    assert ds.read_targets(str(imgs / "b.png")).ignore is None
    assert ds.read_image(str(imgs / "a.png")).shape == (H, W, 3)
    # the index is cached
    again = build_dataset("coco", annotations=path, images_dir=imgs, cache_dir=tmp_path / "cache")
    assert again.from_cache and again.objects == ds.objects


def test_category_filter_min_area_and_default_images_folder(coco_dir, tmp_path):
    path, imgs, _ = coco_dir
    ds = build_dataset("coco", annotations=path, images_dir=imgs, categories=["dog"], use_cache=False)
    assert [r.label for r in ds.objects] == [10]
    ds = build_dataset("coco", annotations=path, images_dir=imgs, min_object_area=300, use_cache=False)
    assert [r.label for r in ds.objects] == [10, 11]
    with pytest.raises(DatasetError, match="unknown COCO category 'cow'.*it has: dog, person"):
        build_dataset("coco", annotations=path, images_dir=imgs, categories=["cow"], use_cache=False)
    with pytest.raises(DatasetError, match="no objects of categories dog"):
        build_dataset("coco", annotations=path, images_dir=imgs, categories=["dog"], min_object_area=10**4,
                      use_cache=False)
    # without an images folder, file names are relative to the JSON file's folder
    with pytest.raises(DatasetError, match=r"image file not found: .*a\.png \(and 1 more\).*--images"):
        build_dataset("coco", annotations=path, use_cache=False)


def test_missing_image_file_is_named(coco_dir):
    path, imgs, _ = coco_dir
    (imgs / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"image file not found: .*b\.png;"):
        build_dataset("coco", annotations=path, images_dir=imgs, use_cache=False)
    # an image without objects may be missing
    (imgs / "c.png").unlink()
    build_dataset("coco", annotations=path, images_dir=imgs, categories=["dog"], use_cache=False)


def test_image_size_must_match_the_file(coco_dir):
    path, imgs, _ = coco_dir
    Image.fromarray(np.zeros((H + 1, W, 3), np.uint8)).save(imgs / "b.png")
    ds = build_dataset("coco", annotations=path, images_dir=imgs, use_cache=False)
    with pytest.raises(MismatchError, match=r"b\.png is 50x41 px but the COCO file says 50x40"):
        ds.read_image(str(imgs / "b.png"))


def test_exif_rotated_image_used_only_when_its_size_matches(tmp_path):
    raw = np.zeros((20, 30, 3), np.uint8)
    raw[:, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(raw).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    assert coco.read_coco_image(tmp_path / "r.jpg", 20, 30).shape == (20, 30, 3)
    turned = coco.read_coco_image(tmp_path / "r.jpg", 30, 20)
    assert turned.shape == (30, 20, 3) and turned[:5].mean() > 200  # the bright band is on top


def test_points_from_annotations_or_masks(coco_dir):
    path, imgs, masks = coco_dir
    ds = build_dataset("coco", annotations=path, images_dir=imgs, use_cache=False)
    rec = ds.objects[2]
    # ExtremeNet order top, left, bottom, right as [x, y] -> dextr left, right, top, bottom as [y, x]
    np.testing.assert_array_equal(ds.annotated_points(rec), [[15, 10], [14, 29], [11, 20], [19, 21]])
    assert ds.annotated_points(ds.objects[0]) is None  # none stored
    ds_masks = build_dataset("coco", annotations=path, images_dir=imgs, points_from="masks", use_cache=False)
    assert ds_masks.annotated_points(rec) is None


class _RecordingModel:
    """Stands in for a DextrModel (and its engine): records the points it gets, returns the box
    of the points."""

    preprocess = get_profile("dextr")  # threshold 0.5, takes no negative clicks

    arch, meta, device, runtime = "fake", {}, "cpu", "torch"

    def __init__(self):
        self.points = []

    batch_size = 1

    def engine(self, precision="fp32", **kw):
        class _Runner:
            pass

        self.runner = _Runner()
        self.runner.precision = precision
        return self

    def run(self, items):
        return (self._box(image, p) for image, points, *_clicks in items for p in points)

    def predict_iter(self, items, **kw):
        return self.run(items)

    def _box(self, image, p):
        self.points.append(np.asarray(p, dtype=float))
        p = np.asarray(p)
        m = np.zeros(image.shape[:2], np.float32)
        m[int(p[:, 0].min()):int(p[:, 0].max()) + 1, int(p[:, 1].min()):int(p[:, 1].max()) + 1] = 0.9
        return m


def test_evaluate_uses_stored_clicks(coco_dir):
    path, imgs, masks = coco_dir
    ds = build_dataset("coco", annotations=path, images_dir=imgs, use_cache=False)
    model = _RecordingModel()
    report = evaluate(model, ds)
    assert report.settings["annotated_points"] == 1
    np.testing.assert_array_equal(model.points[2], ds.annotated_points(ds.objects[2]))
    np.testing.assert_array_equal(model.points[0], extreme_points_from_mask(masks[10]))
    assert set(report.per_class()) == {"dog", "person"}
    model = _RecordingModel()
    evaluate(model, build_dataset("coco", annotations=path, images_dir=imgs, points_from="masks", use_cache=False))
    np.testing.assert_array_equal(model.points[2], extreme_points_from_mask(masks[20]))


def test_predict_coco_writes_predictions_with_clicks_and_scores(coco_dir, tmp_path):
    path, imgs, masks = coco_dir
    model = _RecordingModel()
    warnings = []
    out = predict_coco(model, coco.CocoFile.load(path), tmp_path / "pred.json", images_dir=imgs,
                       on_warning=warnings.append)
    assert [a["id"] for a in out.annotations] == [10, 11, 20]  # the crowd region is left out
    assert any("1 crowd annotations" in w for w in warnings)
    ann = out.annotation(20)
    assert ann["extreme_points"] == [[20, 11], [10, 15], [21, 19], [29, 14]]
    assert ann["score"] == pytest.approx(0.9) and ann["category_id"] == 1
    expect = np.zeros((H, W), bool)
    expect[11:20, 10:30] = True  # the box of the clicks
    np.testing.assert_array_equal(out.annotation_mask(20), expect)
    out.save()
    assert json.loads((tmp_path / "pred.json").read_text())["info"] == {"description": "hand-made"}
    # the input's images must be there
    (imgs / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"image file not found: .*b\.png"):
        predict_coco(model, coco.CocoFile.load(path), tmp_path / "p2.json", images_dir=imgs)


def test_large_file_indexes_and_caches(tmp_path):
    """Indexing speed (100k annotations) is measured by benchmarks/bench_coco_index.py."""
    rng = np.random.default_rng(0)
    n_img, per = 200, 50
    images = [{"id": i, "file_name": f"{i}.png", "height": 480, "width": 640} for i in range(1, n_img + 1)]
    anns = []
    for i in range(n_img * per):
        x, y = int(rng.integers(0, 600)), int(rng.integers(0, 440))
        anns.append({"id": i + 1, "image_id": i // per + 1, "category_id": 1 + i % 3, "iscrowd": 0,
                     "segmentation": [[x, y, x + 30, y, x + 35, y + 20, x + 10, y + 35]]})
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]}))
    for img in images:
        (tmp_path / img["file_name"]).touch()
    ds = build_dataset("coco", annotations=path, cache_dir=tmp_path / "cache", categories=["c2"])
    assert len(ds) == n_img * per // 3 + (1 if (n_img * per) % 3 > 1 else 0)
    again = build_dataset("coco", annotations=path, cache_dir=tmp_path / "cache", categories=["c2"])
    assert again.from_cache and again.objects == ds.objects
