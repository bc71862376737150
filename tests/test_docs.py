"""Doc-test: every command README.md and the docs/*.md pages show and every example in a
command's ``--help`` runs, so the examples cannot rot (`make test` runs this file;
tests/helpers/doc_commands.py lists them). The README stays a front door: under 200 lines, linking
every page of docs/, with no link to a file that is not there.

How a shown command runs: bash expands it exactly as a user's shell would (quotes, globs with
``failglob`` so a glob matching nothing fails, ``\\`` continuations), in a fresh folder of small
fixtures made here (a tiny model, tiny label/mask datasets with the documented file names, a tiny
PASCAL VOC layout, legacy model files); ``dextr ...`` then runs in-process and must exit 0. The
commands of one source (a page, or one command's help) run in order in one folder, as a user
following them would.

What differs from a user's run, and why:

* training commands get fast settings appended (the last value of an option wins): one epoch of
  two iterations of batch 2 at 64 px, ImageNet weights off (they are a download), and a shown
  ``--arch`` (checked to exist) is trained as a resunet18; a ``--resume`` runs one more epoch;
* model-zoo names resolve to a small stand-in checkpoint served from 127.0.0.1 (the published
  files are hundreds of MB and need the internet); a ``--url`` on example.org must fail with the
  one-line download error (the example's host does not exist);
* ``dextr serve`` builds its server and answers one request instead of serving until Ctrl-C;
* the pages' Python blocks run too, with the names they leave to the reader (``other_points``,
  ``img_a``...) defined first, and ``TrainSettings`` giving the same fast training settings;
* ``make demo`` / ``make test`` (they install a virtualenv; the demo's script is covered by the
  README's ``examples/demo.py`` line and tests/test_demo.py) and the multi-process ``torchrun`` /
  ``--nproc`` lines are not run here: ``NOT_RUN`` lists each with where it is covered.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import subprocess
import time
from pathlib import Path
from typing import List
from unittest import mock

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

import dextr_lib
from dextr_cli.app import app
from dextr_lib.formats.coco import CocoFile, annotation_from_mask
from dextr_lib.weights import zoo
from tests.helpers.doc_commands import (README, REPO, doc_pages, help_examples, page_commands, page_name,
                                        page_python_blocks, relative_links)
from tests.helpers.http_server import serve
from tests.helpers.legacy_files import write_dextr012_resunet18

#: Shown commands not run here (regex on the line, why). Each must say where it is covered.
NOT_RUN = [
    (r"^make demo\b", "installs .venv, then runs examples/demo.py (run here from the README's line)"),
    (r"^make test\b", "installs .venv, then runs this test suite"),
    (r"^torchrun ", "needs several GPUs or machines; --nproc 2 on CPU is tests/cli/test_train.py's slow "
                    "test_nproc_2_starts_torchrun_and_writes_one_job"),
    (r"^OMP_NUM_THREADS=1 dextr train .*--nproc 2", "starts two training processes with torchrun: the "
                                                    "same slow test_nproc_2_starts_torchrun_and_writes_one_job"),
    (r"^dextr predict .*--ray ", "starts or joins a Ray cluster: tests/lib/test_cluster.py's slow "
                                  "test_ray_gives_the_file_of_one_process_and_resumes runs the same pipeline on a local Ray"),
    (r"^pip install label-studio\b|^ML_BLOCK_LOCAL_IP=false ", "installs and starts Label Studio (about "
        "1 GB): tests/lib/test_labelstudio_live.py's slow test runs it from its own cached venv"),
    (r"^curl ", "talks to a running `dextr serve`: tests/cli/test_serve.py's "
                "test_docs_curl_examples_run_against_a_live_server runs docs/serve.md's lines against a live server"),
]


def not_run(line: str) -> bool:
    return any(re.search(pattern, line) for pattern, _ in NOT_RUN)
FAST_TRAIN = ["--target-size", "64", "--num-epochs", "1", "--iters-per-epoch", "2", "--batch-size", "2",
              "--val-every-n-epochs", "1", "--no-pretrained"]
FAST_FINETUNE = ["--num-epochs", "1", "--iters-per-epoch", "2", "--batch-size", "2", "--val-every-n-epochs", "1"]
OFFLINE_HOSTS = ("example.org",)

runner = CliRunner()


# -- fixtures: files with the names the documentation uses ---------------------------------------
def _scene(h: int, w: int, boxes, seed: int):
    """An RGB image with a bright ellipse per box ``(cy, cx, ry, rx)`` and its label image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    image = rng.integers(0, 70, size=(h, w, 3), dtype=np.uint8)
    labels = np.zeros((h, w), np.uint8)
    for i, (cy, cx, ry, rx) in enumerate(boxes, start=1):
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        image[inside] = [200 + 10 * i, 160, 60]
        labels[inside] = i
    return image, labels


