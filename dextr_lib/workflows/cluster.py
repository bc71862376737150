"""Predicting a whole dataset on a Ray cluster (``dextr predict --ray``), resumable, with the
masks of one process.

The objects of a COCO file or a points file are split into shards of whole photos. A Ray Data
pipeline reads and decodes each photo once (CPU tasks), runs the model in a pool of actors
(one per GPU, or CPU actors with a few threads each) through the same engine, pre- and
post-processing as :mod:`dextr_lib.workflows.predict`, and encodes each object as it comes out
(COCO RLE, or a mask PNG written atomically). The driver collects a shard's photos and writes
the shard atomically; nothing holds every mask.

Resuming: shards live in a parts folder (``OUT.parts/`` beside a COCO output, ``OUT_DIR/.parts/``
for mask files) with a manifest. Each shard's key hashes the model (:func:`model_hash`), the
settings that change a mask and the shard's inputs (file names, sizes, modification times and
clicks); a shard file whose key matches is kept, so re-running the same command after a crash
or Ctrl-C predicts only the missing shards. A photo that fails to read is an error entry with
its reason (its shard is redone on the next run, in case the photo was fixed); the run goes on.
The final COCO file (or the mask folder's ``index.json``) is written atomically at the end, and
the parts folder removed.

Ray Data's fault tolerance handles a lost worker: its read tasks are retried and its model
actors restarted (Ray Data's defaults, which need no deprecated ``ray_remote_args``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import DextrError, DistributedError, MissingExtraError
from ..formats.coco import CocoFile, read_coco_image
from ..formats.masks import write_mask
from ..formats.objects import ObjectsFile, check_photos
from ..inference.device import torch_threads
from ..inference.engine import resolve_threshold
from ..model import DextrModel
from ..utils.fileio import atomic_write_text, check_outputs
from .predict import (
    _scored_masks, check_negatives, coco_annotation, coco_files, coco_jobs, coco_output, entry_clicks, mask_paths,
    objects_files, read_photo,
)

PathLike = Union[str, os.PathLike]
ProgressFn = Optional[Callable[[int, int], None]]

#: Photos per shard: a crash loses at most this many photos' work per worker.
SHARD_PHOTOS = 32
_MANIFEST_FORMAT = "dextr-shards"


def require_ray() -> Any:
    """Import ``ray`` (with Ray Data), or raise :class:`MissingExtraError` naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data comes with the [data] extra of ray)
    except ImportError:
        raise MissingExtraError("--ray needs the ray package with Ray Data; install it with: "
                                "pip install 'dextr[ray]'") from None
    return ray


