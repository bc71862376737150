"""The Ray workflow (dextr_lib.workflows.cluster): shards, keys, manifest and assembly, and the
workflows with correction clicks through the pipeline's stages in this process (fast, no Ray);
the pipeline on a local Ray against one process, and a killed run resumed (slow)."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from dextr_lib.errors import CorrectionError, DistributedError, MissingExtraError, OutputError
from dextr_lib.workflows import cluster
from dextr_lib.formats.coco import CocoFile
from dextr_lib.formats.objects import ImageEntry, ObjectEntry, ObjectsFile
from dextr_lib.inference.device import torch_threads
from dextr_lib.weights.surgery import input_conv
from dextr_lib.workflows import predict
from dextr_lib.workflows.cluster import (
    RaySettings, ShardStore, model_hash, plan_shards, require_ray, shard_key, worker_threads,
)


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


@pytest.mark.parametrize("failure", [ValueError("Invalid address format: bogus"),
                                     ConnectionError("Could not find any running Ray instance")])
def test_a_ray_address_that_cannot_be_reached_is_one_error(failure):
    class FakeRay:  # what ray.init raises for a malformed address, or no cluster there
        def is_initialized(self):
            return False

        def init(self, **kw):
            raise failure

    with pytest.raises(DistributedError, match=r"--ray 'bogus'.*ray://"):
        cluster._connect(FakeRay(), "bogus")


def test_worker_threads_share_the_cpus_and_fit_a_node():
    assert worker_threads([16], 2) == 8
    assert worker_threads([2], 1) == 2 and worker_threads([2], 4) == 1
    assert worker_threads([8, 8, 8], 2) == 8  # 12 each would fit no node
    assert worker_threads([], 1) == 1


# -- corrections through the pipeline's stages, in this process (fast) --------------------------

POSITIVE_YX = np.array([[22.0, 33.0]])  # inside the synthetic disk's crop
NEGATIVE_YX = np.array([[40.0, 50.0], [20.0, 30.0]])


def _in_process(photos, read, encode, payload, rs, device):
    """cluster._run_pipeline without Ray: the same reader and model actor (rebuilt from the payload
    the workers get, one torch thread), batches of ``rs.photos_per_batch`` photos, in this process."""
    model = cluster._Predictor(payload, device, 1, encode)
    rows = [cluster._Reader(read)({"photo": i}) for i in photos]
    for s in range(0, len(rows), rs.photos_per_batch):
        batch = {k: np.empty(len(rows[s:s + rs.photos_per_batch]), dtype=object) for k in ("photo", "image", "error")}
        for j, row in enumerate(rows[s:s + rs.photos_per_batch]):
            for k in batch:
                batch[k][j] = row[k]
        out = model(batch)
        yield from zip(out["photo"], out["result"])


@pytest.fixture
def no_ray(monkeypatch):
    """The workflows run their pipeline in this process; ``ray.get`` of the payload is itself."""
    monkeypatch.setattr(cluster, "require_ray", lambda: type("FakeRay", (), {"get": staticmethod(lambda x: x)}))
    monkeypatch.setattr(cluster, "_run_pipeline", _in_process)


@pytest.fixture(scope="module")
def negative_model(tiny_model):
    """``tiny_model`` with a negative-click channel that acts as a negated extreme-point heatmap
    (a fresh channel is zero: negatives would change nothing)."""
    model = copy.deepcopy(tiny_model).add_negative_channel()
    with torch.no_grad():
        conv = input_conv(model.net)[1].weight
        conv[:, -1].copy_(-conv[:, 3])
    return model


def _clicked_objects(tmp_path, synthetic_sample, n_photos=3):
    """A points file of ``n_photos`` copies of the synthetic photo: the disk with a positive and
    two negative corrections, and a shifted copy without."""
    image, _, pts = synthetic_sample
    entries = []
    for k in range(n_photos):
        PIL.Image.fromarray(np.roll(image, k, axis=1)).save(tmp_path / f"photo{k}.png")
        entries.append(ImageEntry(str(tmp_path / f"photo{k}.png"), [
            ObjectEntry(pts, label=1, positive=POSITIVE_YX, negative=NEGATIVE_YX), ObjectEntry(pts + 2, label=2)],
            64, 80))
    return ObjectsFile(entries)


def test_negatives_change_the_mask(negative_model, synthetic_sample):
    image, _, pts = synthetic_sample
    plain, negated = negative_model.predict_image(image, [pts, pts], negative=[[], NEGATIVE_YX])
    assert not np.array_equal(plain, negated)  # else the tests below could not see negatives dropped


def test_ray_coco_with_clicks_is_the_file_of_one_process(tmp_path, synthetic_sample, negative_model, no_ray):
    objects = _clicked_objects(tmp_path, synthetic_sample)
    predict.predict_points_file(negative_model, objects, tmp_path / "in.json", images_dir=tmp_path).save()
    source = CocoFile.load(tmp_path / "in.json")
    assert len([a for a in source.annotations if a.get("negative_points")]) == 3
    with torch_threads(1):
        predict.predict_coco(negative_model, source, tmp_path / "one.json", images_dir=tmp_path).save()
    r = cluster.predict_coco_ray(negative_model, source, tmp_path / "ray.json",
                                 RaySettings(shard_photos=2, photos_per_batch=2), images_dir=tmp_path)
    assert (r.shards_run, r.objects, r.errors) == (2, 6, [])
    assert (tmp_path / "ray.json").read_text() == (tmp_path / "one.json").read_text()
    # and the clicks were used, not only copied: without them the masks differ
    bare = CocoFile.load(tmp_path / "in.json")
    for ann in bare.annotations:
        ann.pop("positive_points", None), ann.pop("negative_points", None)
    cluster.predict_coco_ray(negative_model, bare, tmp_path / "bare.json", RaySettings(), images_dir=tmp_path)
    segs = [[a["segmentation"] for a in json.loads((tmp_path / f).read_text())["annotations"]]
            for f in ("ray.json", "bare.json")]
    assert segs[0][1::2] == segs[1][1::2] and segs[0][0] != segs[1][0]


def test_ray_masks_with_clicks_are_the_files_of_one_process(tmp_path, synthetic_sample, negative_model, no_ray):
    objects = _clicked_objects(tmp_path, synthetic_sample)
    with torch_threads(1):
        one = predict.predict_objects(negative_model, objects, tmp_path / "one", prob=True).written
    r = cluster.predict_objects_ray(negative_model, objects, tmp_path / "ray", RaySettings(shard_photos=2), prob=True)
    assert (r.shards_run, r.objects, r.errors) == (2, 6, [])
    assert all((tmp_path / "ray" / p.name).read_bytes() == p.read_bytes() for p in one)
    without = predict.predict_objects(negative_model, ObjectsFile([ImageEntry(e.image, [
        ObjectEntry(o.points, label=o.label) for o in e.objects], 64, 80) for e in objects.images]),
        tmp_path / "bare", prob=True).written
    assert without[0].read_bytes() != one[0].read_bytes()


def test_the_shard_key_follows_the_clicks(tmp_path, synthetic_sample, negative_model, no_ray, monkeypatch):
    """A changed correction click makes its shard be predicted again; the other shards are kept."""
    objects = _clicked_objects(tmp_path, synthetic_sample)
    monkeypatch.setattr(cluster.ShardStore, "remove", lambda self: None)  # keep the parts, as an interrupted run
    rs = RaySettings(shard_photos=1)
    cluster.predict_objects_ray(negative_model, objects, tmp_path / "ray", rs)
    objects.images[2].objects[0].positive = POSITIVE_YX + 1
    r = cluster.predict_objects_ray(negative_model, objects, tmp_path / "ray", rs, force=True)
    assert (r.shards_kept, r.shards_run) == (2, 1)


def test_negatives_on_a_model_without_the_channel_are_refused_before_any_write(
        tmp_path, synthetic_sample, tiny_model, negative_model, no_ray):
    objects = _clicked_objects(tmp_path, synthetic_sample, n_photos=1)
    predict.predict_points_file(negative_model, objects, tmp_path / "in.json", images_dir=tmp_path).save()
    with pytest.raises(CorrectionError, match="negative"):
        cluster.predict_objects_ray(tiny_model, objects, tmp_path / "masks", RaySettings())
    with pytest.raises(CorrectionError, match="negative"):
        cluster.predict_coco_ray(tiny_model, CocoFile.load(tmp_path / "in.json"), tmp_path / "out.json",
                                 RaySettings(), images_dir=tmp_path)
    assert not (tmp_path / "masks").exists() and not list(tmp_path.glob("out.json*"))


# -- on a local Ray (slow) ---------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]

# Run in a child process that the test kills: it stops (sleeps) inside the progress callback once
# STOP_AT shards are on disk, so the kill lands after exactly that many, whatever the load.
_SCRIPT = textwrap.dedent("""
    import sys, time, ray
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from tests.helpers.models import new_tiny_model
    from dextr_lib.formats.coco import CocoFile
    from dextr_lib.workflows.cluster import RaySettings, predict_coco_ray
    parts = Path({out!r} + ".parts")

    def progress(done, total):
        if len(list(parts.glob("shard-*.json"))) >= {stop_at}:
            print("STOPPED", flush=True)
            time.sleep(600)

    ray.init(num_cpus=2, include_dashboard=False)
    predict_coco_ray(new_tiny_model(), CocoFile.load({src!r}), {out!r}, RaySettings(shard_photos=1, threads=1),
                     images_dir={images!r}, on_progress=progress)
