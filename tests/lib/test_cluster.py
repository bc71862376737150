"""The Ray workflow (dextr_lib.workflows.cluster): shards, keys, manifest and assembly (fast, no
Ray); the pipeline on a local Ray against one process, and a killed run resumed (slow)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from dextr_lib.errors import MissingExtraError
from dextr_lib.workflows import cluster
from dextr_lib.workflows.cluster import ShardStore, model_hash, plan_shards, require_ray, shard_key


def test_shards_cover_every_photo_once():
    shards = plan_shards(10, 4)
    assert [list(s) for s in shards] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plan_shards(0, 4) == []


def test_shard_key_changes_with_settings_and_inputs():
    base = shard_key("model-a", [["photo.jpg", 10, 5, [[1, 2]]]])
    assert base == shard_key("model-a", [["photo.jpg", 10, 5, [[1, 2]]]])
    assert base != shard_key("model-b", [["photo.jpg", 10, 5, [[1, 2]]]])
    assert base != shard_key("model-a", [["photo.jpg", 10, 6, [[1, 2]]]])  # the photo changed


def test_model_hash_follows_the_weights(tiny_model):
    h = model_hash(tiny_model)
    assert h == model_hash(tiny_model)
    other = type(tiny_model).from_checkpoint(tiny_model.checkpoint_dict(), map_location="cpu")
    assert model_hash(other) == h
    with torch.no_grad():
        next(other.net.parameters()).add_(1e-3)
    assert model_hash(other) != h


def test_store_keeps_only_finished_shards_of_this_run(tmp_path):
    store = ShardStore(tmp_path / "parts", ["k0", "k1"], {"task": "coco"})
    assert not store.resumable()
    store.start()
    assert store.resumable()
    store.write(0, [{"annotations": [{"id": 1}]}])
    store.write(1, [{"error": "cannot read x.jpg"}])
    assert store.read(0) == [{"annotations": [{"id": 1}]}]
    assert store.read(1) is None  # a failed photo: the shard is tried again
    assert not ShardStore(tmp_path / "parts", ["k0", "other"], {}).resumable()
    assert ShardStore(tmp_path / "parts", ["other", "k1"], {}).read(0) is None
    assert not list((tmp_path / "parts").glob(".*.tmp"))  # atomic writes leave no temporaries
    store.remove()
    assert not (tmp_path / "parts").exists()


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'dextr\[ray\]'"):
        require_ray()


# -- on a local Ray (slow) ---------------------------------------------------------------------

_SCRIPT = textwrap.dedent("""
    import sys, ray
    sys.path.insert(0, {repo!r})
    from tests.helpers.models import new_tiny_model
    from dextr_lib.formats.coco import CocoFile
    from dextr_lib.workflows.cluster import RaySettings, predict_coco_ray
    ray.init(num_cpus=2, include_dashboard=False)
    predict_coco_ray(new_tiny_model(), CocoFile.load({src!r}), {out!r}, RaySettings(shard_photos=1),
                     images_dir={images!r}, on_progress=lambda d, n: print(d, n, flush=True))
""")


@pytest.fixture
def coco_in(shared_data, tmp_path):
    """A COCO file of 4 coco128seg photos' objects (area >= 256), with their extreme points."""
    from dextr_lib.workflows.points import instances_from_masks

    images = shared_data / "coco128seg" / "images"
    stems = sorted(p.stem for p in images.glob("*.jpg"))[:4]
    masks = [m for s in stems for m in sorted((shared_data / "coco128seg" / "masks").glob(f"{s}_mask*.png"))]
    cf = instances_from_masks(masks, images / "x.json", kind="mask", image_dir=images, min_area=256)
    cf.save(tmp_path / "in.json")
    return tmp_path / "in.json", images


@pytest.mark.slow
def test_ray_gives_the_file_of_one_process_and_resumes(coco_in, tmp_path, tiny_model):
    ray = pytest.importorskip("ray")
    from dextr_lib.formats.coco import CocoFile
    from dextr_lib.inference.device import torch_threads
    from dextr_lib.workflows.predict import predict_coco

    src, images = coco_in
    with torch_threads(1):  # the actors' thread count: CPU convolutions sum in a thread-dependent order
        predict_coco(tiny_model, CocoFile.load(src), tmp_path / "one.json", images_dir=images).save()
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        r = cluster.predict_coco_ray(tiny_model, CocoFile.load(src), tmp_path / "ray.json",
                                     cluster.RaySettings(workers=2, shard_photos=1), images_dir=images)
    finally:
        ray.shutdown()
    assert r.shards_run == 4 and not r.errors
    assert (tmp_path / "ray.json").read_text() == (tmp_path / "one.json").read_text()
    assert not (tmp_path / "ray.json.parts").exists()

    # killed after its first shard, then run again: only the missing shards are predicted
    out = tmp_path / "resumed.json"
    script = _SCRIPT.format(repo=os.getcwd(), src=str(src), out=str(out), images=str(images))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    parts = tmp_path / "resumed.json.parts"
    deadline = time.monotonic() + 240
    while not list(parts.glob("shard-*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, f"the run to interrupt ended first:\n{proc.communicate()[0]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = len(list(parts.glob("shard-*.json")))
    assert 1 <= kept < 4 and not out.exists()
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        r = cluster.predict_coco_ray(tiny_model, CocoFile.load(src), out,
                                     cluster.RaySettings(shard_photos=1), images_dir=images)
    finally:
        ray.shutdown()
    assert (r.shards_kept, r.shards_run) == (kept, 4 - kept)
    assert out.read_text() == (tmp_path / "one.json").read_text()
    assert json.loads(out.read_text())["annotations"]
