"""``dextr eval``: how good is a model? IoU and boundary F on every object of a dataset."""
from __future__ import annotations

import fnmatch
import math
import os
from collections import Counter
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from dextr_lib.config import load_config
from dextr_lib.errors import OutputError
from dextr_lib.utils.fileio import check_outputs, check_writable_dir, same_file, shown_path

from .._console import console, err_console, esc, warn
from .._datasets import open_dataset
from .._models import load_model, model_spec
from .._options import (
    AnnotationsOpt, BatchSizeOpt, CategoriesOpt, ConfigOpt, DatasetKindOpt, DeviceOpt, ImagePatOpt, ImagesDirOpt,
    LabelIgnoreIndexOpt, MinObjectAreaOpt, ModelOpt, PointsFromOpt, PrecisionOpt, RuntimeOpt, SeedOpt, SplitOpt,
    TargetPatOpt, WholeLabelsOpt, settings, split_names,
)
from .._progress import progress_bar

__all__ = ["GT_COLOR", "PRED_COLOR", "evaluate_command"]


def __getattr__(name: str):
    """The overlay colours, from the library's report module when first asked for (it loads
    torch, which ``--help`` does not need)."""
    if name in ("GT_COLOR", "PRED_COLOR"):
        from dextr_lib.evaluation import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _parse_thresholds(text: Optional[str]) -> List[float]:
    if not text:
        return []
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers like 0.3,0.5,0.8; got {text!r}",
                                 param_hint="--thresholds") from None
    if not values or any(not 0.0 <= t <= 1.0 for t in values):
        raise typer.BadParameter(f"thresholds must be in [0, 1], got {text!r}", param_hint="--thresholds")
    return values


