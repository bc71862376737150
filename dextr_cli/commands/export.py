"""``dextr export``: write a model as ONNX for ONNX Runtime / OpenVINO, optionally int8."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from .._console import console, err_console
from .._options import ConfigOpt


def export(
    model: Annotated[str, typer.Argument(
        help="Model checkpoint file, legacy file or registered model name.", show_default=False,
        metavar="MODEL")],
    out: Annotated[Path, typer.Argument(
        help="The .onnx file to write.", dir_okay=False, show_default=False, metavar="OUT.onnx")],
    int8: Annotated[bool, typer.Option(
        "--int8", help="Quantise to int8 (static; calibrated on --calibration-images): 2.5-3.5x "
        "faster than fp32 on a CPU with VNNI, 1.5-1.7x on one without (OpenVINO), masks within "
        "IoU 0.97 of fp32 on a trained model.")] = False,
    calibration_images: Annotated[Optional[str], typer.Option(
        "--calibration-images", help="Glob of your own photos (quote it): objects are made in them "
        "as jittered boxes, to calibrate --int8 and to check the export.", show_default=False)] = None,
    calibration_points: Annotated[Optional[Path], typer.Option(
        "--calibration-points", exists=True, dir_okay=False, help="objects.json (from `dextr "
        "points-from-mask`: extreme points by the paper's rule) to calibrate and check on instead.",
        show_default=False)] = None,
    objects: Annotated[int, typer.Option(
        "--objects", min=1, help="How many calibration objects (a few dozen are enough).")] = 32,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the calibration boxes.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT.onnx if it exists.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Export a model to ONNX, with its pre-processing settings stored in the file.

    The .onnx file works wherever a model is asked for (`dextr predict -m model.onnx`, `dextr eval`, `dextr_lib.load_model("model.onnx")`) and runs with OpenVINO where it is installed (pip install 'dextr\\[openvino]'), else ONNX Runtime (pip install 'dextr\\[onnx]'). The export is checked against PyTorch on the calibration objects: the largest logit difference and mask IoU are printed.

    Examples:

      dextr export model.pt model.onnx --calibration-images "photos/*.jpg"

      dextr export model.pt model-int8.onnx --int8 --calibration-images "photos/*.jpg" --objects 48
    """
    if out.suffix.lower() != ".onnx":
        raise typer.BadParameter(f"OUT must end in .onnx, got {out.name}", param_hint="OUT.onnx")
    if out.exists() and not force:
        raise typer.BadParameter(f"{out} exists; pass --force to overwrite it", param_hint="OUT.onnx")
    if int8 and calibration_images is None and calibration_points is None:
        raise typer.BadParameter("--int8 needs --calibration-images GLOB (a few dozen objects from "
                                 "photos like yours) or --calibration-points objects.json",
                                 param_hint="--int8")
    if calibration_images is not None and calibration_points is not None:
        raise typer.BadParameter("give --calibration-images or --calibration-points, not both",
                                 param_hint="--calibration-points")
    from dextr_lib.config import load_config
    from dextr_lib.utils.fileio import check_outputs
    from dextr_lib.workflows.export import calibration_objects, export_onnx, objects_from_points_file

    from .._models import load_model

    cfg = load_config(config)
    check_outputs([(out, "OUT.onnx", "ONNX file")], inputs=[model, calibration_points, cfg.source], force=force)
    net = load_model(model, cfg, map_location="cpu")
    if calibration_points is not None:
        calib = objects_from_points_file(calibration_points, objects)
    elif calibration_images is not None:
        calib = calibration_objects(calibration_images, objects, seed=seed)
    else:
        calib = None
    check = calib if calib else calibration_objects([_noise_image(seed)], 4, seed=seed)
    with err_console.status("Exporting") as status:
        report = export_onnx(net, out, int8=int8, calibration=calib, check=check, overwrite=force,
                             on_stage=lambda s: status.update(s[0].upper() + s[1:]))
    kind = "int8" if int8 else "fp32"
    console.print(f"Wrote {out} ({kind}, {report.size_bytes / 1e6:.1f} MB)", highlight=False)
    what = "calibration objects" if calib else "synthetic objects (pass --calibration-images to check on real photos)"
    console.print(
        f"Checked against PyTorch fp32 on {report.n_check} {what}: max |logit difference| "
        f"{report.max_abs_logit_diff:.2e}, mask IoU min {report.min_mask_iou:.4f} mean "
        f"{report.mean_mask_iou:.4f}", highlight=False)


def _noise_image(seed: int):
    """A random photo-sized image for the export check when the user gives no photos."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
