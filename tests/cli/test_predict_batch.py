"""``dextr predict --points-file``: output names are safe and unique, stay inside --out-dir,
the count printed is the count written, and masks are written batch by batch."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

import dextr_lib.model
from dextr_cli.app import app
from dextr_lib.formats.masks import MAX_PART, safe_name
from dextr_lib.formats.objects import ImageEntry, ObjectEntry, write_objects

runner = CliRunner()


def _photo(path: Path, image: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(image).save(path)
    return str(path)


def _run(model_file, objects_json, out_dir, *extra):
    return runner.invoke(app, ["predict", "-m", str(model_file), "--points-file", str(objects_json),
                               "--out-dir", str(out_dir), "--device", "cpu", *extra])


def _all_files(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_same_photo_stem_in_three_folders_gives_three_files(tmp_path, model_file, synthetic_sample):
    image, _, pts = synthetic_sample
    entries = [ImageEntry(_photo(tmp_path / d / "photo.png", image), [ObjectEntry(pts, label=1)], 64, 80)
               for d in ("a", "b", "c")]
    write_objects(entries, tmp_path / "o.json")
    r = _run(model_file, tmp_path / "o.json", tmp_path / "out")
    assert r.exit_code == 0, r.output
    files = _all_files(tmp_path / "out")
    assert files == ["photo_label1-2.png", "photo_label1-3.png", "photo_label1.png"]
    assert "Wrote 3 masks" in r.stdout


def test_object_names_that_collide_after_numbering_give_distinct_files(tmp_path, model_file, synthetic_sample):
    image, _, pts = synthetic_sample
    photo = _photo(tmp_path / "photo.png", image)
    objs = [ObjectEntry(pts + k, name=n) for k, n in enumerate(["a_2", "a", "a", "A"])]
    write_objects([ImageEntry(photo, objs, 64, 80)], tmp_path / "o.json")
    r = _run(model_file, tmp_path / "o.json", tmp_path / "out")
    assert r.exit_code == 0, r.output
    files = _all_files(tmp_path / "out")
    assert len(files) == 4 and len({f.casefold() for f in files}) == 4
    assert "photo_a_2.png" in files and "photo_a-2.png" in files and "Wrote 4 masks" in r.stdout


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", "..", "a/../../b", "x\\..\\y", ".hidden",
                                  "con", "-rf", "é\n\t"])
def test_hostile_object_names_stay_inside_out_dir(tmp_path, model_file, synthetic_sample, name):
    image, _, pts = synthetic_sample
    photo = _photo(tmp_path / "in" / "photo.png", image)
    write_objects([ImageEntry(photo, [ObjectEntry(pts, name=name)], 64, 80)], tmp_path / "in" / "o.json")
    before = _all_files(tmp_path)
    r = _run(model_file, tmp_path / "in" / "o.json", tmp_path / "out")
    assert r.exit_code == 0, r.output
    new = sorted(set(_all_files(tmp_path)) - set(before))
    assert len(new) == 1 and new[0].startswith("out/") and new[0].count("/") == 1, new
    fname = new[0][4:]
    assert ".." not in fname and not fname.startswith((".", "-")) and "\\" not in fname


def test_long_names_are_bounded(tmp_path, model_file, synthetic_sample):
    image, _, pts = synthetic_sample
    photo = _photo(tmp_path / ("p" * 200 + ".png"), image)
    write_objects([ImageEntry(photo, [ObjectEntry(pts, name="n" * 5000)], 64, 80)], tmp_path / "o.json")
    r = _run(model_file, tmp_path / "o.json", tmp_path / "out")
    assert r.exit_code == 0, r.output
    (f,) = (tmp_path / "out").iterdir()
    assert len(f.name) <= 2 * MAX_PART + len("_.png")


def test_symlink_leading_out_of_out_dir_is_refused(tmp_path, model_file, synthetic_sample):
    image, _, pts = synthetic_sample
    photo = _photo(tmp_path / "photo.png", image)
    write_objects([ImageEntry(photo, [ObjectEntry(pts, label=1)], 64, 80)], tmp_path / "o.json")
    (tmp_path / "out").mkdir()
    (tmp_path / "victim.png").write_bytes(b"precious")
    os.symlink(tmp_path / "victim.png", tmp_path / "out" / "photo_label1.png")
    r = _run(model_file, tmp_path / "o.json", tmp_path / "out")
    assert r.exit_code == 1 and "outside" in r.stderr and "Traceback" not in r.output
    assert (tmp_path / "victim.png").read_bytes() == b"precious"


def test_masks_are_written_batch_by_batch(tmp_path, model_file, synthetic_sample, monkeypatch):
    """With --batch-size 2 and 6 objects on one photo, the first mask is on disk after the first
    network forward, not after all three."""
    image, _, pts = synthetic_sample
    photo = _photo(tmp_path / "photo.png", image)
    write_objects([ImageEntry(photo, [ObjectEntry(pts, label=k) for k in range(1, 7)], 64, 80)],
                  tmp_path / "o.json")
    forwards, files_at_forward = [], []
    out = tmp_path / "out"
    real = dextr_lib.model.network_from_checkpoint

    def counting(ckpt, source="<checkpoint>"):
        net, pp = real(ckpt, source)

        def hook(module, inputs):
            forwards.append(len(inputs[0]))
            files_at_forward.append(len(list(out.glob("*.png"))) if out.is_dir() else 0)

        net.register_forward_pre_hook(hook)
        return net, pp

    monkeypatch.setattr(dextr_lib.model, "network_from_checkpoint", counting)
    r = _run(model_file, tmp_path / "o.json", out, "--batch-size", "2")
    assert r.exit_code == 0, r.output
    assert forwards == [2, 2, 2]
    assert files_at_forward == [0, 2, 4]
    assert "Wrote 6 masks" in r.stdout and len(list(out.glob("*.png"))) == 6


def test_count_printed_is_count_written_when_a_write_fails(tmp_path, model_file, synthetic_sample):
    image, _, pts = synthetic_sample
    photo = _photo(tmp_path / "photo.png", image)
    write_objects([ImageEntry(photo, [ObjectEntry(pts, label=1), ObjectEntry(pts, label=2)], 64, 80)],
                  tmp_path / "o.json")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "photo_label2.png").mkdir()  # a folder where the second mask goes
    r = _run(model_file, tmp_path / "o.json", tmp_path / "out")
    assert r.exit_code == 1 and "cannot write" in r.stderr
    assert "Wrote 2" not in r.output


def test_safe_name_rules():
    assert safe_name("a/b\\c") == "a_b_c"
    assert safe_name("../..") == "___"
    assert safe_name("x..y") == "x_y"
    assert safe_name("NUL.txt") == "_NUL.txt"
    assert safe_name("") == "_"
    assert len(safe_name("z" * 1000)) == MAX_PART