def _fmt(v: float, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def _render(report: EvalReport, model_name: str) -> None:
    from dextr_lib.evaluation.evaluator import BASELINES

    summaries = {"model": report.summary(), **{b: report.summary(b) for b in BASELINES}}
    table = Table(title=f"{esc(model_name)} at threshold {report.threshold:g} on {report.n_objects} objects "
                  f"({len({r.image for r in report.results})} images); "
                  + ("takes negative clicks" if report.takes_negatives else "no negative clicks"))
    table.add_column("metric")
    for name in ("model", "box baseline", "quadrilateral baseline"):
        table.add_column(name, justify="right")
    rows = [("mean IoU", "mean_iou", False), ("median IoU", "median_iou", False),
            ("per-image mean IoU", "per_image_mean_iou", False), ("IoU > 0.85", "above_0.85", True),
            ("IoU > 0.90", "above_0.90", True), ("boundary F", "mean_boundary_f", False)]
    for label, key, pct in rows:
        table.add_row(label, *(_fmt(summaries[m][key], pct) for m in ("model",) + BASELINES))
    console.print(table)
    if len(report.thresholds) > 1:
        sweep = Table(title="threshold sweep (model)")
        for col in ("threshold", "mean IoU", "median IoU", "IoU > 0.85", "IoU > 0.90", "boundary F"):
            sweep.add_column(col, justify="right")
        for s in report.sweep:
            sweep.add_row(f"{s['threshold']:g}", _fmt(s["mean_iou"]), _fmt(s["median_iou"]),
                          _fmt(s["above_0.85"], True), _fmt(s["above_0.90"], True), _fmt(s["mean_boundary_f"]))
        console.print(sweep)
    per_class = report.per_class()
    if per_class:
        ct = Table(title="mean IoU per class")
        for col in ("class", "objects", "model", "box", "quadrilateral", "boundary F"):
            ct.add_column(col, justify="left" if col == "class" else "right")
        for name, c in per_class.items():
            ct.add_row(esc(name), str(c["objects"]), _fmt(c["mean_iou"]), _fmt(c["box_mean_iou"]),
                       _fmt(c["quadrilateral_mean_iou"]), _fmt(c["mean_boundary_f"]))
        console.print(ct)
    if report.interactive is not None:
        _render_noc(report)
    if report.skipped:
        reasons = Counter(s.reason for s in report.skipped)
        err_console.print(f"[yellow]Skipped {len(report.skipped)} objects:[/] "
                          + "; ".join(f"{n} x {esc(r)}" for r, n in reasons.items())
                          + " (--min-object-area N leaves out specks)", highlight=False)


def _compare_curves(paths: List[Path]) -> dict:
    """Model name -> mIoU per click of earlier ``--json`` reports made with ``--clicks``."""
    import json

    curves = {}
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            miou = data["interactive"]["miou"]
            name = Path(str(data.get("model", {}).get("source") or path.stem)).stem
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise typer.BadParameter(f"{path} is not a `dextr eval --clicks K --json` report",
                                     param_hint="--compare") from None
        curves[name if name not in curves else f"{name} ({path.stem})"] = miou
    return curves


def _render_noc(report: EvalReport) -> None:
    inter, k = report.interactive, report.interactive["clicks"]
    rows = {"all": report.noc(), **report.noc_per_class()}
    table = Table(title=f"clicks to reach an IoU (NoC, at most {k}; clicks 1-4: the extreme points; "
                  f"corrections binarised at {inter['threshold']:g})")
    for col in ("objects", "NoC@80", "NoC@85", "NoC@90", f">{k}@85", f">{k}@90", "mIoU@4", f"mIoU@{k}"):
        table.add_column(col, justify="right")
    table.add_column("", justify="left")
    for name, s in rows.items():
        table.add_row(str(s["objects"]), *(f"{s['noc'][t]:.2f}" for t in ("0.80", "0.85", "0.90")),
                      str(s["over_max"]["0.85"]), str(s["over_max"]["0.90"]), _fmt(s["miou"]["4"]),
                      _fmt(s["miou"][str(k)]), esc(name))
    console.print(table)
    miou = rows["all"]["miou"]
    console.print("mIoU after k clicks: " + "  ".join(f"{c}: {_fmt(v)}" for c, v in miou.items()), highlight=False)
    per = inter["seconds_per_correction"]
    console.print(
        f"{inter['corrections']} corrections in {inter['seconds']:.1f} s"
        + (f" ({1000 * per:.0f} ms each, network {inter['network_seconds']:.1f} s)" if per else ""),
        highlight=False)
    if not inter["takes_negatives"] and inter["corrections_not_taken"]:
        console.print(f"The model takes no negative clicks: {inter['corrections_not_taken']} clicks it could not take were "
                      "spent (counted, the input unchanged).", highlight=False)


def _check_outputs(json_out, csv_out, overlays, dataset, inputs, force: bool, plot=None) -> None:
    """Before evaluating: every output may be written, and none is an input (a photo, a label
    file, the points file or the model)."""
    inputs = [*inputs, *dataset.targets, *(t for ts in dataset.targets.values() for t in ts)]
    check_outputs([(json_out, "--json", "JSON report"), (csv_out, "--csv", "CSV table"), (plot, "--plot", "plot")],
                  inputs=inputs, force=force)
    if overlays is not None:
        check_writable_dir(overlays, option="--overlays")
        # The overlays' names are known after the evaluation, but all match worst*.png: an
        # input so named in that folder could be replaced, even with --force.
        for src in inputs:
            if src is not None and fnmatch.fnmatch(os.path.basename(os.fspath(src)), "worst*.png") \
                    and same_file(os.path.dirname(os.path.abspath(os.fspath(src))), overlays):
                raise OutputError(f"refusing to write overlays into {shown_path(overlays)}: it holds "
                                  f"{shown_path(src)}, an input of this command named like an overlay "
                                  "(worst*.png); choose another --overlays folder")
        if not force and overlays.is_dir() and any(overlays.glob("worst*.png")):
            raise OutputError(f"{shown_path(overlays)} already holds overlays (worst*.png); pass "
                              "--force to write beside them, or choose another --overlays folder")


def evaluate_command(
    model: ModelOpt = None,
    dataset: DatasetKindOpt = None,
    image_pat: ImagePatOpt = None,
    target_pat: TargetPatOpt = None,
    annotations: AnnotationsOpt = None,
    images: ImagesDirOpt = None,
    categories: CategoriesOpt = None,
    points_from: PointsFromOpt = None,
    split: SplitOpt = None,
    label_ignore_index: LabelIgnoreIndexOpt = None,
    min_object_area: MinObjectAreaOpt = None,
    whole_labels: WholeLabelsOpt = None,
    device: DeviceOpt = None,
    batch_size: BatchSizeOpt = None,
    precision: PrecisionOpt = None,
    runtime: RuntimeOpt = None,
    jitter: Annotated[float, typer.Option(
        "--jitter", min=0.0, help="Jitter the ground-truth extreme points by this many pixels (std), "
        "to simulate annotators; use with --seed.")] = 0.0,
    seed: SeedOpt = None,
    points_file: Annotated[Optional[Path], typer.Option(
        "--points-file", exists=True, dir_okay=False, help="Take the points from this objects.json "
        "(from `dextr points-from-mask`) instead of the ground truth.", show_default=False)] = None,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", "-t", min=0.0, max=1.0, help="Main probability threshold (default: the model's, "
        "usually 0.5).", show_default=False)] = None,
    thresholds: Annotated[Optional[str], typer.Option(
        "--thresholds", help="Also sweep these thresholds, e.g. 0.3,0.5,0.8 (table and CSV rows); "
        "the headline numbers stay at --threshold.", show_default=False)] = None,
    boundary_tolerance: Annotated[Optional[float], typer.Option(
        "--boundary-tolerance", min=0.0, help="Boundary F match distance in pixels (default: 0.008 x "
        "the image diagonal, as DAVIS).", show_default=False)] = None,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", dir_okay=False, help="Write the report (summary, baselines, per class, settings) as JSON.",
        show_default=False)] = None,
    csv_out: Annotated[Optional[Path], typer.Option(
        "--csv", dir_okay=False, help="Write one row per object (and threshold) as CSV.", show_default=False)] = None,
    overlays: Annotated[Optional[Path], typer.Option(
        "--overlays", file_okay=False, help="Write overlays of the worst objects here (ground truth "
        "outlined green, prediction red).", show_default=False)] = None,
    worst: Annotated[Optional[int], typer.Option(
        "--worst", min=1, help="How many worst objects --overlays draws (default: 5).", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite existing --json/--csv files and --overlays images.")] = False,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", min=1, help="Evaluate only the first N objects.", show_default=False)] = None,
    clicks: Annotated[Optional[int], typer.Option(
        "--clicks", min=4, help="Interactive protocol (NoC@85/90, mIoU per click): the 4 extreme points, "
        "then simulated corrections up to K clicks (RITM's annotator), e.g. 20.", show_default=False)] = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", dir_okay=False, help="With --clicks: write a PNG of mIoU against clicks.",
        show_default=False)] = None,
    compare: Annotated[Optional[List[Path]], typer.Option(
        "--compare", exists=True, dir_okay=False, help="Also draw this earlier --json report's curve on "
        "--plot (repeatable: several models on one plot).", show_default=False)] = None,
    config: ConfigOpt = None,
) -> None:
    """Evaluate a model on every object of a dataset, next to two baselines that need no network.

    Extreme points come from each ground-truth mask by the paper's rule (or jittered, or from a points file). Reports mean/median/per-image IoU, the share above 0.85 and 0.90, and the boundary F-measure, for the model, the box of the points and the quadrilateral through them.

    Examples:

      dextr eval -m model.pt --dataset custom_label --image-pat "data/images/*.png" --target-pat "data/labels/*_mask.png"

      dextr eval -m model.pt --dataset pascal_voc --split val --json report.json --csv objects.csv

      dextr eval -m model.pt --dataset custom_mask --image-pat "imgs/*.jpg" --target-pat "masks/*.png" --jitter 5 --seed 0 --overlays worst/ --worst 10

      dextr eval -m model.pt --dataset coco --annotations instances_val2017.json --images val2017 --categories person,dog --min-object-area 1024
    """
    cfg = load_config(config)
    es = settings(
        cfg.eval, model=model, device=device, batch_size=batch_size, precision=precision, runtime=runtime,
        threshold=threshold, dataset=dataset, image_pat=image_pat, target_pat=target_pat,
        annotations=annotations, images=images, categories=split_names(categories), points_from=points_from,
        split=split, label_ignore_index=label_ignore_index, min_object_area=min_object_area,
        whole_labels=whole_labels, thresholds=_parse_thresholds(thresholds),
        boundary_tolerance=boundary_tolerance, worst=worst, clicks=clicks,
    )
    model = model_spec(es.model, "eval")
    if points_file is not None and jitter > 0:
        raise typer.BadParameter("--jitter perturbs the ground-truth points; a points file is used as it is",
                                 param_hint="--jitter")
    if (plot is not None or compare) and es.clicks is None:
        raise typer.BadParameter("--plot and --compare draw the mIoU-per-click curve of --clicks K; add "
                                 "--clicks", param_hint="--plot")
    if compare and plot is None:
        raise typer.BadParameter("--compare adds curves to --plot PNG; add --plot", param_hint="--compare")
    curves = _compare_curves(compare or [])  # fail before slow steps
    if worst is not None and overlays is None:
        raise typer.BadParameter("--worst K says how many overlays --overlays DIR writes; add --overlays",
                                 param_hint="--worst")
    # The library (and torch) load only now, after the usage checks: those answer at once.
    from dextr_lib.evaluation.evaluator import evaluate
    from dextr_lib.evaluation.report import write_worst_overlays
    from dextr_lib.formats.objects import read_objects

    points = read_objects(points_file) if points_file is not None else None  # fail before slow steps
    ds = open_dataset(es, cfg.paths, split=es.split, points_from=es.points_from)
    _check_outputs(json_out, csv_out, overlays, ds, [points_file, model, cfg.source], force, plot)
    net = load_model(model, cfg, map_location=es.device, runtime=es.runtime, precision=es.precision)
    with progress_bar("Evaluating") as update:
        report = evaluate(
            net, ds, thresholds=es.thresholds, threshold=es.threshold, jitter=jitter, seed=seed,
            points_file=points, batch_size=es.batch_size, precision=es.precision, runtime=es.runtime,
            boundary_tolerance=es.boundary_tolerance, limit=limit,
            keep_worst=es.worst if overlays is not None else 0, clicks=es.clicks, on_progress=update,
            on_warning=warn,
        )
    _render(report, model)
    if json_out is not None:
        report.to_json(json_out)
        console.print(f"Wrote {esc(json_out)}", highlight=False)
    if csv_out is not None:
        report.to_csv(csv_out)
        console.print(f"Wrote {esc(csv_out)}", highlight=False)
    if plot is not None:
        from dextr_lib.evaluation.report import plot_click_curves

        curves = {Path(model).stem: report.noc()["miou"], **curves}
        plot_click_curves(curves, plot, title=f"{getattr(ds, 'kind', None) or 'dataset'}: {report.n_objects} objects")
        console.print(f"Wrote {esc(plot)}", highlight=False)
    if overlays is not None:
        written = write_worst_overlays(report, overlays, ds.read_image)
        console.print(f"Wrote {len(written)} overlays of the worst objects to {esc(overlays)}", highlight=False)
    console.print(
        f"Throughput: [bold]{report.objects_per_s:.1f} objects/s[/] ({report.n_objects} objects in "
        f"{report.seconds:.1f} s, network {report.model_seconds:.1f} s, on {net.device})", highlight=False,
    )
