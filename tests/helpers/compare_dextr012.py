"""Compare masks of an imported dextr 0.1.2 model with the real dextr 0.1.2 package (issue 5).

The reference package's source (unpacked from the ``dextr==0.1.2`` wheel) is put on
``sys.path`` only inside this script, with the small shims it needs on current
torch/torchvision. Steps:

1. build the package's ``dextr_resunet101`` (random init; ``pretrained=True`` -> no weights) and
   re-estimate its BatchNorm statistics on real object crops made by the package's own
   inference transforms, so masks are not near-empty;
2. save the package's ``DextrModel`` with ``torch.save`` (as the package's model files are);
3. import that file with ``dextr_lib.load_model`` (restricted unpickler, no package code runs);
4. predict the same objects with both and compare: IoU of 0.5-thresholded masks and mean
   absolute probability difference inside the crop window, for real photos, objects touching
   the border, float points, grayscale and RGBA input (the package gets the RGB-converted image),
   and tiny (~12 px) / thin (~3 px) synthetic objects. Our ``dextr012`` profile is run as
   imported (``crop_box_truncate=True``: exact compatibility) and corrected
   (``crop_box_truncate=False``), plus our default pixel-centre convention for contrast.

Usage::

    .venv/bin/python tests/helpers/compare_dextr012.py [--ref-src /tmp/refsrc] [--target 512]

Exits non-zero when an object with a box of at least 32 px misses the thresholds.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("DEXTR_SHARED_DATA", REPO.parent / "shared" / "data"))


def import_reference(ref_src: str):
    """Import the reference package from ``ref_src`` with compatibility shims."""
    import torchvision.models as tvm

    def no_download(fn):
        def build(pretrained=False, **kwargs):
            kwargs.setdefault("weights", None)
            return fn(**kwargs)
        return build

    tvm.resnet50 = no_download(tvm.resnet50)
    tvm.resnet101 = no_download(tvm.resnet101)
    sys.path.insert(0, ref_src)
    import dextr.model as ref_model
    from dextr.architectures import resunet as ref_resunet

    return ref_model, ref_resunet


def load_objects(n_penn: int, n_coco: int, n_border: int, rng: np.random.Generator):
    """Real objects as (image PIL, points (4,2) [y,x], mask, tag), boxes >= 32 px."""
    from dextr_lib.core.geometry import extreme_points_from_mask

    out = []
    penn = sorted((DATA / "pennfudan" / "images").glob("*.png"))
    rng.shuffle(penn)
    for p in penn:
        if sum(o[3] == "pennfudan" for o in out) >= n_penn:
            break
        img = PIL.Image.open(p).convert("RGB")
        labels = np.array(PIL.Image.open(DATA / "pennfudan" / "labels" / f"{p.stem}_mask.png"))
        for lab in np.unique(labels)[1:2]:
            m = labels == lab
            out.append((img, extreme_points_from_mask(m), m, "pennfudan"))
    coco = sorted((DATA / "coco128seg" / "masks").glob("*.png"))
    rng.shuffle(coco)
    n_c = n_b = 0
    for mp in coco:
        if n_c >= n_coco and n_b >= n_border:
            break
        m = np.array(PIL.Image.open(mp)) > 127
        ys, xs = np.nonzero(m)
        if ys.size == 0 or np.ptp(ys) < 32 or np.ptp(xs) < 32:
            continue
        h, w = m.shape
        border = ys.min() == 0 or xs.min() == 0 or ys.max() == h - 1 or xs.max() == w - 1
        if border and n_b < n_border:
            n_b += 1
            tag = "coco-border"
        elif not border and n_c < n_coco:
            n_c += 1
            tag = "coco"
        else:
            continue
        stem = mp.name.split("_mask")[0]
        img = PIL.Image.open(DATA / "coco128seg" / "images" / f"{stem}.jpg").convert("RGB")
        out.append((img, extreme_points_from_mask(m), m, tag))
    return out


def gray_rgba_objects(rng: np.random.Generator):
    """(image given to us, image given to the package, points, tag)."""
    from dextr_lib.core.geometry import extreme_points_from_mask

    out = []
    stem = "000000000086"  # the grayscale image of coco128seg
    gray = PIL.Image.open(DATA / "coco128seg" / "images" / f"{stem}.jpg")
    for mp in sorted((DATA / "coco128seg" / "masks").glob(f"{stem}_mask*.png")):
        m = np.array(PIL.Image.open(mp)) > 127
        ys, xs = np.nonzero(m)
        if ys.size and np.ptp(ys) >= 32 and np.ptp(xs) >= 32:
            out.append((gray, gray.convert("RGB"), extreme_points_from_mask(m), f"grayscale ({gray.mode})"))
    for p in sorted((DATA / "pennfudan" / "images").glob("*.png"))[:3]:
        rgb = PIL.Image.open(p).convert("RGB")
        alpha = PIL.Image.fromarray(rng.integers(0, 256, size=rgb.size[::-1], dtype=np.uint8))
        rgba = rgb.copy()
        rgba.putalpha(alpha)
        labels = np.array(PIL.Image.open(DATA / "pennfudan" / "labels" / f"{p.stem}_mask.png"))
        out.append((rgba, rgba.convert("RGB"), extreme_points_from_mask(labels == 1), "RGBA"))
    return out


def small_objects(rng: np.random.Generator):
    """Tiny (~12 px) and thin (~3 px) synthetic objects at sub-pixel positions on a photo."""
    img = PIL.Image.open(DATA / "photos" / "bear.jpg").convert("RGB")
    w, h = img.size
    out = []
    for i in range(8):
        cy, cx = rng.uniform(60, h - 60), rng.uniform(60, w - 60)
        if i % 2 == 0:
            sy, sx, tag = 12.0, 12.0, "tiny 12 px"
        else:
            (sy, sx), tag = ((3.0, 40.0) if i % 4 == 1 else (40.0, 3.0)), "thin 3 px"
        y0, x0 = cy - sy / 2, cx - sx / 2
        pts = np.array([[cy, x0], [cy, x0 + sx], [y0, cx], [y0 + sy, cx]]) + rng.uniform(0, 1, size=(4, 2))
        out.append((img, pts, tag))
    return out


def reestimate_bn(ref_pkg, net, samples, target):
    """Cumulative BatchNorm statistics over crops made by the package's transforms."""
    model = ref_pkg.DextrModel(net, (target, target), 10, 10.0)
    tf = model._DextrModel__inference_transforms
    xs = [tf(dict(input=img, extreme_points=pts))["input"] for img, pts in samples]
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for i in range(0, len(xs), 4):
            net(torch.stack(xs[i:i + 4]))
    net.eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    return model


