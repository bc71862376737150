"""A small trained model for the int8/bf16 mask-agreement numbers of ``bench_runtimes.py``.

Random weights say nothing about quantisation error (their logits hover around 0), so the
benchmark measures int8 and bf16 masks against fp32 on a resunet18 trained on Penn-Fudan
(../shared/data, or ``$DEXTR_SHARED_DATA``). To be cheap on a shared 2-core machine the crops
are made once (the paper's extreme points of each pedestrian, the model's own pre-processing),
then the network is trained on them with Adam; this is not a substitute for ``dextr train``.

    python benchmarks/train_small_model.py --target-size 128 --steps 300 --out /tmp/peds18.pt
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from bench_predict import SHARED

import dextr_lib
from dextr_lib.core.geometry import extreme_points_from_mask
from dextr_lib.core.images import read_image
from dextr_lib.inference.preprocessing import image_to_tensor


def crops(model, max_objects: int):
    """Network inputs and targets of the Penn-Fudan pedestrians (boxes of at least 32 px)."""
    import PIL.Image

    pp = model.preprocess
    xs, ys = [], []
    for label_path in sorted((SHARED / "pennfudan" / "labels").glob("*_mask.png")):
        image = read_image(SHARED / "pennfudan" / "images" / label_path.name.replace("_mask", ""))
        labels = np.asarray(PIL.Image.open(label_path))
        img_t = image_to_tensor(image)
        for v in np.unique(labels)[1:]:
            mask = labels == v
            pts = extreme_points_from_mask(mask)
            if np.ptp(pts[:, 0]) < 32 or np.ptp(pts[:, 1]) < 32:
                continue
            x, boxes = pp.make_inputs(img_t, pts[None].astype(float))
            xs.append(x)
            ys.append((pp.crop(torch.from_numpy(mask)[None, None].float(), boxes) > 0.5).float())
            if len(xs) == max_objects:
                return torch.cat(xs), torch.cat(ys)
    return torch.cat(xs), torch.cat(ys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resunet18")
    ap.add_argument("--target-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--objects", type=int, default=400)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = dextr_lib.create_model(args.arch, target_size=args.target_size)
    x_all, y_all = crops(model, args.objects)
    n_val = max(8, len(x_all) // 10)
    x_val, y_val, x_tr, y_tr = x_all[:n_val], y_all[:n_val], x_all[n_val:], y_all[n_val:]
    print(f"{len(x_tr)} training crops, {n_val} held out", flush=True)
    net = model.net.train().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(x_tr), (args.batch_size,), generator=gen)
        x, y = x_tr[idx], y_tr[idx]
        if torch.rand((), generator=gen) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        pred = net(x_val) > 0
    inter = (pred & (y_val > 0.5)).flatten(1).sum(1).float()
    union = (pred | (y_val > 0.5)).flatten(1).sum(1).float()
    miou = (inter / union.clamp(min=1)).mean().item()
    print(f"held-out crop mIoU {miou:.3f}", flush=True)
    model.meta.update(trained_on="Penn-Fudan crops (benchmarks/train_small_model.py)", steps=args.steps,
                      heldout_crop_miou=miou)
    model.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
