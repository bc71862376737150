"""``dextr predict``: object masks from four extreme-point clicks."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import numpy as np
import PIL.Image
import typer
from typing_extensions import Annotated

from dextr_lib.config import load_config
from dextr_lib.core.geometry import MAX_COORDINATE, as_points_array, xy_to_yx  # NumPy only, no torch
from dextr_lib.errors import InvalidPointsError
from dextr_lib.utils.fileio import check_outputs

from .._console import console, esc, warn
from .._models import load_model, model_spec
from .._options import (
    BatchSizeOpt, ConfigOpt, DeviceOpt, ImagesDirOpt, ModelOpt, PointsFromOpt, PrecisionOpt, RuntimeOpt, expand_files,
    settings,
)
from .._progress import progress_bar

_POINT = re.compile(r"^\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*,\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")


def _parse_xy(values: List[str], option: str = "--points") -> List[List[float]]:
    """``["X,Y", ...]`` -> ``[[x, y], ...]`` floats (a malformed one is a usage error, exit 2)."""
    xy = []
    for v in values:
        m = _POINT.match(v)
        try:
            xy.append([float(m.group(1)), float(m.group(2))])
        except (AttributeError, ValueError):
            raise typer.BadParameter(f"expected X,Y (column,row), e.g. 120,45; got {v!r}",
                                     param_hint=option) from None
    return xy


def _parse_clicks(values: Optional[List[str]], option: str) -> Optional[np.ndarray]:
    """Repeated ``--positive``/``--negative`` ``X,Y`` -> ``(k, 2)`` ``[y, x]`` (``None``: none given)."""
    if not values:
        return None
    xy = _parse_xy(values, option)
    if not np.isfinite(xy).all():
        raise typer.BadParameter(f"expected finite X,Y numbers, got {' '.join(values)}", param_hint=option)
    return xy_to_yx(xy)


def _parse_points(values: List[str]) -> np.ndarray:
    """``["X,Y"] * 4`` -> ``(4, 2)`` ``[y, x]`` (usage errors exit 2)."""
    xy = _parse_xy(values)
    if len(xy) != 4:
        raise typer.BadParameter(
            f"expected exactly 4 points (the object's left-most, right-most, top and bottom), "
            f"got {len(xy)}", param_hint="--points")
    from dextr_lib.core.geometry import xy_to_yx  # after the usage checks: the library loads torch

    pts = xy_to_yx(xy)
    try:
        as_points_array(pts)  # the library's checks, before the model loads
    except InvalidPointsError as e:
        raise typer.BadParameter(_in_xy_terms(values, xy, e), param_hint="--points") from None
    return pts


def _in_xy_terms(values: List[str], xy: List[List[float]], error: InvalidPointsError) -> str:
    """What is wrong with the four ``--points``, said in X,Y as the user typed them (the
    library speaks of ``[y, x]`` arrays)."""
    shown = " ".join(values)
    xs, ys = [p[0] for p in xy], [p[1] for p in xy]
    far = [v for v, (x, y) in zip(values, xy) if max(abs(x), abs(y)) > MAX_COORDINATE]
    if far:
        return f"--points {far[0]} lies too far from any image (beyond +-{MAX_COORDINATE:.0f} pixels)"
    if min(xs) == max(xs) or min(ys) == max(ys):
        what = f"X = {xs[0]:g} (no width)" if min(xs) == max(xs) else f"Y = {ys[0]:g} (no height)"
        return (f"the four --points {shown} all have {what}: give the object's left-most, "
                "right-most, top and bottom points as X,Y")
    return f"the four --points {shown}: {error}"


def predict(
    image: Annotated[Optional[Path], typer.Argument(
        help="The photo (not with --points-file).", callback=expand_files, show_default=False,
        metavar="IMAGE")] = None,
    model: ModelOpt = None,
    points: Annotated[Optional[List[str]], typer.Option(
        "--points", "-p", help="One extreme point as X,Y = column,row in pixels, as image viewers "
        "show them; give it 4 times (left, right, top, bottom, any order).", show_default=False)] = None,
    positive: Annotated[Optional[List[str]], typer.Option(
        "--positive", help="A correction click X,Y on a part the mask should include (repeat it "
        "for more), after the four --points.", show_default=False)] = None,
    negative: Annotated[Optional[List[str]], typer.Option(
        "--negative", help="A correction click X,Y on a part the mask should leave out (repeat "
        "it); needs a model with the negative-click channel.", show_default=False)] = None,
    points_file: Annotated[Optional[Path], typer.Option(
        "--points-file", exists=True, dir_okay=False,
        help="objects.json from `dextr points-from-mask` (many images/objects).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", dir_okay=False, help="Mask PNG to write (default: IMAGESTEM_dextr.png in the "
        "current folder; never the photo itself).", show_default=False)] = None,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out-dir", file_okay=False, help="Folder for the masks of --points-file: "
        "PHOTOSTEM_label<L>.png or PHOTOSTEM_<mask name>.png per object (made safe and unique).",
        show_default=False)] = None,
    overlay: Annotated[Optional[Path], typer.Option(
        "--overlay", dir_okay=False, help="Also write the photo with the mask tinted and outlined "
        "and the points marked.", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite existing output files (never the input photo).")] = False,
    prob: Annotated[bool, typer.Option(
        "--prob", help="Write the probability as 8-bit grayscale (0-255) instead of a binary mask.")] = False,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", "-t", min=0.0, max=1.0, help="Probability threshold of the binary mask "
        "(default: the model's, usually 0.5).", show_default=False)] = None,
    output_format: Annotated[Optional[str], typer.Option(
        "--format", help="With --points-file: png (one mask file per object into --out-dir) or coco "
        "(one COCO instances file, --out result.json) (default: png).", show_default=False)] = None,
    coco_in: Annotated[Optional[Path], typer.Option(
        "--coco", exists=True, dir_okay=False, help="Predict every annotation of this COCO file (clicks from "
        "its extreme_points, else from its masks) into a new COCO file, --out result.json.",
        show_default=False)] = None,
    images: ImagesDirOpt = None,
    points_from: PointsFromOpt = None,
    polygons: Annotated[bool, typer.Option(
        "--polygons", help="COCO output: polygon outlines instead of exact RLE masks.")] = False,
    category: Annotated[str, typer.Option(
        "--category", help="COCO output from --points-file: the category name of every object.")] = "object",
    device: DeviceOpt = None,
    batch_size: BatchSizeOpt = None,
    precision: PrecisionOpt = None,
    runtime: RuntimeOpt = None,
    config: ConfigOpt = None,
    ray: Annotated[Optional[str], typer.Option(
        "--ray", help="Run --coco or --points-file --out-dir on Ray, resumable: local, auto (the cluster "
        "this machine is in) or ray://HOST:10001 (needs the ray extra: pip install 'dextr\\[ray]').", show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", help="With --ray: model workers (default 1).", show_default=False)] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(
        "--gpus-per-worker", help="With --ray: GPUs per worker (default 0: CPU workers).", show_default=False)] = None,
    threads_per_worker: Annotated[Optional[int], typer.Option(
        "--threads-per-worker", min=1, help="With --ray: torch threads of each CPU worker, which reserves as many "
        "CPUs (default: the cluster's CPUs shared among the workers).", show_default=False)] = None,
) -> None:
    """Predict object masks from four extreme-point clicks per object.

    Points on the command line are X,Y (column, row), as image viewers show them; the library's arrays are \\[y, x].

    Examples:

      dextr predict photo.jpg -m model.pt -p 12,80 -p 300,95 -p 150,10 -p 160,240 --overlay overlay.png

      dextr predict photo.jpg -m model.pt -p 12,80 -p 300,95 -p 150,10 -p 160,240 --positive 150,120 -o corrected.png

      dextr predict -m model.pt --points-file objects.json --out-dir masks/

      dextr predict -m model.pt --points-file objects.json --format coco --out result.json

      dextr predict -m model.pt --coco instances.json --images photos/ --out predicted.json
    """
    cfg = load_config(config)
    ps = settings(cfg.predict, model=model, device=device, batch_size=batch_size, threshold=threshold,
                  precision=precision, runtime=runtime, ray=ray, workers=workers, gpus_per_worker=gpus_per_worker,
                  threads_per_worker=threads_per_worker)
    if ray is not None and (coco_in is None and (points_file is None or output_format == "coco")):
        raise typer.BadParameter("--ray goes with --coco FILE --out OUT.json or --points-file FILE "
                                 "--out-dir DIR", param_hint="--ray")
    model = model_spec(ps.model, "predict")
    fmt = output_format or "png"
    if fmt not in ("png", "coco"):
        raise typer.BadParameter(f"expected png or coco, got {fmt!r}", param_hint="--format")
    coco_out = coco_in is not None or fmt == "coco"
    if (positive or negative) and (points_file is not None or coco_in is not None):
        raise typer.BadParameter("--positive and --negative go with IMAGE and --points (objects.json and "
                                 "COCO files carry their own correction clicks)", param_hint="--positive")
    if coco_out:
        if coco_in is None and points_from is not None:
            raise typer.BadParameter("--points-from goes with --coco", param_hint="--points-from")
        source = _check_coco_options(image, points, points_file, coco_in, out, out_dir, overlay, prob, force,
                                     images=images, inputs=[model, cfg.source])
    elif polygons or images is not None or points_from is not None:
        raise typer.BadParameter("--polygons, --images and --points-from are for COCO output "
                                 "(--coco, or --points-file with --format coco)", param_hint="--polygons")
    elif points_file is None:
        if image is None or not points:
            raise typer.BadParameter("give IMAGE and four --points X,Y, or --points-file objects.json",
                                     param_hint="IMAGE")
        if out_dir is not None:
            raise typer.BadParameter("--out-dir goes with --points-file; use --out", param_hint="--out-dir")
        pts = _parse_points(points)
        clicks = {name: _parse_clicks(values, f"--{name}")
                  for name, values in (("positive", positive), ("negative", negative))}
        out = out or Path(f"{image.stem}_dextr.png")  # not *_mask.png: that reads as ground truth
        check_outputs([(out, "--out", "mask"), (overlay, "--overlay", "overlay")],
                      inputs=[image, model, cfg.source], force=force)
    else:
        if image is not None or points:
            raise typer.BadParameter("--points-file replaces IMAGE and --points; give one or the other",
                                     param_hint="--points-file")
        if out_dir is None or out is not None or overlay is not None:
            raise typer.BadParameter("--points-file writes one mask per object into --out-dir DIR "
                                     "(not --out/--overlay)", param_hint="--out-dir")
    # The library (and torch) load only now, after the usage checks: those answer at once.
    from dextr_lib.core.images import read_image
    from dextr_lib.formats.masks import save_image, write_mask
    from dextr_lib.formats.objects import check_photos, read_objects
    from dextr_lib.formats.overlay import draw_overlay
    from dextr_lib.inference.engine import resolve_threshold
    from dextr_lib.workflows.predict import predict_objects

    if points_file is not None:
        objects = read_objects(points_file)  # fail on a bad file before loading the model
        check_photos(objects, str(points_file))
    net = load_model(model, cfg, map_location=ps.device, runtime=ps.runtime,
                     precision=ps.precision)  # dextr_lib.load_model + cache/mirror config
    thr = resolve_threshold(ps.threshold, net.preprocess)
    kw = dict(batch_size=ps.batch_size, threshold=None if prob else thr, precision=ps.precision,
              runtime=ps.runtime)
    on_ray = ps.ray is not None and (coco_in is not None or (points_file is not None and not coco_out))
    if on_ray:
        _predict_on_ray(net, ps, source if coco_in is not None else objects, out if coco_in is not None else out_dir,
                        images=images, points_from=points_from or "annotations", polygons=polygons,
                        prob=prob, threshold=thr, force=force,
                        inputs=[coco_in if coco_in is not None else points_file, model, cfg.source])
        return
    if coco_out:
        _predict_coco(net, source, out, polygons=polygons, category=category, images=images,
                      points_from=points_from or "annotations", threshold=thr,
                      kw={k: kw[k] for k in ("batch_size", "precision")})
        return
    if points_file is None:
        rgb = read_image(image)
        mask = net.predict_image(rgb, [pts], **{k: None if c is None else [c] for k, c in clicks.items()},
                                 **kw)[0]
        write_mask(mask, out, prob)
        binary = mask >= thr if prob else mask
        console.print(f"Wrote mask {esc(out)} ({rgb.shape[1]}x{rgb.shape[0]}, "
                      f"{int(binary.sum())} object pixels)", highlight=False)
        if overlay is not None:
            save_image(PIL.Image.fromarray(draw_overlay(rgb, [binary], [pts])), overlay)
            console.print(f"Wrote overlay {esc(overlay)}", highlight=False)
        return
    with progress_bar("Predicting", objects.n_objects) as update:
        result = predict_objects(net, objects, out_dir, prob=prob, threshold=thr, on_progress=update,
                                 batch_size=kw["batch_size"], precision=kw["precision"], force=force,
                                 inputs=[points_file, model, cfg.source])
    console.print(f"Wrote {result.count} masks to [bold]{esc(out_dir)}[/]", highlight=False)


def _check_coco_options(image, points, points_file, coco_in, out, out_dir, overlay, prob, force, *, images,
                        inputs):
    """The parsed input of a COCO-output run (usage errors exit 2), its --out checked against
    every file the run reads: ``inputs``, the input file and the photos it names."""
    if coco_in is not None and points_file is not None:
        raise typer.BadParameter("give --coco or --points-file, not both", param_hint="--coco")
    if coco_in is None and points_file is None:
        raise typer.BadParameter("--format coco goes with --points-file objects.json (or use --coco "
                                 "instances.json)", param_hint="--format")
    if image is not None or points:
        raise typer.BadParameter("COCO output takes its objects from --points-file or --coco, "
                                 "not IMAGE/--points", param_hint="IMAGE")
    if out is None or out_dir is not None or overlay is not None or prob:
        raise typer.BadParameter("COCO output writes one instances file: give --out result.json "
                                 "(not --out-dir/--overlay/--prob)", param_hint="--out")
    files = [coco_in, points_file, *inputs]
    check_outputs([(out, "--out", "COCO file")], inputs=files, force=force)  # at once, before reading
    from dextr_lib.workflows.predict import coco_files, objects_files

    if coco_in is not None:
        from dextr_lib.formats.coco import CocoFile

        source = CocoFile.load(coco_in)  # fail on a bad file before loading the model
        photos = coco_files(source, images)
    else:
        from dextr_lib.formats.objects import check_photos, read_objects

        source = read_objects(points_file)
        check_photos(source, str(points_file))
        photos = objects_files(source)
    check_outputs([(out, "--out", "COCO file")], inputs=[*files, *photos], force=force)
    return source


def _predict_coco(net, source, out: Path, *, polygons, category, images, points_from, threshold, kw) -> None:
    from dextr_lib.formats.coco import CocoFile
    from dextr_lib.workflows.predict import predict_coco, predict_points_file

    warnings: List[str] = []
    with progress_bar("Predicting") as update:
        if isinstance(source, CocoFile):
            result = predict_coco(net, source, out, images_dir=images, points_from=points_from,
                                  polygons=polygons, threshold=threshold, on_progress=update,
                                  on_warning=warnings.append, **kw)
        else:
            result = predict_points_file(net, source, out, category=category, polygons=polygons,
                                         threshold=threshold, on_progress=update, images_dir=images, **kw)
    for w in warnings:
        warn(w)
    result.save(out)
    console.print(f"Wrote {len(result)} annotations of {len(result.images)} images to [bold]{esc(out)}[/] "
                  f"(file names relative to {esc(result.images_root)}: read it with --images)", highlight=False)


def _predict_on_ray(net, ps, source, out: Path, *, images, points_from, polygons, prob, threshold, force,
                    inputs) -> None:
    from dextr_lib.formats.coco import CocoFile
    from dextr_lib.workflows.cluster import RaySettings, predict_coco_ray, predict_objects_ray

    rs = RaySettings(address=ps.ray, workers=ps.workers, gpus_per_worker=ps.gpus_per_worker,
                     threads=ps.threads_per_worker)
    kw = dict(threshold=threshold, batch_size=ps.batch_size, precision=ps.precision, runtime=ps.runtime,
              device=ps.device or ("cuda" if ps.gpus_per_worker else "cpu"), force=force, inputs=inputs)
    warnings: List[str] = []
    with progress_bar("Predicting", rate="objects") as update:
        if isinstance(source, CocoFile):
            result = predict_coco_ray(net, source, out, rs, images_dir=images, points_from=points_from,
                                      polygons=polygons, on_progress=update, on_warning=warnings.append, **kw)
        else:
            result = predict_objects_ray(net, source, out, rs, prob=prob, on_progress=update, **kw)
    for w in warnings:
        warn(w)
    for e in result.errors:
        warn(f"{e['image']}: {e['reason']} (left out; a new run retries it)")
    kept = f", {result.shards_kept} shards from an earlier run" if result.shards_kept else ""
    console.print(f"Wrote {result.objects} objects to [bold]{esc(out)}[/] ({result.shards_run} shards "
                  f"predicted{kept})", highlight=False)
