"""NoC evaluation: the click loop's bookkeeping, NoC@T, and the report's interactive numbers."""
from __future__ import annotations

import csv
import inspect
import io
import json

import numpy as np
import PIL.Image
import pytest
from scipy import ndimage

from dextr_lib.core.geometry import extreme_points_from_mask
from dextr_lib.errors import CorrectionError, InvalidValueError
from dextr_lib.evaluation.baselines import box_mask
from dextr_lib.evaluation.evaluator import evaluate
from dextr_lib.evaluation.metrics import iou
from dextr_lib.evaluation.noc import click_curve, noc, noc_summary
from dextr_lib.evaluation.report import EvalReport, plot_click_curves
from dextr_lib.model import DextrModel
from tests.lib.test_evaluation import BoxOracle, _disk, write_label_dataset


def _squares():
    gt = np.zeros((40, 40), bool)
    gt[2:22, 2:22] = True  # A: 400 px
    gt[28:36, 28:36] = True  # B: 64 px, missed at first
    first = np.zeros(gt.shape, np.float32)
    first[2:22, 2:22] = 0.9
    return gt, first


def test_noc_is_the_first_click_count_reaching_the_target_or_k():
    ious = [0.7, 0.86, 0.91]  # after clicks 4, 5, 6
    assert noc(ious, 0.85, 6) == 5
    assert noc(ious, 0.90, 6) == 6
    assert noc(ious, 0.95, 6) == 6  # never: K
    assert noc([0.9], 0.85, 4) == 4  # the extreme points alone
    s = noc_summary([ious, [0.95, 0.95, 0.95]], 6)
    assert s["noc"] == {"0.80": 4.5, "0.85": 4.5, "0.90": 5.0}
    assert s["over_max"] == {"0.85": 0, "0.90": 0}
    assert s["miou"] == pytest.approx({"4": 0.825, "5": 0.905, "6": 0.93})
    s = noc_summary([[0.5, 0.6]], 5)
    assert s["noc"]["0.80"] == 5 and s["over_max"] == {"0.85": 1, "0.90": 1}


def test_a_missed_part_gets_a_positive_correction_then_nothing_is_left_to_click():
    gt, first = _squares()
    points = extreme_points_from_mask(gt).astype(float)
    calls = []

    def predict(image, pts, positive, negative):
        calls.append((positive.copy(), negative.copy()))
        lab, _ = ndimage.label(gt & ~(first >= 0.5))
        pred = first >= 0.5
        for y, x in positive.astype(int):
            pred |= lab == lab[y, x]
        return pred.astype(np.float32)

    ious, made, unused, _ = click_curve(predict, None, gt, None, points, first, clicks=8, threshold=0.5,
                                        takes_negatives=False)
    assert ious == [pytest.approx(400 / 464), 1.0, 1.0, 1.0, 1.0]  # after clicks 4..8
    # the positive click is the first deepest pixel of B (depth 4: rows/cols 31..32)
    assert [tuple(c) for c in made] == [(31, 31, True)]
    assert len(calls) == 1 and calls[0][0].tolist() == [[31.0, 31.0]] and calls[0][1].shape == (0, 2)
    assert unused == 0
    assert noc(ious, 0.85, 8) == 4 and noc(ious, 0.90, 8) == 5


def test_a_model_without_negatives_spends_negative_clicks_without_changing_its_input():
    gt, _ = _squares()
    first = gt.astype(np.float32)
    first[30:40, 0:10] = 1.0  # a false-positive blob
    points = extreme_points_from_mask(gt).astype(float)
    calls = []

    def predict(image, pts, positive, negative):
        calls.append(1)
        return gt.astype(np.float32)  # takes the negative and fixes everything

    ious, made, unused, _ = click_curve(predict, None, gt, None, points, first, clicks=7, threshold=0.5,
                                        takes_negatives=False)
    start = iou(first >= 0.5, gt)
    assert ious == [start] * 4 and not calls
    assert unused == 3 and [c.positive for c in made] == [False] * 3
    assert len({(c.y, c.x) for c in made}) == 3  # every spent click lands on a new pixel
    # the same model with the channel takes it
    ious, made, unused, _ = click_curve(predict, None, gt, None, points, first, clicks=7, threshold=0.5,
                                        takes_negatives=True)
    assert ious == [start, 1.0, 1.0, 1.0] and unused == 0 and len(calls) == 1