def train_steps(ref_pkg, net, objects, target, steps, rng):
    """A few Adam steps (class-balanced BCE, as the package trains) on real object crops made by
    the package's own crop transform, so the logits get a trained network's confidence."""
    from dextr.data_pipeline import dextr_transforms as T

    tf = T.DextrCropWithHeatmapTransform((target, target), 10, 10.0)
    samples = []
    for img, pts, mask, _ in objects:
        s = tf(dict(input=img, target_mask=PIL.Image.fromarray(mask.astype(np.uint8) * 255),
                    extreme_points=pts))
        s = T.DextrNormalize()(T.DextrToTensor()(s))
        samples.append((s["input"], s["target_mask"]))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for step in range(steps):
        idx = rng.choice(len(samples), size=min(4, len(samples)), replace=False)
        x = torch.stack([samples[i][0] for i in idx])
        y = torch.stack([samples[i][1] for i in idx])
        bal = y.flatten(1).mean(1)[:, None, None, None]
        weight = bal + (1 - 2 * bal) * y
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x)["out"], y, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            print(f"  train step {step}: loss {loss.item():.4f}")
    net.eval()


def compare(ref_probs, our_probs, points):
    rows = []
    for r, o, pts in zip(ref_probs, our_probs, points):
        a, b = r >= 0.5, o >= 0.5
        union = (a | b).sum()
        iou = 1.0 if union == 0 else float((a & b).sum() / union)
        window = (r > 0) | (o > 0)
        diff = float(np.abs(r - o)[window].mean()) if window.any() else 0.0
        ext = np.ptp(pts, axis=0)
        rows.append(dict(iou=iou, prob_diff=diff, box_h=float(ext[0]), box_w=float(ext[1]),
                         fg=int(a.sum())))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref-src", default=os.environ.get("DEXTR_REF_SRC", "/tmp/refsrc"))
    ap.add_argument("--target", type=int, default=512)
    ap.add_argument("--objects", type=int, default=8, help="per real-object group")
    ap.add_argument("--json", default=None, help="write all rows here")
    ap.add_argument("--train-steps", type=int, default=40, help="Adam steps after the BN re-estimate")
    args = ap.parse_args()
    if not (Path(args.ref_src) / "dextr" / "model.py").is_file():
        print(f"reference source not found under {args.ref_src}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    t0 = time.time()
    ref_pkg, ref_resunet = import_reference(args.ref_src)
    with torch.no_grad():  # the package writes into a leaf parameter in place
        net = ref_resunet.dextr_resunet101()

    real = load_objects(args.objects, args.objects, args.objects, rng)
    gr = gray_rgba_objects(rng)
    small = small_objects(rng)
    ref = reestimate_bn(ref_pkg, net, [(o[0], o[1]) for o in real], args.target)
    if args.train_steps:
        train_steps(ref_pkg, net, real, args.target, args.train_steps, rng)
    with torch.no_grad():
        x = torch.stack([ref._DextrModel__inference_transforms(dict(input=o[0], extreme_points=o[1]))["input"]
                         for o in real[:4]])
        logits = net(x)["out"]
    print(f"package network logits on 4 objects: std {logits.std().item():.3f}, "
          f"mean |logit| {logits.abs().mean().item():.3f}")
    work = Path(tempfile.mkdtemp(prefix="dextr012_compare_"))
    path = work / "dextr_resunet101_bn.pth"
    torch.save(ref, path)

    import dextr_lib

    ours = dextr_lib.load_model(path, map_location="cpu")
    print(f"imported {path.name}: {ours!r}; note: {ours.load_note}")
    exact = ours.preprocess
    variants = {
        "exact (crop_box_truncate=True)": exact,
        "corrected (crop_box_truncate=False)": exact.replace(crop_box_truncate=False),
        "pixel-centre convention (profile 'dextr')": exact.replace(point_origin="center", crop_box_truncate=False),
    }

    groups = {}
    for img, pts, _, tag in real:
        groups.setdefault(tag, []).append((img, img, pts))
    for img, pts, _, tag in real[: args.objects]:
        jittered = pts + rng.uniform(-1.5, 1.5, size=pts.shape)
        groups.setdefault("float points", []).append((img, img, jittered))
    for ours_img, ref_img, pts, tag in gr:
        groups.setdefault(tag.split(" ")[0], []).append((ours_img, ref_img, pts))
    for img, pts, tag in small:
        groups.setdefault(tag, []).append((img, img, pts))

    results = {}
    failed = False
    for tag, items in groups.items():
        ref_probs = ref.predict([r for _, r, _ in items], [p for _, _, p in items], batch_size=4)
        for vname, pp in variants.items():
            if vname.startswith("pixel") and tag not in ("pennfudan", "coco", "tiny 12 px"):
                continue
            ours.preprocess = pp
            our_probs = ours.predict([o for o, _, _ in items], [p for _, _, p in items], batch_size=4)
            rows = compare(ref_probs, our_probs, [p for _, _, p in items])
            results.setdefault(tag, {})[vname] = rows
            big = [r for r in rows if min(r["box_h"], r["box_w"]) >= 32]
            ok = all(r["iou"] >= 0.98 and r["prob_diff"] <= 0.01 for r in big)
            if vname.startswith("exact") and not ok:
                failed = True
            ious = [r["iou"] for r in rows]
            diffs = [r["prob_diff"] for r in rows]
            print(f"{tag:14s} n={len(rows):2d} {vname:42s} IoU min {min(ious):.4f} mean "
                  f"{np.mean(ious):.4f} | |dp| max {max(diffs):.4f} mean {np.mean(diffs):.4f}"
                  + ("" if not big else f" | >=32px pass: {ok}"))
        fg = [r["fg"] for r in results[tag][next(iter(variants))]]
        print(f"{'':14s} foreground pixels in the package's masks: min {min(fg)} max {max(fg)}")
    ours.preprocess = exact

    # The masks must depend on the image: same points, different photo.
    img_a, pts_a = real[0][0], real[0][1]
    img_b = real[-1][0].resize(img_a.size)
    ma, mb = ref.predict([img_a, img_b], [pts_a, pts_a])
    a, b = ma >= 0.5, mb >= 0.5
    vary = float((a & b).sum() / max((a | b).sum(), 1))
    print(f"same points on two photos: IoU between the package's masks {vary:.3f} "
          f"(mean |dp| {np.abs(ma - mb)[(ma > 0) | (mb > 0)].mean():.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)  # the saved package model is ~170 MB
    print(f"done in {time.time() - t0:.0f} s; {'FAILED' if failed else 'all >=32 px objects pass'} (exact profile)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