def _save(path: Path, array: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path, **kw)


TWO_OBJECTS = [(20, 22, 12, 9), (34, 58, 14, 12)]


def _label_set(root: Path, images: str, labels: str, stems: List[str], ext: str = ".png") -> None:
    for k, stem in enumerate(stems):
        image, lab = _scene(56, 80, TWO_OBJECTS, seed=k)
        _save(root / images / f"{stem}{ext}", image)
        _save(root / labels / f"{stem}_mask.png", lab)


def _mask_set(root: Path, image_dirs: List[str], mask_dir: str, n: int = 2) -> None:
    for k in range(n):
        image, lab = _scene(56, 80, TWO_OBJECTS, seed=10 + k)
        for d in image_dirs:
            _save(root / d / f"img{k}.jpg", image, quality=95)
        for j in (1, 2):
            _save(root / mask_dir / f"img{k}_mask{j - 1}.png", (lab == j).astype(np.uint8) * 255)


def _coco_set(root: Path, image_dir: str, json_name: str, seed: int) -> None:
    """A COCO instances file with bare file names of photos in ``image_dir`` (person and dog)."""
    coco = CocoFile()
    for k in range(2):  # objects over the 1024 px the eval example asks for
        image, lab = _scene(120, 160, [(50, 45, 30, 25), (70, 110, 35, 30)], seed=seed + k)
        _save(root / image_dir / f"{k:012d}.jpg", image, quality=95)
        image_id = coco.add_image(f"{k:012d}.jpg", 120, 160)
        for j, name in ((1, "person"), (2, "dog")):
            coco.add_annotation(annotation_from_mask(
                lab == j, ann_id=None, image_id=image_id, category_id=coco.category_id(name)))
    coco.save(root / json_name)


