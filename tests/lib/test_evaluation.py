"""Baselines, evaluate() and the report exports, on a tiny synthetic label dataset."""
import csv
import io
import json

import numpy as np
import PIL.Image
import pytest

from dextr_lib.core.geometry import extreme_points_from_mask
from dextr_lib.data import VOC_CLASSES, build_dataset
from dextr_lib.errors import InvalidPointsError
from dextr_lib.evaluation.evaluator import CSV_COLUMNS, box_mask, evaluate, quadrilateral_mask
from dextr_lib.evaluation.report import write_worst_overlays
from dextr_lib.inference.preprocessing import get_profile
from dextr_lib.inference.runtimes import Runner
from dextr_lib.model import DextrModel, create_model

H, W = 64, 80


def _disk(cy, cx, r, shape=(H, W)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def write_label_dataset(root):
    """img0: a 20x30 rectangle (1), a disk (2) with a void ring, a 1-px-thin line (3);
    img1: a rectangle (1). Returns the dataset."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    (root / "labels").mkdir()
    lab0 = np.zeros((H, W), np.uint8)
    lab0[10:30, 10:40] = 1
    lab0[_disk(44, 60, 13) & ~_disk(44, 60, 11)] = 255
    lab0[_disk(44, 60, 11)] = 2
    lab0[58, 5:30] = 3
    lab1 = np.zeros((H, W), np.uint8)
    lab1[20:50, 30:60] = 1
    for name, lab in (("img0", lab0), ("img1", lab1)):
        img = rng.integers(0, 60, size=(H, W, 3), dtype=np.uint8)
        img[(lab > 0) & (lab < 255)] = [220, 200, 40]
        PIL.Image.fromarray(img).save(root / "images" / f"{name}.png")
        PIL.Image.fromarray(lab).save(root / "labels" / f"{name}.png")
    return build_dataset(
        "custom_label", image_pat=str(root / "images" / "*.png"),
        target_pat=str(root / "labels" / "*.png"), cache_dir=str(root / "cache"),
    )


_TINY = create_model("resunet18", target_size=32, padding=4, blob_sigma=3.0)


class _CountingRunner(Runner):
    """A runner that records the number of objects of each forward."""

    def __init__(self, inner: Runner, calls: list):
        super().__init__(inner.precision)
        self.name, self.inner, self.calls = inner.name, inner, calls

    def __call__(self, x):
        self.calls.append(len(x))
        return self.inner(x)


class _BoxEngine:
    """The model's real engine (through a counting runner), each mask replaced by 0.7 on its
    points' box and 0 elsewhere."""

    def __init__(self, real, calls: list):
        real.runner = _CountingRunner(real.runner, calls)
        self.real, self.runner, self.batch_size = real, real.runner, real.batch_size

    def run(self, items):
        seen = []

        def remember():
            for image, pts in items:
                seen.extend(pts)
                yield image, pts

        for k, m in enumerate(self.real.run(remember())):
            yield box_mask(seen[k], m.shape).astype(np.float32) * 0.7


class BoxOracle(DextrModel):
    """A real (tiny) DextrModel whose masks are replaced by 0.7 on the points' box and 0
    elsewhere. Its engine is DextrModel's own, so the arguments evaluate() passes are checked
    by the real signature, the network runs, and the output shapes are the real ones;
    ``calls`` records the objects of each network forward."""

    def __init__(self):
        super().__init__(_TINY.net, get_profile("dextr"), _TINY.arch)
        self.calls = []

    def engine(self, **kwargs):
        return _BoxEngine(super().engine(**kwargs), self.calls)


@pytest.fixture
def label_dataset(tmp_path):
    return write_label_dataset(tmp_path)


def test_box_baseline_of_a_rectangle_is_exact():
    gt = np.zeros((H, W), bool)
    gt[10:30, 10:40] = True
    pts = extreme_points_from_mask(gt)
    assert (box_mask(pts, gt.shape) == gt).all()


def test_quadrilateral_baseline_of_a_disk():
    gt = _disk(32, 40, 20)
    pts = extreme_points_from_mask(gt)
    quad = quadrilateral_mask(pts, gt.shape)
    # a diamond inscribed in the disk: area about 2r^2 of pi r^2, i.e. IoU about 2/pi = 0.64
    inter = (quad & gt).sum()
    assert (quad <= gt).all()  # inside the disk...
    assert inter / gt.sum() == pytest.approx(2 / np.pi, abs=0.04)
    # the box of the points is the disk's (2r+1)^2 bounding square
    assert box_mask(pts, gt.shape).sum() == 41 * 41
    # any point order gives the same quadrilateral; the four points are always covered
    assert (quadrilateral_mask(pts[[3, 0, 2, 1]], gt.shape) == quad).all()
    assert quad[pts[:, 0], pts[:, 1]].all()


def test_quadrilateral_of_a_degenerate_set_is_a_line():
    pts = np.array([[5, 2], [5, 9], [5, 5], [5, 6]])
    m = quadrilateral_mask(pts, (12, 12))
    assert m[5, 2:10].all() and m.sum() == 8


def test_evaluate_scores_skips_and_exports(label_dataset):
    oracle = BoxOracle()
    report = evaluate(oracle, label_dataset, thresholds=[0.3, 0.8], batch_size=2)
    # the main threshold is the model's (0.5): a sweep only adds rows
    assert report.threshold == 0.5 and report.thresholds == [0.3, 0.5, 0.8]
    # the 1-px line cannot be cropped: skipped, with the reason
    assert len(report.skipped) == 1 and "zero height" in report.skipped[0].reason
    assert report.n_objects == 3
    by_label = {(r.image.split("/")[-1], r.label): r for r in report.results}
    rect, disk = by_label[("img0.png", 1)], by_label[("img0.png", 2)]
    assert rect.iou[0.5] == 1.0 and rect.baselines["box"]["iou"] == 1.0
    assert rect.boundary_f[0.5] == 1.0
    # the oracle's mask is the box; the void ring counts for neither side
    void = (_disk(44, 60, 13) & ~_disk(44, 60, 11))
    gt = _disk(44, 60, 11)
    box = box_mask(extreme_points_from_mask(gt), gt.shape) & ~void
    assert disk.iou[0.5] == pytest.approx(gt.sum() / box.sum())
    assert disk.iou[0.8] == 0.0 and disk.iou[0.3] == disk.iou[0.5]
    assert 0.55 < disk.baselines["quadrilateral"]["iou"] < 0.75

    data = json.loads(report.to_json())
    assert data["summary"]["mean_iou"] == pytest.approx(np.mean([r.iou[0.5] for r in report.results]))
    assert data["summary"]["skipped"] == 1 and data["summary"]["images"] == 2
    assert data["baselines"]["box"]["mean_iou"] == pytest.approx(data["summary"]["mean_iou"])
    assert data["baselines"]["quadrilateral"]["mean_iou"] < data["baselines"]["box"]["mean_iou"]
    assert [s["threshold"] for s in data["sweep"]] == [0.3, 0.5, 0.8]
    assert data["sweep"][2]["mean_iou"] == 0.0
    assert data["per_class"] == {}  # custom labels have no classes
    assert data["dataset"]["objects"] == 4 and data["throughput"]["objects_per_s"] > 0

    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 3 * 3  # objects x thresholds, main threshold first
    main_rows = [r for r in rows if float(r["threshold"]) == 0.5]
    assert rows[:3] == main_rows
    assert np.mean([float(r["iou"]) for r in main_rows]) == pytest.approx(data["summary"]["mean_iou"])


def test_objects_are_batched_across_images(label_dataset):
    oracle = BoxOracle()
    reads = []
    original = label_dataset.read_image
    label_dataset.read_image = lambda path: reads.append(path) or original(path)
    evaluate(oracle, label_dataset, batch_size=8)
    assert oracle.calls == [3]  # one forward for both images' objects
    assert len(reads) == len(set(reads)) == 2  # each image decoded once


def test_jitter_is_reproducible(label_dataset):
    runs = [evaluate(BoxOracle(), label_dataset, jitter=3.0, seed=s) for s in (1, 1, 2)]
    ious = [[r.iou[0.5] for r in rep.results] for rep in runs]
    assert ious[0] == ious[1] and ious[0] != ious[2]
    assert runs[0].settings["point_source"] == "jitter"
    with pytest.raises(InvalidPointsError):
        evaluate(BoxOracle(), label_dataset, jitter=-1)


def test_points_file_gives_the_same_points(label_dataset, tmp_path):
    from dextr_lib.formats.objects import read_objects, write_objects
    from dextr_lib.workflows.points import points_from_masks

    labels = sorted((tmp_path / "labels").glob("*.png"))
    entries = points_from_masks(labels, image_dir=tmp_path / "images")
    for e in entries:  # the 1-px line has no valid points: it is skipped either way
        e.objects = [o for o in e.objects if np.ptp(o.points, axis=0).all()]
    write_objects(entries, tmp_path / "objects.json")
    pf = read_objects(tmp_path / "objects.json")
    from_file = evaluate(BoxOracle(), label_dataset, points_file=pf)
    from_gt = evaluate(BoxOracle(), label_dataset)
    assert from_file.settings["point_source"] == "points_file"
    assert [r.iou for r in from_file.results] == [r.iou for r in from_gt.results]
    assert [s.reason for s in from_file.skipped] == ["no points for this object in the points file"]
    with pytest.raises(InvalidPointsError, match="exclude"):
        evaluate(BoxOracle(), label_dataset, points_file=pf, jitter=2)


def test_worst_and_limit(label_dataset, tmp_path):
    report = evaluate(BoxOracle(), label_dataset, keep_worst=2, threshold=0.5)
    worst = [w.result.iou[0.5] for w in report.worst]
    assert worst == sorted(r.iou[0.5] for r in report.results)[:2]
    assert report.worst[0].prediction.shape == (H, W)
    paths = write_worst_overlays(report, tmp_path / "worst", label_dataset.read_image)
    assert [p.name.split("_")[0] for p in paths] == ["worst01", "worst02"]
    drawn = np.asarray(PIL.Image.open(paths[0]))
    assert drawn.shape == (H, W, 3)
    assert (drawn == (40, 220, 60)).all(axis=-1).any() and (drawn == (255, 40, 40)).all(axis=-1).any()
    limited = evaluate(BoxOracle(), label_dataset, limit=2)
    assert limited.dataset["objects"] == 2 and limited.dataset["images"] == 1


def test_tiny_model_runs_and_is_batch_size_independent(label_dataset, tiny_model):
    a = evaluate(tiny_model, label_dataset, batch_size=1)
    b = evaluate(tiny_model, label_dataset, batch_size=3)
    assert a.n_objects == 3
    for ra, rb in zip(a.results, b.results):
        assert 0.0 <= ra.iou[0.5] <= 1.0
        assert ra.iou[0.5] == pytest.approx(rb.iou[0.5], abs=1e-3)


# -- real data (skipped where ../shared/data is absent) ------------------------------------------
def test_pennfudan_baselines(shared_data, tmp_path):
    root = shared_data / "pennfudan"
    ds = build_dataset("custom_label", image_pat=str(root / "images" / "FudanPed0000*.png"),
                       target_pat=str(root / "labels" / "FudanPed0000*_mask.png"),
                       min_object_area=100, cache_dir=str(tmp_path))
    report = evaluate(BoxOracle(), ds)
    assert report.n_objects >= 15 and not report.skipped
    quad = report.summary("quadrilateral")["mean_iou"]
    box = report.summary("box")["mean_iou"]
    # pedestrians fill about half their box; the quadrilateral through the points does better
    assert 0.45 < quad < 0.75 and 0.3 < box < quad
    assert report.mean_iou == pytest.approx(box)  # the oracle's mask is the box


def test_voc_mini_per_class(shared_data, tmp_path):
    ds = build_dataset("pascal_voc", split="val", pascal_voc_root=str(shared_data / "voc_mini" / "VOC2012"),
                       cache_dir=str(tmp_path))
    report = evaluate(BoxOracle(), ds)
    per_class = report.per_class()
    assert per_class and set(per_class) <= set(VOC_CLASSES)
    assert sum(c["objects"] for c in per_class.values()) == report.n_objects
    data = json.loads(report.to_json())
    assert data["per_class"].keys() == per_class.keys()