""")


def _photos(shared_data, n=4):
    images = shared_data / "coco128seg" / "images"
    stems = sorted(p.stem for p in images.glob("*.jpg"))[:n]
    masks = [m for s in stems for m in sorted((shared_data / "coco128seg" / "masks").glob(f"{s}_mask*.png"))]
    return images, masks


@pytest.fixture
def coco_in(shared_data, tmp_path):
    """A COCO file of 4 coco128seg photos' objects (area >= 256), with their extreme points."""
    from dextr_lib.workflows.points import instances_from_masks

    images, masks = _photos(shared_data)
    cf = instances_from_masks(masks, images / "x.json", kind="mask", image_dir=images, min_area=256)
    cf.save(tmp_path / "in.json")
    return tmp_path / "in.json", images


@pytest.fixture
def objects_in(shared_data):
    """The same objects as a points file (each object's source: its ground-truth mask file)."""
    from dextr_lib.formats.objects import ObjectsFile
    from dextr_lib.workflows.points import points_from_masks

    images, masks = _photos(shared_data)
    return ObjectsFile(points_from_masks(masks, kind="mask", image_dir=images, min_area=256))


def _ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    return ray


def test_an_output_never_replaces_an_input(objects_in, tmp_path, tiny_model):
    """The one rule (fileio.check_outputs) before any Ray work: a mask over a label file the points
    file names, or over a file the caller read, is refused even with force."""
    pytest.importorskip("ray")
    from dextr_lib.workflows.predict import mask_paths

    out_dir = tmp_path / "masks"
    first = mask_paths(objects_in, out_dir)[1][0]
    out_dir.mkdir()
    first.write_bytes(b"model")
    with pytest.raises(OutputError, match="--out-dir"):
        cluster.predict_objects_ray(tiny_model, objects_in, out_dir, cluster.RaySettings(), force=True,
                                    inputs=[first])
    objects_in.images[0].objects[0].source = str(first)
    with pytest.raises(OutputError, match="--out-dir"):
        cluster.predict_objects_ray(tiny_model, objects_in, out_dir, cluster.RaySettings(), force=True)
    assert first.read_bytes() == b"model" and not (out_dir / ".parts").exists()


