"""``dextr serve`` against Label Studio itself (slow; run with ``-m slow``).

Label Studio lives in its own cached virtual environment, never in dextr's dependencies; the
tests skip where it is absent. Make it once (Python >= 3.10, about 1 GB)::

    python3.11 -m venv ~/.cache/dextr-test-venvs/labelstudio
    ~/.cache/dextr-test-venvs/labelstudio/bin/pip install label-studio

(``$DEXTR_LABELSTUDIO_VENV`` points elsewhere.) The first test checks the brush RLE against the
SDK's decoder and encoder; the second connects ``dextr serve`` to a running Label Studio and
sends four smart keypoints the way the browser does.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from dextr_lib.formats.brush import brush_to_mask, decode_brush, mask_to_brush

pytestmark = pytest.mark.slow

VENV = Path(os.environ.get("DEXTR_LABELSTUDIO_VENV",
                           Path.home() / ".cache" / "dextr-test-venvs" / "labelstudio"))
PYTHON = VENV / "bin" / "python"
TOKEN = "dextr0test0token0000000000000000000000ab"
CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image"><Label value="person" background="#FF0000"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true">
    <Label value="person" smart="true" background="#000000" showInline="true"/>
  </KeyPointLabels>
</View>"""

# One line: `label-studio shell` is an interactive console, where a block needs a blank line.
ENABLE_LEGACY_TOKENS = ("from organizations.models import Organization; "
                        "[setattr(o.jwt, 'legacy_api_tokens_enabled', True) or o.jwt.save() "
                        "for o in Organization.objects.all()]\n")
SDK_ROUND_TRIP = """
import json, sys
import numpy as np
from label_studio_sdk.converter import brush
data = np.load(sys.argv[1])
out = {}
for name in data.files:
    m = data[name]
    ours = json.loads(open(sys.argv[2]).read())[name]
    flat = brush.decode_rle(ours)
    out[name] = {"decoded": flat.reshape(m.shape + (4,))[..., 3].astype(int).ravel().tolist(),
                 "sdk_rle": [int(b) for b in brush.mask2rle((m * 255).astype(np.uint8))]}
print(json.dumps(out))
"""