def _voc(root: Path) -> None:
    ids = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003", "2007_000004"]}
    for split, names in ids.items():
        for k, name in enumerate(names):
            image, lab = _scene(56, 80, TWO_OBJECTS, seed=20 + k)
            _save(root / "JPEGImages" / f"{name}.jpg", image, quality=95)
            obj = PIL.Image.fromarray(lab, mode="L").convert("P")
            obj.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (3 * 253))
            (root / "SegmentationObject").mkdir(parents=True, exist_ok=True)
            obj.save(root / "SegmentationObject" / f"{name}.png")
            cls = PIL.Image.fromarray(np.where(lab > 0, 15, 0).astype(np.uint8), mode="L").convert("P")
            cls.putpalette([0, 0, 0] * 256)
            (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            cls.save(root / "SegmentationClass" / f"{name}.png")
        sets = root / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text("\n".join(names) + "\n")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny trained-format model (resunet18 at 64 px), shared by every fixture folder."""
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("docmodel") / "model.pt"
    dextr_lib.create_model("resunet18", target_size=64, padding=4, blob_sigma=4.0).save(path)
    return path


@pytest.fixture(scope="module")
def legacy_file(tmp_path_factory):
    """A dextr 0.1.2 pickle: what `dextr convert` documents converting."""
    path = tmp_path_factory.mktemp("doclegacy") / "legacy.pth"
    write_dextr012_resunet18(path, target_size=64)
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch, model_file, legacy_file):
    """A folder with every input the documentation names; the current folder of the commands."""
    root = tmp_path / "work"
    root.mkdir()
    for rel in ("model.pt", "path/to/model.pt", "models/my-model.pt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(model_file, root / rel)
    for rel in ("dextr_pascal-sbd.pth", "dextr_pascalvoc_resunet101-a2d81727.pth"):
        os.link(legacy_file, root / rel)
    photo, _ = _scene(480, 854, [(325, 282, 108, 180)], seed=3)  # an object where the README clicks
    _save(root / "photo.jpg", photo, quality=95)
    penn = ["FudanPed00001", "FudanPed00002", "PennPed00001", "PennPed00002", "PennPed00090", "PennPed00091"]
    _label_set(root, "data/images", "data/labels", penn)
    _label_set(root, "val/images", "val/labels", ["PennPed00095"])
    _label_set(root, "images", "labels", ["FudanPed00001", "PennPed00001"])
    _mask_set(root, ["photos", "imgs", "images", "data"], "masks")
    _mask_set(root, [], "data")
    image, lab = _scene(56, 80, TWO_OBJECTS, seed=30)
    _save(root / "JPEGImages" / "2007_000032.jpg", image, quality=95)
    _save(root / "SegmentationObject" / "2007_000032.png", lab)
    _voc(root / "voc" / "VOC2012")
    _coco_set(root, "val2017", "instances_val2017.json", seed=40)
    _coco_set(root, "train2017", "instances_train2017.json", seed=50)
    (root / "dextr.toml").write_text('[paths]\npascal_voc = "voc/VOC2012"\n')
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def zoo_standins(monkeypatch, model_file):
    """Every model-zoo name resolves to the tiny model, served on 127.0.0.1 (hash-checked)."""
    data = model_file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with serve(data) as server:
        for name in zoo.list_pretrained():
            entry = zoo.get_pretrained(name)
            monkeypatch.setitem(zoo._MODELS, name, dataclasses.replace(
                entry, urls=(server.url("range", entry.filename),), sha256=digest, hash_prefix=None,
                size=None, file_format="dextr", arch="resunet18", profile="dextr"))
        yield server


def _objects_json(root: Path) -> None:
    """objects.json for the two label images of labels/, as points-from-mask writes it."""
    run_shown("dextr points-from-mask labels/*_mask.png --out objects.json", root)


def _voc_job(root: Path) -> None:
    """jobs/voc/checkpoints/best.pt, as `dextr train voc` leaves it."""
    run_shown("dextr train voc --dataset pascal_voc --arch resunet18", root)


def _coco_instances(root: Path) -> None:
    """instances.json naming photos of photos/ by their bare file names, as COCO files do."""
    _coco_set(root, "photos", "instances.json", seed=60)


#: Inputs a source's commands use without making them first (a user would have them).
SETUP = {"predict": [_objects_json, _coco_instances], "finetune": [_voc_job]}


# -- running a shown command ----------------------------------------------------------------------
def bash_words(line: str, cwd: Path) -> List[str]:
    """The argv bash makes of ``line`` in ``cwd`` (quote removal, globs; no match is an error)."""
    r = subprocess.run(["bash", "-c", "shopt -s failglob; printf '%s\\0' " + line], cwd=cwd,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"bash cannot expand the shown command {line!r}: {r.stderr.strip()}"
    return r.stdout.split("\0")[:-1]


def _demo_main():
    spec = importlib.util.spec_from_file_location("dextr_demo_doc", REPO / "examples" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _answer_once(app, host, port, **kwargs) -> None:
    """Stands in for ``uvicorn.run``: the served app answers its page once, then returns."""
    from fastapi.testclient import TestClient

    assert host == "127.0.0.1" and port > 0
    with TestClient(app, base_url="http://localhost") as client:
        assert client.get("/").status_code == 200


def run_shown(line: str, cwd: Path) -> str:
    """Run one shown command in ``cwd``; return its output. Fails the test when it fails."""
    line = re.sub(r"\s+#.*$", "", line) if not re.search(r"['\"].*#", line) else line
    redirect = None
    m = re.match(r"^(.*?)\s+>\s*(\S+)$", line)
    if m:
        line, redirect = m.group(1), m.group(2)
    argv = bash_words(line, cwd)
    if argv[0].endswith("/python") and argv[1] == "examples/demo.py":
        assert _demo_main()(argv[2:]) == 0
        return ""
    assert argv[0] == "dextr", f"not a dextr command: {line!r}"
    args = argv[1:]
    if args[:1] == ["train"] and "--resume" not in args:
        if "--arch" in args:  # a small network stands in for the shown one, which must exist
            assert args[args.index("--arch") + 1] in dextr_lib.list_models(), line
            args += ["--arch", "resunet18"]
        args += FAST_TRAIN
    elif args[:1] == ["finetune"] and "--resume" not in args:
        args += FAST_FINETUNE
    elif args[:1] in (["train"], ["finetune"]):
        args += ["--num-epochs", "2"]  # resume: one more short epoch
    if args[:1] == ["serve"]:
        with mock.patch("uvicorn.run", _answer_once):
            r = runner.invoke(app, args)
    else:
        r = runner.invoke(app, args)
    if any(host in line for host in OFFLINE_HOSTS):
        assert r.exit_code == 1 and r.stderr.startswith("Error: download failed"), r.output
        assert len(r.stderr.strip().splitlines()) == 1
        return r.output
    assert r.exit_code == 0, f"`{line}` failed (exit {r.exit_code}):\n{r.output}\n{r.exception!r}"
    if redirect:
        (cwd / redirect).write_text(r.stdout)
    return r.output


def _run_all(lines: List[str], cwd: Path) -> None:
    for line in lines:
        if not_run(line):
            continue
        t0 = time.perf_counter()
        run_shown(line, cwd)
        print(f"{time.perf_counter() - t0:6.1f} s  {line}")  # shown with -s: where the time goes


# -- the tests ------------------------------------------------------------------------------------
PAGES = {page_name(page): page for page in doc_pages()}
README_MAX_LINES = 200


def test_the_readme_tours_the_main_commands():
    shown = {line.split()[1] for line in page_commands(README) if line.startswith("dextr ")}
    assert {"predict", "serve", "train", "eval"} <= shown
    every = [line for page in PAGES.values() for line in page_commands(page) if line.startswith("dextr ")]
    assert len(every) >= 20  # as many as the README showed before docs/ held the reference (20)


def test_no_page_shows_an_unexplained_skip():
    for name, page in PAGES.items():
        for line in page_commands(page):
            word = line.split()[0]
            assert word in ("dextr", ".venv/bin/python") or not_run(line), (
                f"{name} shows {line!r}: make the doc-test run it, or add it to NOT_RUN with a reason")


@pytest.mark.parametrize("name", [name for name, page in PAGES.items() if page_commands(page)])
def test_page_commands_run(name, workdir, zoo_standins):
    _run_all(page_commands(PAGES[name]), workdir)


def test_the_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines: move reference material to a docs/ page")
    linked = {(REPO / target).resolve() for target in relative_links(README)}
    unlinked = [name for name, page in PAGES.items() if page != README and page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("name", list(PAGES))
def test_page_links_point_at_files(name):
    page = PAGES[name]
    missing = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert not missing, f"{name} links to files that do not exist: {missing}"


#: Repository paths and dotted ``dextr_lib`` names the pages mention in backticks.
_REPO_PATH = re.compile(r"`((?:dextr_lib|dextr_cli|tests|benchmarks|examples)/[\w./-]*)")
_LIB_NAME = re.compile(r"`(dextr_lib(?:\.\w+)+)")


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("name", list(PAGES))
def test_page_names_exist_in_the_tree(name):
    """A moved module or renamed function fails here, not in a reader's hands."""
    text = PAGES[name].read_text(encoding="utf-8")
    missing = [p for p in _REPO_PATH.findall(text) if not (REPO / p).exists()]
    missing += [d for d in _LIB_NAME.findall(text) if not _resolves(d)]
    assert not missing, f"{name} names what the tree does not have: {missing}"


def test_every_command_shows_examples():
    missing = [name for name, lines in help_examples().items() if not lines]
    assert not missing, f"commands without examples in their --help: {missing}"


@pytest.mark.parametrize("command", list(help_examples()))
def test_help_examples_run(command, workdir, zoo_standins):
    for setup in SETUP.get(command, []):
        setup(workdir)
    _run_all(help_examples()[command], workdir)


def test_a_glob_matching_nothing_fails_the_doctest(tmp_path):
    with pytest.raises(AssertionError, match="cannot expand"):
        bash_words("dextr points-from-mask nothing/*_mask.png", tmp_path)
    assert bash_words("dextr eval --image-pat 'data/*.png' x\\ y", tmp_path) == [
        "dextr", "eval", "--image-pat", "data/*.png", "x y"]


#: What the pages' Python blocks leave to the reader: more objects and images (README's photo.jpg).
def _reader_names(root: Path) -> dict:
    photo = np.asarray(PIL.Image.open(root / "photo.jpg").convert("RGB"))
    pts = np.array([[325, 102], [325, 462], [217, 282], [433, 282]])  # [y, x] of its object
    return {"other_points": pts, "img_a": photo, "img_b": photo[::-1].copy(), "pa": pts,
            "pb": pts * [-1, 1] + [479, 0]}  # the same object, upside down


_REAL_TRAIN_SETTINGS = dextr_lib.TrainSettings


def _fast_settings(**kw):
    """TrainSettings with the doc-test's fast values (as FAST_TRAIN for shown commands)."""
    return _REAL_TRAIN_SETTINGS(**{**kw, "target_size": 64, "batch_size": 2, "num_epochs": 1,
                                   "iters_per_epoch": 2, "pretrained": False})


PYTHON_BLOCKS = [(name, index) for name, page in PAGES.items() for index in range(len(page_python_blocks(page)))]


def test_the_readme_starts_python_with_load_model():
    assert "dextr_lib.load_model" in page_python_blocks(README)[0]
    assert len(PYTHON_BLOCKS) >= 2
    assert any("TrainingJob" in block for page in PAGES.values() for block in page_python_blocks(page))


@pytest.mark.parametrize("name, index", PYTHON_BLOCKS)
def test_page_python_runs(name, index, workdir, capsys):
    code = page_python_blocks(PAGES[name])[index]
    with mock.patch.object(dextr_lib, "TrainSettings", _fast_settings):
        exec(compile(code, f"{name} python block {index + 1}", "exec"), _reader_names(workdir))
    if "TrainingJob" in code:  # the job trained, printed through the callbacks, and was extended
        assert capsys.readouterr().out.strip()
        assert (workdir / "jobs" / "peds" / "checkpoints" / "last.pt").is_file()
    if "model.save" in code:
        assert dextr_lib.load_model(workdir / "model.pt").preprocess.target_size == 64
