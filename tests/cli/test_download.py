"""``dextr download`` and registry names in ``--model``."""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import PIL.Image
import pytest
from helpers.http_server import serve
from helpers.legacy_files import write_dextr012_resunet18
from typer.testing import CliRunner

from dextr_cli.app import app
from dextr_lib.weights import zoo

runner = CliRunner()
PAYLOAD = os.urandom(50_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(scope="module")
def server():
    with serve(PAYLOAD) as s:
        yield s


def test_list_shows_models_and_cache_state(tmp_path):
    result = runner.invoke(app, ["download", "--list", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("pascalvoc-resunet101", "pascal-sbd", "pascal", "coco", "91.5", "psp101"):
        assert name in result.output
    assert "yes" not in result.output
    (tmp_path / "dextr_coco.pth").write_bytes(b"x" * 2000)
    result = runner.invoke(app, ["download", "--list", "--cache-dir", str(tmp_path)])
    coco_row = next(line for line in result.output.splitlines() if "coco" in line)
    assert "yes" in coco_row and "2.0 KB" in coco_row


def test_list_shows_estimated_sizes_until_cached(tmp_path):
    result = runner.invoke(app, ["download", "--list", "--cache-dir", str(tmp_path)])
    rows = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│")}
    assert "~204 MB" in rows["pascalvoc-resunet101"] and "~196 MB" in rows["pascal-sbd"]
    assert "?" not in result.output and "estimated from the architecture" in result.output


def test_download_name_from_mirror_then_cached(server, tmp_path, monkeypatch):
    entry = zoo.get_pretrained("pascalvoc-resunet101")
    fake = dataclasses.replace(entry, hash_prefix=None, sha256=SHA)  # the stand-in's hash
    monkeypatch.setitem(zoo._MODELS, entry.name, fake)
    monkeypatch.setenv("DEXTR_MIRROR", server.url("range", "")[:-1])
    result = runner.invoke(app, ["download", entry.name, "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / entry.filename).read_bytes() == PAYLOAD
    result = runner.invoke(app, ["download", entry.name, "--cache-dir", str(tmp_path)])
    assert "already cached" in result.output


def test_download_config_mirror_and_models_path(server, tmp_path, monkeypatch):
    entry = zoo.get_pretrained("coco")
    monkeypatch.setitem(zoo._MODELS, "coco", dataclasses.replace(entry, sha256=SHA))
    cfg = tmp_path / "dextr.toml"
    cfg.write_text(f'[paths]\nmodels = "cache"\n\n[models]\nmirror = "{server.base}/range/"\n')
    result = runner.invoke(app, ["download", "coco", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cache" / "dextr_coco.pth").read_bytes() == PAYLOAD


def test_download_url_checks_sha256(server, tmp_path):
    url = server.url("range", "private.pt")
    bad = runner.invoke(app, ["download", "--url", url, "--sha256", "0" * 64, "--cache-dir", str(tmp_path)])
    assert bad.exit_code == 1
    assert "Error:" in bad.output and "dextr download --force" in bad.output
    assert "Traceback" not in bad.output
    assert not (tmp_path / "private.pt").exists()
    ok = runner.invoke(app, ["download", "--url", url, "--sha256", SHA, "--name", "mine.pt",
                             "--cache-dir", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "mine.pt").read_bytes() == PAYLOAD and SHA in ok.output


def test_download_404_is_one_line(server, tmp_path):
    result = runner.invoke(app, ["download", "--url", server.base + "/missing/x.pth", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "HTTP 404" in result.output and str(tmp_path / "x.pth") in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [[], ["coco", "--list"], ["--sha256", "ab"], ["coco", "--url", "http://x/y"]])
def test_download_flag_combinations(args):
    assert runner.invoke(app, ["download", *args]).exit_code == 2


def test_unknown_name_lists_choices():
    result = runner.invoke(app, ["download", "pascal-voc"])
    assert result.exit_code == 1 and "pascalvoc-resunet101" in result.output


def test_predict_with_registry_name_uses_cached_stand_in(tmp_path, monkeypatch, synthetic_sample):
    """``--model pascalvoc-resunet101`` with a stand-in file in the cache: its hash is computed
    and put in the registry, the file is found in $DEXTR_HOME/models, nothing is downloaded."""
    entry = zoo.get_pretrained("pascalvoc-resunet101")
    cache = zoo.models_dir()
    cache.mkdir(parents=True, exist_ok=True)
    stand_in = cache / entry.filename
    write_dextr012_resunet18(stand_in, target_size=64, padding=5, blob_sigma=4.0)
    digest = hashlib.sha256(stand_in.read_bytes()).hexdigest()
    monkeypatch.setitem(zoo._MODELS, entry.name, dataclasses.replace(entry, hash_prefix=digest[:8]))
    monkeypatch.setattr("dextr_lib.weights.download.download_first", _refuse_download)
    image, mask, pts = synthetic_sample
    img_path = tmp_path / "photo.png"
    PIL.Image.fromarray(image).save(img_path)
    out = tmp_path / "mask.png"
    xy = [f"{x},{y}" for y, x in pts]
    result = runner.invoke(app, ["predict", str(img_path), "--model", entry.name, "--device", "cpu",
                                 "-o", str(out), *sum((["-p", p] for p in xy), [])])
    assert result.exit_code == 0, result.output
    assert "converted from dextr 0.1.2" in result.output
    written = np.array(PIL.Image.open(out))
    assert written.shape == mask.shape


def _refuse_download(*args, **kwargs):
    raise AssertionError("tried to download a cached model")


@pytest.mark.parametrize("kind, needle", [
    ("half206", "206 Partial Content with bytes 0-24999 of 50000"),
    ("shortlength", "more than the 25000 bytes its Content-Length announced"),
])
def test_download_url_refuses_a_part_of_the_file(server, tmp_path, kind, needle):
    result = runner.invoke(app, ["download", "--url", server.url(kind, "part.pt"), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and needle in error[0] and "Traceback" not in result.output, result.output
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("part.pt") and p.suffix != ".lock"]


def test_download_url_accepts_a_206_with_the_whole_file(server, tmp_path):
    result = runner.invoke(app, ["download", "--url", server.url("whole206", "all.pt"), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "all.pt").read_bytes() == PAYLOAD


def test_every_mirror_failing_says_where_to_place_the_file_once(server, tmp_path, monkeypatch):
    entry = zoo.get_pretrained("pascal-sbd")
    urls = (server.url("missing", entry.filename), server.url("gone", entry.filename))
    monkeypatch.setitem(zoo._MODELS, entry.name, dataclasses.replace(entry, urls=urls))
    monkeypatch.delenv("DEXTR_MIRROR", raising=False)
    result = runner.invoke(app, ["download", "pascal-sbd", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert text.count("by hand") == 1 and text.count("place") == 1, result.output
    assert f"place it at {tmp_path / entry.filename}" in text and "from every location" in text


@pytest.mark.parametrize("args, suggestion", [
    (["download", "resunet1O1"], "did you mean 'pascalvoc-resunet101'?"),
    (["download", "pascal-sdb"], "did you mean 'pascal-sbd'"),
])
def test_a_misspelt_zoo_name_gets_did_you_mean(args, suggestion):
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and suggestion in result.output and "Traceback" not in result.output


def test_a_misspelt_model_name_in_predict_gets_did_you_mean(tmp_path, synthetic_sample):
    photo = tmp_path / "p.png"
    PIL.Image.fromarray(synthetic_sample[0]).save(photo)
    result = runner.invoke(app, ["predict", str(photo), "-m", "pascalvoc-resunet1O1", "-p", "1,1", "-p", "9,1",
                                 "-p", "5,0", "-p", "5,9"])
    assert result.exit_code == 1, result.output
    assert "did you mean 'pascalvoc-resunet101'?" in " ".join(result.output.split())