def _need(module: str) -> None:
    if not PYTHON.exists():
        pytest.skip(f"no Label Studio venv at {VENV} (see this file's docstring)")
    probe = subprocess.run([str(PYTHON), "-c", f"import {module}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{module} is not installed in {VENV}")


def test_brush_rle_matches_label_studio_sdk(tmp_path):
    _need("label_studio_sdk.converter.brush")
    rng = np.random.default_rng(0)
    masks = {"noise": rng.random((37, 53)) > 0.5, "empty": np.zeros((20, 30), bool),
             "full": np.ones((300, 300), bool),  # runs longer than the widest length field
             "disk": np.hypot(*np.mgrid[-60:60, -90:90]) < 50, "one": np.ones((1, 1), bool)}
    np.savez(tmp_path / "masks.npz", **masks)
    (tmp_path / "ours.json").write_text(json.dumps({k: mask_to_brush(m) for k, m in masks.items()}))
    run = subprocess.run([str(PYTHON), "-c", SDK_ROUND_TRIP, str(tmp_path / "masks.npz"),
                          str(tmp_path / "ours.json")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    sdk = json.loads(run.stdout)
    for name, m in masks.items():
        # The SDK decodes ours to the mask (alpha 255 on the object) ...
        assert np.array_equal(np.asarray(sdk[name]["decoded"]).reshape(m.shape) == 255, m), name
        # ... and we decode the SDK's encoding (which also writes literal chunks).
        assert np.array_equal(brush_to_mask(sdk[name]["sdk_rle"], *m.shape), m), name
        assert decode_brush(sdk[name]["sdk_rle"]).size == m.size * 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: the server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(1)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s: {log.read_text()[-3000:]}")


def _api(base: str, method: str, path: str, body=None, *, files=None):
    """Label Studio's REST API with the user token; JSON in and out."""
    headers = {"Authorization": f"Token {TOKEN}"}
    data = None
    if files is not None:
        boundary = "dextrboundary0123456789"
        name, content = files
        data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").encode() + content + \
            f"\r\n--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            text = r.read().decode()
    except urllib.error.HTTPError as e:
        pytest.fail(f"{method} {path}: {e.code} {e.read().decode()[:2000]}")
    return json.loads(text) if text else None


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server this test started (its own process group: Label Studio forks workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_label_studio_gets_dextr_masks_from_four_keypoints(tmp_path, shared_data, tiny_model):
    _need("label_studio")
    photo = shared_data / "pennfudan" / "images" / "FudanPed00001.png"
    if not photo.exists():
        pytest.skip(f"{photo} is absent")
    trained = Path("/tmp/models/jobs/peds/best.pt")
    model_path = trained if trained.exists() else tmp_path / "tiny.pt"
    if not trained.exists():
        tiny_model.save(model_path)
    import dextr_lib

    model = dextr_lib.load_model(model_path)
    ls_port, dextr_port = _free_port(), _free_port()
    ls = f"http://127.0.0.1:{ls_port}"
    env = {**os.environ, "LABEL_STUDIO_USERNAME": "dextr@example.com",
           "LABEL_STUDIO_PASSWORD": "dextr-test-password", "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "ML_BLOCK_LOCAL_IP": "false",
           "SSRF_PROTECTION_ENABLED": "false", "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "ls"),
           "HOST": ls, "DJANGO_DB": "sqlite",
           "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}  # no error reports leave the test
    ls_log, dextr_log = tmp_path / "ls.log", tmp_path / "dextr.log"
    times = {}
    t0 = time.monotonic()
    ls_bin = str(VENV / "bin" / "label-studio")
    data_dir = ["--data-dir", str(tmp_path / "ls")]
    subprocess.run([ls_bin, "init", "dextr", *data_dir], env=env, stdout=ls_log.open("w"),
                   stderr=subprocess.STDOUT, timeout=900, check=True)
    # Label Studio >= 1.20 refuses the legacy token it sends to ML backends at setup unless the
    # organization allows legacy tokens (docs/labelstudio.md: the switch a user turns on).
    shell = subprocess.run([ls_bin, "shell", *data_dir], env=env, input=ENABLE_LEGACY_TOKENS,
                           text=True, capture_output=True, timeout=300, check=True)
    assert "Error" not in shell.stdout + shell.stderr, shell.stdout + shell.stderr
    times["init"] = time.monotonic() - t0
    ls_proc = subprocess.Popen(
        [ls_bin, "start", "dextr", "--no-browser", "--port", str(ls_port),
         "--internal-host", "127.0.0.1", *data_dir],
        env=env, stdout=ls_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    dextr_proc = subprocess.Popen(
        [sys.executable, "-m", "dextr_cli", "serve", "-m", str(model_path), "--port",
         str(dextr_port), "--annotations", str(tmp_path / "ann.json")],
        stdout=dextr_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{dextr_port}/labelstudio/health", 120, dextr_proc, dextr_log)
        _wait_http(f"{ls}/health", 600, ls_proc, ls_log)
        times["start"] = time.monotonic() - t0
        project = _api(ls, "POST", "/api/projects", {"title": "dextr", "label_config": CONFIG})
        pid = project["id"]
        _api(ls, "POST", f"/api/projects/{pid}/import", files=(photo.name, photo.read_bytes()))
        (task,) = _api(ls, "GET", f"/api/tasks?project={pid}")["tasks"]
        t1 = time.monotonic()
        backend = _api(ls, "POST", "/api/ml", {
            "url": f"http://127.0.0.1:{dextr_port}/labelstudio", "project": pid,
            "title": "dextr", "is_interactive": True})
        backend = _api(ls, "GET", f"/api/ml/{backend['id']}")
        assert backend["state"] == "CO", backend  # connected
        times["connect"] = time.monotonic() - t1

        image = np.asarray(PIL.Image.open(photo).convert("RGB"))
        h, w = image.shape[:2]
        pts_yx = np.array([[181, 230], [300, 159], [430, 240], [300, 301]])  # a pedestrian's box
        clicks = [{"id": f"k{i}", "type": "keypointlabels", "from_name": "kp", "to_name": "image",
                   "original_width": w, "original_height": h, "image_rotation": 0,
                   "is_positive": True, "origin": "manual",
                   "value": {"x": (x + 0.5) * 100 / w, "y": (y + 0.5) * 100 / h, "width": 0.5,
                             "keypointlabels": ["person"]}} for i, (y, x) in enumerate(pts_yx)]
        t2 = time.monotonic()
        answer = _api(ls, "POST", f"/api/ml/{backend['id']}/interactive-annotating",
                      {"task": task["id"], "context": {"result": clicks[:3]}})
        times["three_points"] = time.monotonic() - t2
        assert not (answer.get("data") or {}).get("result"), answer
        t3 = time.monotonic()
        answer = _api(ls, "POST", f"/api/ml/{backend['id']}/interactive-annotating",
                      {"task": task["id"], "context": {"result": clicks}})
        times["four_points"] = time.monotonic() - t3
        (region,) = answer["data"]["result"]
        assert region["value"]["brushlabels"] == ["person"]
        got = brush_to_mask(region["value"]["rle"], h, w)
        expected = model.predict([image], [pts_yx], threshold=model.preprocess.threshold)[0]
        np.testing.assert_array_equal(got, expected)
        assert got.any()
    finally:
        _stop(dextr_proc)
        _stop(ls_proc)
        print("Label Studio e2e timings (s):", {k: round(v, 2) for k, v in times.items()})
