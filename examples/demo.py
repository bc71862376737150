"""End-to-end demo: a model, an image, four extreme points -> a mask and an overlay.

    python examples/demo.py --out-dir demo_out                   # small UNTRAINED model
    python examples/demo.py --model path/to/model.pt             # a trained checkpoint (or zoo name)

Without --model the demo creates a fresh resunet18 whose weights are random: the pipeline runs end
to end (crop, heatmaps, network, paste-back, overlay), but the mask is NOT meaningful until you pass
a trained model. The image is a real photo from ../shared/data/photos when that folder exists,
else a synthetic picture drawn here.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

import dextr_lib
from dextr_lib.geometry import extreme_points_from_mask
from dextr_lib.images import read_image
from dextr_lib.overlay import draw_overlay

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"
#: The bear's left-most, right-most, top and bottom points in bear.jpg, as [y, x].
BEAR_POINTS = np.array([[318, 101], [395, 463], [216, 213], [432, 447]])


def synthetic_image(h: int = 240, w: int = 320):
    """A gradient background with a textured orange ellipse; returns (rgb uint8, object mask)."""
    yy, xx = np.mgrid[:h, :w]
    rgb = np.stack([40 + 60 * xx / w, 90 + 60 * yy / h, np.full((h, w), 140.0)], axis=-1)
    mask = ((yy - 125) / 70.0) ** 2 + ((xx - 150) / 100.0) ** 2 <= 1
    rng = np.random.default_rng(0)
    rgb[mask] = [70, 200, 90]
    rgb += rng.normal(0, 8, size=rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path("demo_out"))
    ap.add_argument("--model", help="trained checkpoint file or model-zoo name (default: a new, "
                    "untrained resunet18)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")
    args = ap.parse_args(argv)

    if args.model:
        model = dextr_lib.load_model(args.model, map_location=args.device)
        print(f"Model: {args.model} ({model.arch}, target {model.preprocess.target_size})")
    else:
        torch.manual_seed(0)
        model = dextr_lib.create_model("resunet18", target_size=256).to(args.device)
        print("Model: a NEW resunet18 with random weights (untrained): the mask below shows that the "
              "pipeline runs, not what DEXTR can do.\n       Pass --model CKPT (e.g. from `dextr train`) "
              "for a real mask.")

    photo = PHOTOS / "bear.jpg"
    if photo.is_file():
        image, points, source = read_image(photo), BEAR_POINTS, str(photo)
    else:
        image, mask = synthetic_image()
        points, source = extreme_points_from_mask(mask), "a synthetic ellipse (../shared/data is absent)"
    print(f"Image: {source}, {image.shape[1]}x{image.shape[0]}")
    print("Extreme points as X,Y (left, right, top, bottom): "
          + "  ".join(f"{x},{y}" for y, x in points))

    t0 = time.perf_counter()
    prob = model.predict_image(image, [points])[0]
    took = time.perf_counter() - t0
    binary = prob >= model.preprocess.threshold

    args.out_dir.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(binary.astype(np.uint8) * 255).save(args.out_dir / "mask.png")
    PIL.Image.fromarray(draw_overlay(image, [binary], [points])).save(args.out_dir / "overlay.png")
    print(f"Predicted in {took:.2f} s on {model.device}: {int(binary.sum())} object pixels "
          f"({binary.mean():.1%} of the image)")
    print(f"Wrote {args.out_dir / 'mask.png'} and {args.out_dir / 'overlay.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
