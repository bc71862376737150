"""Compare masks of an imported DEXTR-PyTorch model with the original code itself (issue 15).

The original repository (https://github.com/scaelles/DEXTR-PyTorch, commit ``PINNED_COMMIT``) is
never vendored: point ``--original-src`` (or ``$DEXTR_ORIGINAL_SRC``) at a checkout of it, e.g.::

    git clone https://github.com/scaelles/DEXTR-PyTorch /tmp/DEXTR-PyTorch
    git -C /tmp/DEXTR-PyTorch checkout 352ccc76067156ebcf7267b07e0a5e43d32e83d5
    pip install opencv-python-headless   # its helpers import cv2 (in dextr's `dev` extra)
    DEXTR_ORIGINAL_SRC=/tmp/DEXTR-PyTorch python tests/helpers/compare_original.py

Steps:

1. build the original network, ``networks.deeplab_resnet.resnet101(1, nInputChannels=4,
   classifier='psp')``, and make it a smooth, confident stand-in for the published weights (a
   random network is chaotic: tiny input changes flip its masks): blur its first convolution,
   damp every residual branch, re-estimate BatchNorm on real object crops made with the
   original's own helpers, and scale the classifier so the logits spread over a few units;
2. save its state dict as the published files are (``module.`` prefix, no BatchNorm counters);
3. run the original ``demo.py`` unmodified on each photo and its clicks (headless shims only:
   matplotlib's Agg backend, ``plt.ginput`` returning the clicks, ``np.int`` for NumPy >= 1.24;
   the photo and the model are put where the demo reads them), recording the network's input and
   output and ``crop2fullmask``'s probabilities;
4. import the same file with ``dextr_lib.load_model`` (profile ``original``) and predict the same
   objects; compare the logits on the demo's own input tensors (<= 1e-3) and the masks end to end:
   IoU of the 0.5-thresholded masks >= 0.99 and mean |probability difference| over the crop
   window <= 0.005. Objects: real photos with float clicks, objects touching the border, small
   and thin objects, a grayscale photo (the demo gets its RGB conversion);
5. check that the masks depend on the image (same points on two photos give other masks).

Per object it also reports where a difference comes from: the network input (crop box,
heatmap, resize: ``rgb``/``heat`` level differences), the network (logits on the demo's input)
and the paste-back (our paste of the demo's own probabilities).

Exits 0 when every check passes, 1 otherwise, 2 when the original source or cv2 is missing.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("DEXTR_SHARED_DATA", REPO.parent / "shared" / "data"))
#: The DEXTR-PyTorch commit this comparison was written against (master, April 2019).
PINNED_COMMIT = "352ccc76067156ebcf7267b07e0a5e43d32e83d5"


# -- the objects --------------------------------------------------------------------------------
def load_objects():
    """Groups ``(tag, image given to dextr_lib, RGB array given to the demo, [(name, points [y, x])])``.

    Clicks on the photos are hand-placed extreme points with fractional parts (a mouse gives
    floats); Penn-Fudan points come from the label masks, jittered to floats."""
    from dextr_lib.core.geometry import extreme_points_from_mask

    def xy(*pts):  # hand-written (x, y) clicks -> [y, x]
        return np.array(pts, dtype=np.float64)[:, ::-1].copy()

    groups = []
    photos = DATA / "photos"
    bear = PIL.Image.open(photos / "bear.jpg").convert("RGB")
    groups.append(("bear.jpg", bear, np.array(bear), [
        ("bear, float clicks", xy((97.4, 268.8), (463.7, 399.2), (215.5, 214.3), (447.9, 432.6))),
        ("small 14 px", xy((440.2, 181.7), (454.6, 186.1), (447.3, 176.9), (446.8, 190.4))),
    ]))
    dc = PIL.Image.open(photos / "dog-cat.jpg").convert("RGB")
    groups.append(("dog-cat.jpg", dc, np.array(dc), [
        ("dog, left border", xy((0.3, 272.6), (330.2, 210.9), (135.8, 24.1), (60.5, 356.7))),
        ("cat, right+bottom border", xy((275.6, 300.2), (499.9, 331.4), (345.1, 114.8), (360.7, 374.5))),
    ]))
    gir = PIL.Image.open(photos / "giraffes_1.jpg").convert("RGB")
    groups.append(("giraffes_1.jpg", gir, np.array(gir), [
        ("giraffe", xy((572.3, 238.6), (757.8, 390.1), (597.5, 200.2), (680.4, 440.9))),
        ("tree, top+left border", xy((0.0, 300.4), (265.7, 5.3), (150.2, 0.0), (70.6, 495.5))),
    ]))
    rng = np.random.default_rng(15)
    penn = DATA / "pennfudan"
    for stem, labels, jitter in (("FudanPed00001", (1, 2), 1.5), ("FudanPed00063", (5, 3), 0.4)):
        img = PIL.Image.open(penn / "images" / f"{stem}.png").convert("RGB")
        lab = np.array(PIL.Image.open(penn / "labels" / f"{stem}_mask.png"))
        objs = []
        for v in labels:
            pts = extreme_points_from_mask(lab == v).astype(np.float64)
            pts = np.clip(pts + rng.uniform(-jitter, jitter, size=pts.shape), 0, np.array(lab.shape) - 1)
            ext = np.ptp(pts, axis=0)
            objs.append((f"{stem}#{v} {ext[0]:.0f}x{ext[1]:.0f} px, float", pts))
        groups.append((stem, img, np.array(img), objs))
    gray_path = DATA / "coco128seg" / "images" / "000000000086.jpg"
    if gray_path.is_file():  # a real grayscale JPEG; the demo needs RGB, so it gets the conversion
        gray = PIL.Image.open(gray_path)
        m = np.array(PIL.Image.open(DATA / "coco128seg" / "masks" / "000000000086_mask0.png")) > 127
        pts = extreme_points_from_mask(m).astype(np.float64) + 0.25
        groups.append((f"grayscale ({gray.mode})", gray, np.array(gray.convert("RGB")),
                       [("grayscale photo", pts)]))
    return groups


# -- the original code --------------------------------------------------------------------------
def import_original(src: Path):
    """Import the original network and helpers modules from the checkout, with NumPy shims."""
    import matplotlib

    matplotlib.use("Agg")
    if not hasattr(np, "int"):  # removed in NumPy 1.24; demo.py casts its clicks with np.int
        np.int = int  # type: ignore[attr-defined]
    sys.path.insert(0, str(src))
    import dataloaders.helpers as helpers
    import networks.deeplab_resnet as resnet

    return resnet, helpers


def demo_input(helpers, image: np.ndarray, clicks_xy: np.ndarray, pad: int = 50) -> torch.Tensor:
    """The demo's network input for one object, built with the original's helpers (calibration)."""
    pts = clicks_xy.astype(int)
    bbox = helpers.get_bbox(image, points=pts, pad=pad, zero_pad=True)
    crop = helpers.crop_from_bbox(image, bbox, zero_pad=True)
    resized = helpers.fixed_resize(crop, (512, 512)).astype(np.float32)
    ep = pts - [np.min(pts[:, 0]), np.min(pts[:, 1])] + [pad, pad]
    ep = (512 * ep * [1 / crop.shape[1], 1 / crop.shape[0]]).astype(int)
    heat = helpers.cstm_normalize(helpers.make_gt(resized, ep, sigma=10), 255)
    x = np.concatenate((resized, heat[:, :, np.newaxis]), axis=2)
    return torch.from_numpy(x.transpose((2, 0, 1))[np.newaxis].copy())


def make_smooth_network(resnet, helpers, calib, seed: int = 0):
    """The original network made smooth and confident (see the module docstring)."""
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        net = resnet.resnet101(1, nInputChannels=4, classifier="psp")
    with torch.no_grad():
        # A blurred first convolution responds to colour regions and the heatmap's blobs, not to
        # single-pixel noise.
        k = torch.exp(-0.5 * (torch.arange(-2, 3.0) / 1.2) ** 2)
        k = (k[:, None] * k[None, :] / k.sum() ** 2)[None, None]
        w = net.conv1.weight
        w.copy_(F.conv2d(w.reshape(-1, 1, 7, 7), k, padding=2).reshape_as(w) * 5)
        # Damped residual branches: the network stays close to its shortcuts, a gentle function.
        for m in net.modules():
            if isinstance(m, resnet.Bottleneck):
                m.bn3.weight.fill_(0.15)
        # BatchNorm statistics of real crops (cumulative average over all of them).
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        xs = [demo_input(helpers, img, pts[:, ::-1]) for img, pts in calib]
        for i in range(0, len(xs) - 1, 2):
            net(torch.cat(xs[i:i + 2]))
        net.eval()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.1
        # Classifier: logits of mean 0.5 and std 3 over two crops (0.8 threshold -> about a third
        # of each crop foreground, varying with the image and the points).
        feats = []
        hook = net.layer5.final.register_forward_hook(lambda m, i, o: feats.append(i[0]))
        net(torch.cat(xs[:2]))
        hook.remove()
        logits = net.layer5.final(feats[0])
        scale = 3.0 / logits.std()
        net.layer5.final.weight.mul_(scale)
        net.layer5.final.bias.copy_((net.layer5.final.bias - logits.mean()) * scale + 0.5)
    return net


def run_demo(src: Path, resnet, helpers, state_path: Path, rgb: np.ndarray, clicks_xy, work: Path):
    """Run the original ``demo.py`` on one photo and its clicks; returns per object
    ``(input tensor, logits (1, 1, 64, 64), probabilities (H, W))``."""
    import matplotlib.pyplot as plt

    run_dir = Path(tempfile.mkdtemp(dir=work))
    (run_dir / "models").mkdir()
    (run_dir / "ims").mkdir()
    os.symlink(state_path, run_dir / "models" / "dextr_pascal-sbd.pth")
    # PNG content under the demo's file name: PIL reads it by content, so the pixels are exact.
    PIL.Image.fromarray(rgb).save(run_dir / "ims" / "dog-cat.jpg", format="PNG")
    clicks = [np.asarray(c, dtype=float).tolist() for c in clicks_xy] + [[]]
    records, probs = [], []
    build, crop2fullmask, ginput = resnet.resnet101, helpers.crop2fullmask, plt.ginput

    def build_recorded(*a, **k):
        net = build(*a, **k)
        forward = net.forward  # the demo calls net.forward(inputs): hooks would not see it

        def forward_recorded(x, *rest, **kw):
            out = forward(x, *rest, **kw)
            records.append((x.detach().clone(), out.detach().clone()))
            return out

        net.forward = forward_recorded
        return net

    def crop2fullmask_recorded(*a, **k):
        out = crop2fullmask(*a, **k)
        probs.append(out.copy())
        return out

    resnet.resnet101 = build_recorded
    helpers.crop2fullmask = crop2fullmask_recorded
    plt.ginput = lambda n, timeout=0: clicks.pop(0)
    cwd = os.getcwd()
    try:
        os.chdir(run_dir)
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                runpy.run_path(str(src / "demo.py"), run_name="__main__")
            except SystemExit:
                pass
    finally:
        os.chdir(cwd)
        resnet.resnet101, helpers.crop2fullmask, plt.ginput = build, crop2fullmask, ginput
        plt.close("all")
    if len(records) != len(clicks_xy) or len(probs) != len(clicks_xy):
        raise RuntimeError(f"the demo ran {len(records)} objects, expected {len(clicks_xy)}")
    return [(x, y, p) for (x, y), p in zip(records, probs)]


# -- comparison ---------------------------------------------------------------------------------
def mask_stats(ref: np.ndarray, ours: np.ndarray) -> dict:
    out = {}
    for t in (0.5, 0.8):
        a, b = ref >= t, ours >= t
        union = (a | b).sum()
        out[f"iou@{t}"] = 1.0 if union == 0 else float((a & b).sum() / union)
    window = (ref > 0) | (ours > 0)
    out["dp_mean"] = float(np.abs(ref - ours)[window].mean()) if window.any() else 0.0
    out["fg@0.5"] = int((ref >= 0.5).sum())
    out["window"] = int(window.sum())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original-src", default=os.environ.get("DEXTR_ORIGINAL_SRC"),
                    help="checkout of scaelles/DEXTR-PyTorch (default: $DEXTR_ORIGINAL_SRC)")
    ap.add_argument("--json", default=None, help="write all rows here")
    ap.add_argument("--diagnose", action="store_true",
                    help="run our network on every demo input to attribute differences (slower)")
    ap.add_argument("--logit-objects", type=int, default=2,
                    help="objects whose logits are compared on identical inputs (without --diagnose)")
    ap.add_argument("--work", default=None, help="keep the model and the demo's records here; "
                    "with --reuse, read them from there instead of running the original again")
    ap.add_argument("--reuse", action="store_true")
    args = ap.parse_args()
    src = Path(args.original_src) if args.original_src else None
    if src is None or not (src / "networks" / "deeplab_resnet.py").is_file():
        print(f"DEXTR-PyTorch checkout not found ({src}); set DEXTR_ORIGINAL_SRC", file=sys.stderr)
        return 2
    try:
        import cv2  # noqa: F401  (the original helpers need it)
    except ImportError:
        print("cv2 not importable: pip install opencv-python-headless (dextr's dev extra)", file=sys.stderr)
        return 2
    if (src / ".git").exists():
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        print(f"original source {src} at commit {head}")
        if head != PINNED_COMMIT:
            print(f"expected the pinned commit {PINNED_COMMIT}", file=sys.stderr)
            return 2
    else:
        print(f"original source {src} (no .git: commit not verified; pinned {PINNED_COMMIT})")
    torch.set_num_threads(max(1, os.cpu_count() or 2))
    t0 = time.time()
    resnet, helpers = import_original(src)
    import dextr_lib

    groups = load_objects()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dextr_original_"))
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "dextr_pascal-sbd.pth"
    records_path = work / "demo_records.pt"
    if args.reuse and state_path.is_file():
        print(f"reusing the stand-in model {state_path}")
    else:
        calib = [(rgb, pts) for _, _, rgb, objs in groups for _, pts in objs][:6]
        net = make_smooth_network(resnet, helpers, calib)
        state = {"module." + k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
        torch.save(state, state_path)
        print(f"smooth stand-in model saved ({time.time() - t0:.0f} s)")
    if args.reuse and records_path.is_file():
        demo = torch.load(records_path, weights_only=False)
        print(f"reusing the original's results from {work}")
    else:
        demo = {}
        for tag, _, rgb, objs in groups:
            demo[tag] = run_demo(src, resnet, helpers, state_path, rgb, [p[:, ::-1] for _, p in objs], work)
            print(f"  demo.py on {tag}: {len(objs)} objects ({time.time() - t0:.0f} s)")
        torch.save(demo, records_path)

    model = dextr_lib.load_model(state_path, map_location="cpu")
    print(f"dextr_lib: {model.arch}, profile {model.preprocess.name}; {model.load_note}")
    pp = model.preprocess
    from dextr_lib.core.images import to_rgb_array
    from dextr_lib.inference.preprocessing import image_to_tensor

    rows, failed = [], []
    logit_budget = args.logit_objects
    net = model.net.eval()
    for tag, ours_img, rgb, objs in groups:
        our_probs = model.predict_image(ours_img, [p for _, p in objs])
        img_t = image_to_tensor(to_rgb_array(ours_img))
        for (name, pts), ours, (x_ref, y_ref, p_ref) in zip(objs, our_probs, demo[tag]):
            row = {"group": tag, "object": name, **mask_stats(p_ref, ours)}
            with torch.no_grad():
                x_ours, boxes = pp.make_inputs(img_t, pts[None])
                if x_ours.shape == x_ref.shape:
                    d = (x_ours - x_ref).abs()[0]
                    row["rgb_max"], row["rgb_mean"] = float(d[:3].max()), float(d[:3].mean())
                    row["rgb_px"] = int((d[:3] > 0.5).any(dim=0).sum())
                    row["heat_max"] = float(d[3].max())
                logits_ref = F.interpolate(y_ref, size=x_ref.shape[-2:], mode="bilinear", align_corners=True)
                size = p_ref.shape
                pasted = pp.paste(torch.sigmoid(logits_ref[:, 0]), boxes, size, pts[None])[0].numpy()
                row["paste_only"] = mask_stats(p_ref, pasted)
                if args.diagnose or logit_budget > 0:
                    logit_budget -= 1
                    logits = net(x_ref)
                    row["logit_max"] = float((logits - logits_ref).abs().max())
                    row["logit_mean"] = float((logits - logits_ref).abs().mean())
                    row["logit_std"] = float(logits_ref.std())
                    ours_net = pp.paste(torch.sigmoid(logits[:, 0]), boxes, size, pts[None])[0].numpy()
                    row["net_and_paste"] = mask_stats(p_ref, ours_net)
            ok = row["iou@0.5"] >= 0.99 and row["dp_mean"] <= 0.005 and row.get("logit_max", 0) <= 1e-3
            if not ok:
                failed.append(name)
            rows.append(row)
            print(f"{tag[:16]:16s} {name[:32]:32s} IoU@.5 {row['iou@0.5']:.4f} @.8 {row['iou@0.8']:.4f} "
                  f"|dp| {row['dp_mean']:.4f} fg {row['fg@0.5']:6d}/{row['window']:6d} | input: rgb max "
                  f"{row.get('rgb_max', float('nan')):6.2f} mean {row.get('rgb_mean', float('nan')):.3f} "
                  f"heat max {row.get('heat_max', float('nan')):6.2f} | paste only IoU "
                  f"{row['paste_only']['iou@0.5']:.4f} |dp| {row['paste_only']['dp_mean']:.4f}"
                  + (f" | logits max {row['logit_max']:.2e} mean {row['logit_mean']:.2e} (std "
                     f"{row['logit_std']:.2f}), net+paste IoU {row['net_and_paste']['iou@0.5']:.4f} |dp| "
                     f"{row['net_and_paste']['dp_mean']:.4f}" if "logit_max" in row else ""))

    # The masks must depend on the image: the same points on two photos.
    tag_a, img_a, _, objs_a = groups[0]
    img_b = groups[2][1].resize(img_a.size)
    ma, mb = model.predict([img_a, img_b], [objs_a[0][1]] * 2)
    a, b = ma >= pp.threshold, mb >= pp.threshold
    vary = float((a & b).sum() / max((a | b).sum(), 1))
    print(f"same points on two photos: IoU between the masks {vary:.3f}")
    # Tiny objects may be nearly empty; the others must have a real boundary inside the window.
    fg = [r["fg@0.5"] / r["window"] for r in rows if r["window"] >= 1000]
    print(f"foreground share of the window at 0.5 (windows >= 1000 px): min {min(fg):.2f} max {max(fg):.2f}")
    checks = {
        "all objects IoU@0.5 >= 0.99, mean |dp| <= 0.005, logits <= 1e-3": not failed,
        "masks vary with the image (IoU < 0.9)": vary < 0.9,
        "masks are neither empty nor full (5%..95% of the window)": min(fg) > 0.05 and max(fg) < 0.95,
    }
    for what, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {what}")
    if failed:
        print("failed objects: " + ", ".join(failed))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "vary_iou": vary}, indent=1))
    print(f"done in {time.time() - t0:.0f} s; {'all checks pass' if all(checks.values()) else 'FAILED'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
