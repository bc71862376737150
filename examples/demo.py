"""End-to-end demo: a model, an image, four extreme points -> a mask and an overlay.

    python examples/demo.py --out-dir demo_out          # the published DEXTR model when reachable
    python examples/demo.py --offline                   # skip the download: small UNTRAINED model
    python examples/demo.py --model path/to/model.pt    # your checkpoint (or another zoo name)

Without --model the demo uses the published model `pascalvoc-resunet101` (the `dextr` 0.1.2
package's ResNet-101 U-Net trained on PASCAL VOC 2012): it is downloaded once into the model
cache (hash-checked, with a progress bar; `$DEXTR_MIRROR` is tried first) and reused from there.
When it cannot be downloaded (offline), the demo says so in one line and falls back to a fresh
resunet18 with random weights: the pipeline still runs end to end (crop, heatmaps, network,
paste-back, overlay), but that mask is NOT meaningful. The image is a real photo from
../shared/data/photos (or $DEXTR_SHARED_DATA/photos) when that folder exists, else a synthetic
picture drawn here.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

import dextr_lib
from dextr_lib.core.geometry import extreme_points_from_mask
from dextr_lib.core.images import read_image
from dextr_lib.errors import ChecksumError, DownloadError
from dextr_lib.formats.overlay import draw_overlay

SHARED_DATA = Path(os.environ.get("DEXTR_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))
PHOTOS = SHARED_DATA / "photos"
#: The published model the demo shows when it can download it (see `dextr download --list`).
PUBLISHED_MODEL = "pascalvoc-resunet101"
#: The bear's left-most, right-most, top and bottom points in bear.jpg, as [y, x].
BEAR_POINTS = np.array([[318, 101], [395, 463], [216, 213], [432, 447]])

err = Console(stderr=True, highlight=False)


def synthetic_image(h: int = 240, w: int = 320):
    """A gradient background with a textured green ellipse; returns (rgb uint8, object mask)."""
    yy, xx = np.mgrid[:h, :w]
    rgb = np.stack([40 + 60 * xx / w, 90 + 60 * yy / h, np.full((h, w), 140.0)], axis=-1)
    mask = ((yy - 125) / 70.0) ** 2 + ((xx - 150) / 100.0) ** 2 <= 1
    rng = np.random.default_rng(0)
    rgb[mask] = [70, 200, 90]
    rgb += rng.normal(0, 8, size=rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


class _DownloadBar:
    """``on_progress(done, total)`` for the library's downloads: a Rich bar on stderr, drawn
    only once bytes arrive (a cached model draws nothing)."""

    def __init__(self, name: str):
        self.name, self.progress, self.task = name, None, None

    def __call__(self, done: int, total=None) -> None:
        if self.progress is None:
            self.progress = Progress(TextColumn(f"Downloading {self.name}"), BarColumn(),
                                     DownloadColumn(), TransferSpeedColumn(), console=err)
            self.progress.start()
            self.task = self.progress.add_task("", total=total)
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def published_or_untrained(name: str, device: str):
    """``(model, trained)``: the zoo model ``name`` (downloaded once, then cached), else, when it
    cannot be downloaded or fails its hash check, a new untrained resunet18."""
    bar = _DownloadBar(name)
    try:
        model = dextr_lib.load_model(name, map_location=device, on_progress=bar)
        return model, True
    except DownloadError as e:
        bar.close()
        err.print(f"[yellow]Offline:[/] cannot download the published model {name}, falling back "
                  f"to an untrained network ({escape(str(e))})", soft_wrap=True)
    except ChecksumError as e:
        bar.close()
        err.print(f"[yellow]Not used:[/] the download of {name} failed its hash check, falling "
                  f"back to an untrained network ({escape(str(e))})", soft_wrap=True)
    finally:
        bar.close()
    return untrained(device), False


def untrained(device: str):
    torch.manual_seed(0)
    return dextr_lib.create_model("resunet18", target_size=256).to(device)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path("demo_out"))
    ap.add_argument("--model", help="trained checkpoint file or model-zoo name (default: the "
                    f"published {PUBLISHED_MODEL}, else an untrained resunet18)")
    ap.add_argument("--published", default=PUBLISHED_MODEL, metavar="NAME",
                    help=f"zoo model tried when --model is not given (default: {PUBLISHED_MODEL})")
    ap.add_argument("--offline", action="store_true",
                    help="do not try to download: use a new, untrained resunet18")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")
    args = ap.parse_args(argv)

    if args.model:
        model, trained = dextr_lib.load_model(args.model, map_location=args.device), True
        print(f"Model: {args.model} ({model.arch}, target {model.preprocess.target_size})")
    else:
        if args.offline:
            model, trained = untrained(args.device), False
        else:
            model, trained = published_or_untrained(args.published, args.device)
        if trained:
            print(f"Model: the published {args.published} ({model.arch}, target "
                  f"{model.preprocess.target_size}; kept in the model cache, see `dextr download --list`)")
        else:
            print("Model: a NEW resunet18 with random weights (untrained): the mask below shows "
                  "that the pipeline runs, not what DEXTR can do.\n       Connect to the internet "
                  f"(or set DEXTR_MIRROR) for {args.published}, or pass --model CKPT.")

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
          f"({binary.mean():.1%} of the image)" + ("" if trained else ", untrained: not meaningful"))
    print(f"Wrote {args.out_dir / 'mask.png'} and {args.out_dir / 'overlay.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