@pytest.mark.slow
def test_ray_gives_the_file_of_one_process(coco_in, tmp_path, tiny_model):
    from dextr_lib.formats.coco import CocoFile
    from dextr_lib.inference.device import torch_threads
    from dextr_lib.workflows.predict import predict_coco

    src, images = coco_in
    with torch_threads(1):  # the actors' thread count: CPU convolutions sum in a thread-dependent order
        predict_coco(tiny_model, CocoFile.load(src), tmp_path / "one.json", images_dir=images).save()
    ray = _ray_session()
    try:
        r = cluster.predict_coco_ray(tiny_model, CocoFile.load(src), tmp_path / "ray.json",
                                     cluster.RaySettings(workers=2, threads=1, shard_photos=1), images_dir=images)
    finally:
        ray.shutdown()
    assert r.shards_run == 4 and not r.errors
    assert (tmp_path / "ray.json").read_text() == (tmp_path / "one.json").read_text()
    assert not (tmp_path / "ray.json.parts").exists()


@pytest.mark.slow
def test_a_killed_run_resumes_with_only_the_missing_shards(coco_in, tmp_path, tiny_model, monkeypatch):
    from dextr_lib.formats.coco import CocoFile
    from dextr_lib.inference.device import torch_threads
    from dextr_lib.workflows.predict import predict_coco

    ray = pytest.importorskip("ray")
    src, images = coco_in
    with torch_threads(1):
        predict_coco(tiny_model, CocoFile.load(src), tmp_path / "one.json", images_dir=images).save()
    out, stop_at = tmp_path / "resumed.json", 2
    script = _SCRIPT.format(repo=str(REPO), src=str(src), out=str(out), images=str(images), stop_at=stop_at)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()  # blocks until the child stops in its callback, or ends
        assert line.strip() == "STOPPED", f"the run ended before it was killed:\n{line}{proc.communicate()[0]}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    parts = Path(f"{out}.parts")
    kept = {p.name: p.read_bytes() for p in parts.glob("shard-*.json")}
    assert len(kept) == stop_at and (parts / "manifest.json").exists() and not out.exists()

    # resumed: the pipeline gets only the missing shards' photos, and writes only those shards
    sent, written = [], []
    run_pipeline, write = cluster._run_pipeline, cluster.ShardStore.write
    monkeypatch.setattr(cluster, "_run_pipeline", lambda photos, *a: (sent.extend(photos), run_pipeline(photos, *a))[1])
    monkeypatch.setattr(cluster.ShardStore, "write", lambda self, k, p: (written.append(self.path(k).name), write(self, k, p))[1])
    monkeypatch.setattr(cluster.ShardStore, "remove", lambda self: None)  # to compare the kept shards
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        r = cluster.predict_coco_ray(tiny_model, CocoFile.load(src), out,
                                     cluster.RaySettings(shard_photos=1, threads=1), images_dir=images)
    finally:
        ray.shutdown()
    missing = sorted(f"shard-{k:06d}.json" for k in range(4) if f"shard-{k:06d}.json" not in kept)
    assert (r.shards_kept, r.shards_run) == (stop_at, 4 - stop_at)
    assert sorted(written) == missing and sorted(sent) == [int(n[6:12]) for n in missing]
    assert all((parts / n).read_bytes() == b for n, b in kept.items())  # the kept shards untouched
    assert out.read_text() == (tmp_path / "one.json").read_text()
    assert json.loads(out.read_text())["annotations"]


@pytest.mark.slow
def test_ray_writes_the_masks_of_one_process(objects_in, tmp_path, tiny_model):
    from dextr_lib.inference.device import torch_threads
    from dextr_lib.workflows.predict import predict_objects

    with torch_threads(1):
        one = predict_objects(tiny_model, objects_in, tmp_path / "one").written
    ray = _ray_session()
    try:
        r = cluster.predict_objects_ray(tiny_model, objects_in, tmp_path / "ray",
                                        cluster.RaySettings(workers=2, threads=1, shard_photos=2))
        with pytest.raises(OutputError, match="exists"):  # a finished run's masks are not replaced
            cluster.predict_objects_ray(tiny_model, objects_in, tmp_path / "ray", cluster.RaySettings())
    finally:
        ray.shutdown()
    assert r.objects == len(one) and not r.errors
    index = json.loads((tmp_path / "ray" / "index.json").read_text())
    listed = [Path(m) for photo in index["photos"] for m in photo["masks"]]
    assert [p.name for p in listed] == [p.name for p in one]
    assert all(p.read_bytes() == (tmp_path / "one" / p.name).read_bytes() for p in listed)
    assert not (tmp_path / "ray" / ".parts").exists()
