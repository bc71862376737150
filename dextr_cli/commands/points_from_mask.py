"""``dextr points-from-mask``: the four extreme points of every object in label images or masks."""
from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from dextr_lib.config import load_config
from dextr_lib.errors import DextrError
from dextr_lib.utils.fileio import check_outputs

from .._console import console, err_console, esc, warn
from .._options import ConfigOpt, SeedOpt, expand_files, settings

#: Rows of the printed table; objects.json always has every object.
TABLE_ROWS = 50


def points_from_mask(
    masks: Annotated[List[Path], typer.Argument(
        help="Label images (each value is an object) or binary mask files (one object each); a quoted "
        "glob is expanded.", callback=expand_files, show_default=False, metavar="MASK_OR_LABEL_IMAGE")],
    kind: Annotated[Optional[str], typer.Option(
        "--kind", help="label: every label value is an object (palette, 8, 16 or 32-bit); "
        "mask: each file is one object (non-zero pixels) (default: label).", show_default=False)] = None,
    ignore_index: Annotated[Optional[int], typer.Option(
        "--ignore-index", help="Label value that is void, not an object (labels only) (default: 255).",
        show_default=False)] = None,
    min_area: Annotated[Optional[int], typer.Option(
        "--min-area", min=1, help="Skip objects with fewer pixels (default: 1).", show_default=False)] = None,
    largest_component: Annotated[Optional[bool], typer.Option(
        "--largest-component/--all-components",
        help="Keep only each object's largest connected part (drops stray pixels) (default: all).",
        show_default=False)] = None,
    jitter: Annotated[float, typer.Option(
        "--jitter", min=0.0, help="Std of Gaussian noise added to the points, in pixels "
        "(simulates a human annotator).")] = 0.0,
    seed: SeedOpt = None,
    image: Annotated[Optional[Path], typer.Option(
        "--image", exists=True, dir_okay=False,
        help="The photo of a single label/mask file.", show_default=False)] = None,
    image_dir: Annotated[Optional[Path], typer.Option(
        "--image-dir", exists=True, file_okay=False,
        help="Folder of the photos, matched by stem: labels/X_mask.png -> X.jpg "
        "(default: beside the mask, ../images, ../JPEGImages).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", dir_okay=False, help="Write objects.json here (paths relative to it) "
        "and print a table; without it the JSON goes to stdout.", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite an existing --out file (never an input).")] = False,
    output_format: Annotated[Optional[str], typer.Option(
        "--format", help="objects (objects.json) or coco (a COCO instances file with each object's "
        "mask as RLE, bbox, area and extreme_points; needs --out) (default: objects).",
        show_default=False)] = None,
    category: Annotated[str, typer.Option(
        "--category", help="--format coco: the category name of every object.")] = "object",
    polygons: Annotated[bool, typer.Option(
        "--polygons", help="--format coco: polygon outlines instead of exact RLE masks.")] = False,
    images: Annotated[Optional[Path], typer.Option(
        "--images", file_okay=False, help="--format coco: the images folder that file_name entries "
        "are relative to, as COCO tools join them (default: the photos' common folder).",
        show_default=False)] = None,
    config: ConfigOpt = None,
) -> None:
    """Extreme points (left, right, top, bottom) of every object in label images or mask files.

    Points follow the DEXTR paper's rule: the object's extreme pixel on each side, the middle one where several tie. The result, objects.json, feeds `dextr predict --points-file`; its points are stored as \\[x, y] ("points_xy"), as image viewers show them.

    Examples:

      dextr points-from-mask labels/FudanPed00001_mask.png --largest-component --out objects.json

      dextr points-from-mask masks/*_mask*.png --kind mask --image-dir images --min-area 200 -o mask-objects.json

      dextr points-from-mask SegmentationObject/2007_000032.png --jitter 3 --seed 0 > voc-objects.json

      dextr points-from-mask masks/*_mask*.png --kind mask --image-dir images --format coco -o instances.json
    """
    cfg = load_config(config)
    ps = settings(cfg.points_from_mask, kind=kind, ignore_index=ignore_index,
                  min_area=min_area, largest_component=largest_component)
    if image is not None and len(masks) != 1:
        raise typer.BadParameter(
            f"--image names the photo of one label/mask file, but {len(masks)} were given; "
            "use --image-dir", param_hint="--image")
    fmt = output_format or "objects"
    if fmt not in ("objects", "coco"):
        raise typer.BadParameter(f"expected objects or coco, got {fmt!r}", param_hint="--format")
    if fmt == "coco" and out is None:
        raise typer.BadParameter("--format coco writes a file: add --out instances.json", param_hint="--out")
    if fmt != "coco" and (polygons or images is not None):
        raise typer.BadParameter("--polygons and --images are for --format coco", param_hint="--polygons")
    # The library (and torch) load only now, after the usage checks: those answer at once.
    from dextr_lib.core.geometry import yx_to_xy
    from dextr_lib.formats.objects import dumps_objects, objects_to_dict, write_objects
    from dextr_lib.workflows.points import mask_photos, points_from_masks

    if out is not None:  # before reading anything: never replace a label image or a photo with JSON
        photos = mask_photos(masks, image=image, image_dir=image_dir)
        check_outputs([(out, "--out", "points file")], inputs=[*masks, *photos, cfg.source], force=force)

    warnings: List[str] = []
    options = dict(
        kind=ps.kind, ignore_index=ps.ignore_index, min_area=ps.min_area,
        largest_component_only=ps.largest_component,
        jitter=jitter, seed=seed, image=image, image_dir=image_dir, on_warning=warnings.append,
    )
    if fmt == "coco":
        from dextr_lib.workflows.points import instances_from_masks

        instances = instances_from_masks(masks, out, category=category, polygons=polygons, images_dir=images,
                                         **options)
        for w in warnings:
            warn(w)
        try:
            instances.save(out)
        except OSError as e:
            raise DextrError(f"cannot write {out}: {e}") from None
        console.print(f"Wrote {len(instances)} objects of {len(instances.images)} images to [bold]{esc(out)}[/] "
                      f"(file names relative to {esc(instances.images_root)}: read it with --images)",
                      highlight=False)
        return
    entries = points_from_masks(masks, **options)
    for w in warnings:
        warn(w)
    n_obj = sum(len(e.objects) for e in entries)
    if n_obj == 0:
        warn("no objects found")
    if out is None:
        sys.stdout.write(dumps_objects(objects_to_dict(entries)))
        err_console.print(f"{n_obj} objects in {len(entries)} images", highlight=False)
        return
    write_objects(entries, out)
    shown = min(n_obj, TABLE_ROWS)
    title = "Extreme points (x, y)" + (f", the first {shown} of {n_obj} objects" if shown < n_obj else "")
    table = Table("image", "label", "area", "left", "right", "top", "bottom", title=title)
    rows = ((e, o) for e in entries for o in e.objects)
    for e, o in itertools.islice(rows, shown):
        xy = yx_to_xy(o.points)
        cells = [", ".join(f"{v:g}" for v in p) for p in xy]
        table.add_row(esc(Path(e.image).name) if e.image else "-",
                      esc(o.label if o.label is not None else o.name), str(o.area), *cells)
    console.print(table)
    if shown < n_obj:
        console.print(f"({n_obj - shown} more objects not shown; all are in {esc(out)})", highlight=False)
    console.print(f"Wrote {n_obj} objects from {len(entries)} images to [bold]{esc(out)}[/]", highlight=False)
