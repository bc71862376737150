"""``dextr predict --ray``: without Ray installed, one line naming the extra (fast); on a local Ray,
the file of one process (slow, a real ``dextr`` process each)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

from dextr_cli.app import app
from dextr_lib.formats.objects import ImageEntry, ObjectEntry, ObjectsFile
from dextr_lib.workflows.predict import predict_points_file

runner = CliRunner()


@pytest.fixture
def coco_in(tmp_path, synthetic_sample, tiny_model):
    """A COCO file of two photos, each with the synthetic disk (a positive correction click beside
    its extreme points) and a shifted copy of it."""
    image, _, pts = synthetic_sample
    entries = []
    for k in range(2):
        PIL.Image.fromarray(np.roll(image, k, axis=0)).save(tmp_path / f"photo{k}.png")
        entries.append(ImageEntry(str(tmp_path / f"photo{k}.png"), [
            ObjectEntry(pts, label=1, positive=np.array([[22.0, 33.0]])), ObjectEntry(pts + 2, label=2)], 64, 80))
    path = tmp_path / "in.json"
    predict_points_file(tiny_model, ObjectsFile(entries), path, images_dir=tmp_path).save()
    assert "positive_points" in path.read_text()
    return path


def test_without_ray_the_command_names_the_extra_in_one_line(tmp_path, coco_in, model_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out.json"
    r = runner.invoke(app, ["predict", "-m", str(model_file), "--coco", str(coco_in), "--out", str(out),
                            "--ray", "local", "--device", "cpu"])
    assert r.exit_code == 1, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'dextr[ray]'" in lines[0], r.stderr
    assert "Traceback" not in r.output and not out.exists() and not (tmp_path / "out.json.parts").exists()


@pytest.mark.slow
def test_ray_local_writes_the_file_of_one_process(tmp_path, coco_in, model_file):
    pytest.importorskip("ray")

    def dextr(*args):
        r = subprocess.run([sys.executable, "-m", "dextr_cli", "predict", "--threads", "1", "-m", str(model_file),
                            "--coco", str(coco_in), *map(str, args)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]

    # one torch thread in both (CPU convolutions sum in a thread-count dependent order)
    dextr("--out", tmp_path / "one.json")
    dextr("--out", tmp_path / "ray.json", "--ray", "local", "--workers", "1", "--threads-per-worker", "1")
    assert (tmp_path / "ray.json").read_text() == (tmp_path / "one.json").read_text()
    assert "positive_points" in (tmp_path / "ray.json").read_text()
    assert not (tmp_path / "ray.json.parts").exists()