def test_a_click_outside_the_crop_is_spent():
    gt, first = _squares()
    points = extreme_points_from_mask(gt).astype(float)

    def predict(image, pts, positive, negative):
        raise CorrectionError("outside the crop")

    ious, made, unused, _ = click_curve(predict, None, gt, None, points, first, clicks=6, threshold=0.5,
                                        takes_negatives=True)
    assert ious == [pytest.approx(400 / 464)] * 3 and unused == 2
    assert len({(c.y, c.x) for c in made}) == 2  # the annotator moves on to another pixel


def test_clicks_below_four_are_refused(tmp_path):
    with pytest.raises(InvalidValueError):
        evaluate(BoxOracle(), write_label_dataset(tmp_path), clicks=3)


class _NegativeOracle(BoxOracle):
    takes_negatives = True


@pytest.mark.parametrize("negatives", [False, True])
def test_evaluate_reports_noc_per_object_json_csv_and_plot(tmp_path, negatives):
    """The box oracle gets the rectangles right at 4 clicks; the disk's box has four false corners
    that each negative click removes (with the channel) or that stay (without it)."""
    ds = write_label_dataset(tmp_path)
    oracle = _NegativeOracle() if negatives else BoxOracle()
    disk_box = box_mask(extreme_points_from_mask(_disk(44, 60, 11)), (64, 80))
    corners, n = ndimage.label(disk_box & ~_disk(44, 60, 13))
    assert n == 4
    calls = []

    def predict(image, points, positive, negative):
        calls.append(len(negative))
        pred = box_mask(points, image.shape[:2])
        for y, x in negative.astype(int):
            pred &= corners != corners[y, x]
        return pred.astype(np.float32)

    report = evaluate(oracle, ds, clicks=10, predict_fn=predict)
    by_label = {(r.image.split("/")[-1], r.label): r for r in report.results}
    disk = by_label[("img0.png", 2)]
    for key in (("img0.png", 1), ("img1.png", 1)):  # right at click 4: no click left to make
        assert by_label[key].click_ious == [1.0] * 7 and by_label[key].corrections == []
    assert len(disk.click_ious) == 7 and disk.click_ious[0] == disk.iou[0.5]
    assert all(not c[2] for c in disk.corrections)
    if negatives:
        assert calls == [1, 2, 3, 4]  # one corner per negative click, then nothing to fix
        assert disk.click_ious[4:] == [1.0, 1.0, 1.0]
        assert disk.click_ious[:5] == sorted(set(disk.click_ious[:5]))  # better with each click
        assert len({corners[y, x] for x, y, _ in disk.corrections}) == 4
    else:
        assert not calls and disk.click_ious == [disk.iou[0.5]] * 7
        assert report.interactive["corrections_not_taken"] == 6
    assert report.interactive["takes_negatives"] is negatives and report.interactive["threshold"] == 0.5

    data = json.loads(report.to_json())["interactive"]
    expected_noc = [noc(r.click_ious, 0.9, 10) for r in report.results]
    assert data["noc"]["0.90"] == pytest.approx(np.mean(expected_noc))
    assert data["over_max"]["0.90"] == (0 if negatives else 1)
    assert list(data["miou"]) == [str(k) for k in range(4, 11)]
    assert data["miou"]["4"] == pytest.approx(report.mean_iou)

    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [int(r["noc_90"]) for r in rows] == expected_noc
    assert [float(r["iou_at_10"]) for r in rows] == [r.click_ious[-1] for r in report.results]

    png = plot_click_curves({"a": data["miou"], "b": {"4": 0.5, "5": 0.7}}, tmp_path / "noc.png")
    assert PIL.Image.open(png).size[0] > 100


def test_without_clicks_the_report_has_no_interactive_part():
    report = EvalReport(results=[], skipped=[], threshold=0.5, thresholds=[0.5], seconds=0.0, model_seconds=0.0)
    assert report.noc() is None and "interactive" not in report.to_dict()
    assert "noc_85" not in report.to_csv().splitlines()[0]


@pytest.mark.skipif("positive" not in inspect.signature(DextrModel.predict_image).parameters,
                    reason="DextrModel.predict_image takes no corrections yet (issue 20)")
def test_tiny_model_runs_the_protocol_end_to_end(tmp_path, tiny_model):
    report = evaluate(tiny_model, write_label_dataset(tmp_path), clicks=6)
    for r in report.results:
        assert len(r.click_ious) == 3 and all(0.0 <= v <= 1.0 for v in r.click_ious)
        assert len(r.corrections) <= 2
    assert report.interactive["takes_negatives"] == tiny_model.takes_negatives