def model_hash(model: DextrModel) -> str:
    """sha256 of what decides a model's masks: architecture, pre-processing and weights (or the
    ONNX graph). Equal models give equal hashes across processes and machines."""
    h = hashlib.sha256(json.dumps([model.arch, model.preprocess.to_dict()], sort_keys=True,
                                  default=str).encode())
    if model.net is None:
        h.update(model.onnx_graph())
    else:
        for name, t in model.net.state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _file_id(path: PathLike) -> List[Any]:
    """A photo's identity in a shard key: its path, size and modification time (a missing file
    is keyed as such and fails when read)."""
    try:
        st = os.stat(path)
        return [os.fspath(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [os.fspath(path), None, None]


def shard_key(settings_key: str, photos: Sequence[Any]) -> str:
    """The key of one shard: ``settings_key`` (model hash and mask settings) and the shard's
    inputs, each a JSON-able description of a photo and its clicks."""
    return hashlib.sha256(json.dumps([settings_key, list(photos)], sort_keys=True,
                                     default=str).encode()).hexdigest()


def plan_shards(n_photos: int, shard_photos: int = SHARD_PHOTOS) -> List[range]:
    """Photo indices ``0..n_photos-1`` in consecutive shards of ``shard_photos``."""
    if shard_photos < 1:
        raise ValueError(f"shard_photos must be >= 1, got {shard_photos}")
    return [range(s, min(s + shard_photos, n_photos)) for s in range(0, n_photos, shard_photos)]


class ShardStore:
    """The parts folder of one run: a manifest and one JSON file per finished shard.

    Args:
        folder: the parts folder (created).
        keys: each shard's key, in shard order.
        run: plain data stored in the manifest (what was run, for people reading it).
    """

    def __init__(self, folder: PathLike, keys: Sequence[str], run: Dict[str, Any]):
        self.folder = Path(folder)
        self.keys = list(keys)
        self._run = run

    def path(self, index: int) -> Path:
        return self.folder / f"shard-{index:06d}.json"

    def resumable(self) -> bool:
        """True when the folder holds a manifest of these very shards (a run being resumed)."""
        try:
            m = json.loads((self.folder / "manifest.json").read_text())
        except (OSError, ValueError):
            return False
        return m.get("format") == _MANIFEST_FORMAT and m.get("shards") == self.keys

    def start(self) -> None:
        """Write the manifest; shard files of other keys (an earlier, different run) stay and
        are ignored, then replaced."""
        atomic_write_text(self.folder / "manifest.json", json.dumps(
            {"format": _MANIFEST_FORMAT, "format_version": 1, "run": self._run, "shards": self.keys},
            indent=1))

    def read(self, index: int) -> Optional[List[Dict[str, Any]]]:
        """The finished shard's per-photo results, or None when it is missing, from another run
        (its key differs), unreadable, or holds a photo that failed (to be tried again)."""
        try:
            data = json.loads(self.path(index).read_text())
        except (OSError, ValueError):
            return None
        if data.get("key") != self.keys[index] or any("error" in r for r in data["photos"]):
            return None
        return data["photos"]

    def write(self, index: int, photos: List[Dict[str, Any]]) -> None:
        """Write one shard atomically: ``photos``, one result per photo in order."""
        atomic_write_text(self.path(index), json.dumps({"key": self.keys[index], "photos": photos}))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class ClusterResult:
    """What a Ray run did: photos' ``errors`` (``{"image": ..., "reason": ...}``), ``shards_run``
    (predicted now) and ``shards_kept`` (finished by an earlier, interrupted run)."""

    objects: int = 0
    errors: List[Dict[str, str]] = field(default_factory=list)
    shards_run: int = 0
    shards_kept: int = 0


# -- the Ray side: reading, the model actor -----------------------------------------------------

def _model_payload(model: DextrModel) -> Dict[str, Any]:
    """What a worker rebuilds the model from: its checkpoint dict, or its ONNX graph."""
    if model.net is not None:
        return {"checkpoint": model.checkpoint_dict(), "runtime": model.runtime}
    return {"onnx": model.onnx_graph(), "preprocess": model.preprocess, "arch": model.arch,
            "meta": model.meta, "runtime": model.runtime}


def _model_from_payload(payload: Dict[str, Any], device: str) -> DextrModel:
    if "checkpoint" in payload:
        model = DextrModel.from_checkpoint(payload["checkpoint"], map_location=device)
    else:
        model = DextrModel(None, payload["preprocess"], payload["arch"], payload["meta"], onnx=payload["onnx"])
    model.runtime = payload["runtime"]
    return model


class _Reader:
    """A Ray task's body: one photo decoded (``image``), or ``error`` with the reason."""

    def __init__(self, read: Callable[[int], np.ndarray]):
        self._read = read

    def __call__(self, row: Dict[str, Any]) -> Dict[str, Any]:
        try:
            return {"photo": row["photo"], "image": self._read(int(row["photo"])), "error": ""}
        except (DextrError, OSError, ValueError) as e:
            return {"photo": row["photo"], "image": np.zeros((0, 0, 3), np.uint8), "error": str(e)}


class _Predictor:
    """A Ray actor holding the model: a batch of decoded photos in, each photo's encoded result
    (a JSON string) out, through ``encode(model, photos)``."""

    def __init__(self, payload, device: str, threads: int, encode):
        self._model = _model_from_payload(require_ray().get(payload), device)  # one copy per node
        self._threads = threads
        self._encode = encode

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        ok = [(int(i), img) for i, img, err in zip(batch["photo"], batch["image"], batch["error"]) if not err]
        with torch_threads(self._threads):
            encoded = dict(zip((i for i, _ in ok), self._encode(self._model, ok)))
        out = [json.dumps({"error": str(err)}) if err else encoded[int(i)]
               for i, err in zip(batch["photo"], batch["error"])]
        return {"photo": batch["photo"], "result": np.array(out, dtype=object)}


@dataclass
class RaySettings:
    """How the pipeline runs on Ray.

    Attributes:
        address: ``local`` (start Ray on this machine), ``auto`` (the cluster this machine is a
            node of) or ``ray://HOST:10001`` (a Ray client connection).
        workers: model actors.
        gpus_per_worker: GPUs per actor (0: CPU actors).
        threads: torch CPU threads per actor (CPU actors reserve as many CPUs); None: the
            cluster's CPUs shared among the workers (:func:`worker_threads`). Masks are bit-exact
            to one process run with the same thread count.
        photos_per_batch: photos per actor call (objects are batched across them).
        shard_photos: photos per shard.
    """

    address: str = "local"
    workers: int = 1
    gpus_per_worker: float = 0.0
    threads: Optional[int] = None
    photos_per_batch: int = 4
    shard_photos: int = SHARD_PHOTOS


def _connect(ray, address: str) -> None:
    if ray.is_initialized():
        return  # a caller's ray.init (tests, notebooks) is used as it is
    try:
        ray.init(address=None if address == "local" else address, logging_level=logging.WARNING,
                 include_dashboard=False, configure_logging=True)
    except (ValueError, ConnectionError, RuntimeError) as e:
        raise DistributedError(f"cannot start or reach Ray at --ray {address!r}: {e} (expected local, "
                               "auto or ray://HOST:10001)") from None


def worker_threads(cpus_per_node: Sequence[float], workers: int) -> int:
    """Torch threads per CPU actor when none are given: the cluster's CPUs shared among
    ``workers`` actors, at least 1 and at most one node's CPUs (an actor runs on one node, and
    reserves as many CPUs as threads, so a larger count would never be scheduled)."""
    cpus = [int(c) for c in cpus_per_node if c >= 1] or [1]
    return max(1, min(sum(cpus) // max(1, workers), max(cpus)))


def _run_pipeline(
    photos: List[int], read: Callable[[int], np.ndarray], encode, payload: Dict[str, Any],
    rs: RaySettings, device: str,
) -> Iterator[Tuple[int, str]]:
    """``(photo index, encoded result)`` for every photo of ``photos``, in completion order."""
    ray = require_ray()
    _connect(ray, rs.address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI shows one bar, fed from here
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = False
    gpu = rs.gpus_per_worker > 0
    threads = rs.threads or (1 if gpu else worker_threads(
        [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")], rs.workers))
    ds = ray.data.from_items([{"photo": i} for i in photos], override_num_blocks=max(1, len(photos) // 8))
    # decoding is light beside the network: read tasks reserve no CPU so they never wait behind
    # CPU actors holding every core; their number is capped instead
    ds = ds.map(_Reader(read), num_cpus=0, compute=ray.data.TaskPoolStrategy(size=max(2, rs.workers)))
    ds = ds.map_batches(
        _Predictor, fn_constructor_kwargs={"payload": ray.put(payload), "device": device,
                                           "threads": threads, "encode": encode},
        batch_size=rs.photos_per_batch, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=rs.workers),
        num_gpus=rs.gpus_per_worker if gpu else 0, num_cpus=1 if gpu else threads)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i, r in zip(batch["photo"], batch["result"]):
            yield int(i), str(r)


def _drive(
    inputs: List[Any], read, encode, model: DextrModel, settings: Dict[str, Any], parts: Path,
    rs: RaySettings, device: str, n_objects: Sequence[int], on_progress: ProgressFn,
    check: Callable[[bool], None],
) -> Tuple[ShardStore, List[range], ClusterResult]:
    """Run the shards that are not finished; the store then holds every shard (``shards``: the
    photo indices of each). ``inputs`` describes each photo for the shard keys.
    ``check(resuming)`` checks the outputs before any work (``resuming``: the parts folder holds
    these shards, so outputs an interrupted run wrote may be replaced)."""
    shards = plan_shards(len(inputs), rs.shard_photos)
    settings_key = json.dumps([model_hash(model), settings], sort_keys=True, default=str)
    store = ShardStore(parts, [shard_key(settings_key, [inputs[i] for i in s]) for s in shards], settings)
    check(store.resumable())
    store.start()
    result = ClusterResult()
    total = sum(n_objects)
    done = 0
    todo: Dict[int, int] = {}  # photo -> shard
    for k, s in enumerate(shards):
        if store.read(k) is None:
            todo.update({i: k for i in s})
        else:
            result.shards_kept += 1
            done += sum(n_objects[i] for i in s)
    if on_progress is not None:
        on_progress(done, total)
    waiting: Dict[int, Dict[int, Dict[str, Any]]] = {}  # shard -> photo -> result, until complete
    if todo:
        for i, encoded in _run_pipeline(sorted(todo), read, encode, _model_payload(model), rs, device):
            k = todo[i]
            got = waiting.setdefault(k, {})
            got[i] = json.loads(encoded)
            done += n_objects[i]
            if len(got) == len(shards[k]):
                store.write(k, [got[j] for j in shards[k]])
                del waiting[k]
                result.shards_run += 1
            if on_progress is not None:
                on_progress(done, total)
    return store, shards, result


def _photo_results(store: ShardStore, shards: List[range]) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """``(photo index, its result as written)`` for every photo, shard by shard (errors
    included), for the assembly."""
    for k, photos in enumerate(shards):
        yield from zip(photos, json.loads(store.path(k).read_text())["photos"])


# -- the two workflows -------------------------------------------------------------------------

def _encode_coco(thr: float, polygons: bool, jobs, kw: Dict[str, Any]):
    def encode(model: DextrModel, photos: List[Tuple[int, np.ndarray]]) -> Iterator[str]:
        items = ((rgb, [((i, k), *clicks) for k, (_, *clicks) in enumerate(jobs[i][1])]) for i, rgb in photos)
        anns: Dict[int, list] = {i: [] for i, _ in photos}
        for (i, k), pts, pos, neg, mask, score in _scored_masks(model, items, thr, **kw):
            img, todo = jobs[i]
            anns[i].append(coco_annotation(img, todo[k][0], pts, mask, score, polygons, positive=pos, negative=neg))
        return (json.dumps({"annotations": anns[i]}) for i, _ in photos)
    return encode


def predict_coco_ray(
    model: DextrModel,
    source: CocoFile,
    out_path: PathLike,
    ray_settings: RaySettings,
    *,
    images_dir: Optional[PathLike] = None,
    points_from: str = "annotations",
    polygons: bool = False,
    threshold: Optional[float] = None,
    batch_size: Optional[int] = None,
    precision: str = "fp32",
    runtime: Optional[str] = None,
    device: str = "cpu",
    force: bool = False,
    inputs: Iterable[PathLike] = (),
    on_progress: ProgressFn = None,
    on_warning: Optional[Callable[[str], None]] = None,
) -> ClusterResult:
    """:func:`~dextr_lib.workflows.predict.predict_coco` on Ray: the same file, written to
    ``out_path`` (atomically, at the end), resumable (see the module docstring).

    Args:
        model: the model (its weights travel to the workers).
        source, images_dir, points_from, polygons, threshold, batch_size, precision: as for
            :func:`~dextr_lib.workflows.predict.predict_coco`.
        out_path: the COCO file to write; its shards go to ``OUT.parts/``.
        ray_settings: where and how the pipeline runs.
        runtime: the runner (default: the model's); device: the workers' device.
        force: replace an existing ``out_path``.
        inputs: the other files the caller read (the model, the config), never replaced.

    Returns:
        A :class:`ClusterResult`; photos that failed to read are in ``errors`` (their
        annotations are left out of the file).

    Raises:
        MissingExtraError: Ray is not installed. DatasetError: as for ``predict_coco``.
        CorrectionError: negative clicks for a model that takes none (before any work).
        OutputError: ``out_path`` exists (without ``force``) or is an input (the COCO file, a
            photo it names, ``inputs``).
    """
    require_ray()
    out_path = Path(out_path)
    check_outputs([(out_path, "--out", "COCO file")],
                  inputs=[source.path, *coco_files(source, images_dir), *inputs], force=force)
    thr = resolve_threshold(threshold, model.preprocess)
    root, jobs = coco_jobs(source, images_dir=images_dir, points_from=points_from, on_warning=on_warning)
    check_negatives(model, (neg for _, todo in jobs for *_, neg in todo))
    files = [root / str(img["file_name"]) for img, _ in jobs]
    described = [[_file_id(f), img["height"], img["width"], img["id"],
               [[a["id"], *(np.asarray(c).tolist() for c in clicks)] for a, *clicks in todo]]
              for f, (img, todo) in zip(files, jobs)]
    kw = dict(batch_size=batch_size, precision=precision, runtime=runtime)
    settings = {"task": "coco", "threshold": thr, "polygons": polygons, **kw}

    def read(i: int) -> np.ndarray:
        return read_coco_image(files[i], jobs[i][0]["height"], jobs[i][0]["width"])

    store, shards, result = _drive(described, read, _encode_coco(thr, polygons, jobs, kw), model, settings,
                                   out_path.parent / f"{out_path.name}.parts", ray_settings, device,
                                   [len(t) for _, t in jobs], on_progress, lambda resuming: None)
    out = coco_output(source, out_path)
    for i, photo in _photo_results(store, shards):
        if "error" in photo:
            result.errors.append({"image": str(files[i]), "reason": photo["error"]})
        for ann in photo.get("annotations", ()):
            out.add_annotation(ann)
            result.objects += 1
    out.save(out_path)
    if not result.errors:  # else the shards stay, so the next run redoes only the failed photos
        store.remove()
    return result


def _encode_masks(thr: Optional[float], prob: bool, entries, paths: List[List[str]], kw: Dict[str, Any]):
    def encode(model: DextrModel, photos: List[Tuple[int, np.ndarray]]) -> Iterator[str]:
        items = ((rgb, *entry_clicks(entries[i])) for i, rgb in photos)
        owners = [(i, p) for i, _ in photos for p in paths[i]]
        for (_, path), mask in zip(owners, model.predict_iter(items, threshold=None if prob else thr, **kw)):
            write_mask(mask, path, prob)
        return (json.dumps({"masks": paths[i]}) for i, _ in photos)
    return encode


def predict_objects_ray(
    model: DextrModel,
    objects: ObjectsFile,
    out_dir: PathLike,
    ray_settings: RaySettings,
    *,
    prob: bool = False,
    threshold: Optional[float] = None,
    batch_size: Optional[int] = None,
    precision: str = "fp32",
    runtime: Optional[str] = None,
    device: str = "cpu",
    force: bool = False,
    inputs: Iterable[PathLike] = (),
    on_progress: ProgressFn = None,
) -> ClusterResult:
    """:func:`~dextr_lib.workflows.predict.predict_objects` on Ray: the same mask files, then
    ``OUT_DIR/index.json`` (each photo's mask files, and the photos that failed), resumable
    (see the module docstring). The workers write the masks, so ``out_dir`` must be on a
    filesystem they share.

    Args:
        ray_settings: where and how the pipeline runs; the rest as for ``predict_objects``
            (``runtime``: the runner, default the model's; ``device``: the workers' device;
            ``inputs``: the other files the caller read, the points file, model and config).

    Raises:
        MissingExtraError: Ray is not installed. DatasetError: an entry without a photo.
        CorrectionError: negative clicks for a model that takes none (before any work).
        OutputError: an existing mask or ``index.json`` (without ``force``, unless an interrupted
            run of the same shards wrote it), or one that would replace an input (a photo or
            label file the points file names, ``inputs``), checked before any work by
            :func:`~dextr_lib.utils.fileio.check_outputs` as for ``predict_objects``.
    """
    require_ray()
    check_photos(objects)
    check_negatives(model, (o.negative for e in objects.images for o in e.objects))
    thr = resolve_threshold(threshold, model.preprocess)
    out_dir = Path(out_dir)
    entries, flat = mask_paths(objects, out_dir)
    starts = np.cumsum([0] + [len(e.objects) for e in entries])
    paths = [[os.fspath(p) for p in flat[a:b]] for a, b in zip(starts[:-1], starts[1:])]
    index = out_dir / "index.json"

    outputs = [*((p, "--out-dir", "mask") for p in flat), (index, "--out-dir", "mask index")]
    read_files = [*objects_files(objects), *inputs]

    def check(resuming: bool) -> None:  # an input is never replaced, even when resuming
        check_outputs(outputs, inputs=read_files, force=force or resuming)

    described = [[_file_id(e.image), objects.exif_transpose, e.height, e.width, p,
               [[None if c is None else np.asarray(c).tolist() for c in (o.points, o.positive, o.negative)]
                for o in e.objects]] for e, p in zip(entries, paths)]
    kw = dict(batch_size=batch_size, precision=precision, runtime=runtime)
    settings = {"task": "masks", "threshold": thr, "prob": prob, **kw}

    def read(i: int) -> np.ndarray:
        return read_photo(entries[i], objects.exif_transpose)

    store, shards, result = _drive(described, read, _encode_masks(thr, prob, entries, paths, kw), model,
                                   settings, out_dir / ".parts", ray_settings, device,
                                   [len(e.objects) for e in entries], on_progress, check)
    listing = []
    for i, photo in _photo_results(store, shards):
        if "error" in photo:
            result.errors.append({"image": str(entries[i].image), "reason": photo["error"]})
        else:
            listing.append({"image": str(entries[i].image), "masks": photo["masks"]})
            result.objects += len(photo["masks"])
    atomic_write_text(index, json.dumps({"format": "dextr-masks", "format_version": 1,
                                         "photos": listing, "errors": result.errors}, indent=1))
    if not result.errors:
        store.remove()
    return result
